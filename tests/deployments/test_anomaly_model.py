"""The anomaly_model job over all products: per-product failure, artifact states, staleness, cancel."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.catalog import service as catalog_service
from app.catalog.model_choices import available_choices
from app.core.jobs import JobContext
from app.core.services import Services
from app.db.base import utcnow
from app.db.tables import DeploymentJob, ModelSetting, PreprocessingSetting
from app.deployments import anomaly_model
from app.ml.anomaly_runtime import ANOMALY, current_models
from app.ml.errors import JobCancelled
from app.ml.registry import ModelRegistry
from tests.conftest import make_settings
from tests.factories import make_products
from tests.ml.synthetic_textures import make_dataset


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _product(client: TestClient, code: str, n_normal: int, n_defect: int = 0, seed: int = 0) -> int:
    state = client.app.state  # type: ignore[attr-defined]
    normals, _defects = make_dataset(seed, n_normal, n_defect, 96, 96)
    with state.session_factory() as session:
        (product_id,) = make_products(session, [(code, f"{code} 제품")])
        catalog_service.upload_images(
            session,
            storage=state.storage,
            settings=state.settings,
            product_id=product_id,
            kind="normal",
            defect_type_id=None,
            files=[(f"n{i}.png", _png(s.image)) for i, s in enumerate(normals)],
            actor_id=None,
        )
        return product_id


def _job(client: TestClient, product_id: int | None) -> JobContext:
    """A job row and the context the runner would hand to the handler (small, fast model settings)."""
    state = client.app.state  # type: ignore[attr-defined]
    params = {"image_size": 96, "coreset_ratio": 0.05}
    with state.session_factory() as session:
        row = DeploymentJob(kind="anomaly_model", product_id=product_id, status="running", params=params)
        session.add(row)
        session.commit()
        job_id = row.id
    return JobContext(
        job_id=job_id,
        kind="anomaly_model",
        product_id=product_id,
        params=params,
        session_factory=state.session_factory,
        services=state.services,
    )


def _finish(client: TestClient, ctx: JobContext, status: str, result: dict[str, object] | None) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(DeploymentJob, ctx.job_id)
        assert row is not None
        row.status, row.result = status, result or {}
        row.finished_at = utcnow()
        session.commit()


def _states(client: TestClient) -> dict[int, anomaly_model.ArtifactState]:
    state = client.app.state  # type: ignore[attr-defined]
    with state.session_factory() as session:
        return {s.product_id: s for s in anomaly_model.states(session, state.services)}  # type: ignore[misc]


def test_all_products_job_builds_good_products_and_reports_the_one_with_too_few_normals(
    client: TestClient,
) -> None:
    good = _product(client, "weave", n_normal=6)
    few = _product(client, "sparse", n_normal=3, seed=1)
    before = _states(client)
    assert before[good].state == "missing"
    assert before[good].reasons == ["anomaly.state.never_built"]
    assert "anomaly.state.too_few_normals" in before[few].reasons

    ctx = _job(client, None)
    result = anomaly_model.run(ctx)
    _finish(client, ctx, "succeeded", result)

    assert result is not None
    assert [b["product_id"] for b in result["built"]] == [good]  # type: ignore[index]
    message = result["failed"][str(few)]  # type: ignore[index]
    assert "sparse" in message
    assert "3" in message
    assert "5" in message
    loaded = client.app.state.models.get(ANOMALY)  # type: ignore[attr-defined]
    assert loaded.get(good) is not None
    assert loaded.get(few) is None
    states = _states(client)
    assert states[good].state == "current"
    assert states[good].detail["evaluation"]["n_normal"] >= 1
    assert states[good].detail["evaluation"]["pixel_auroc"] is None  # no masks for uploaded images
    assert states[few].state == "failed"
    assert states[few].params["error"] == message


def test_single_product_with_too_few_normals_fails_the_job(client: TestClient) -> None:
    few = _product(client, "sparse", n_normal=2)
    with pytest.raises(ValueError, match="sparse"):
        anomaly_model.run(_job(client, few))


def test_changes_after_the_build_make_the_model_stale(client: TestClient) -> None:
    pid = _product(client, "weave", n_normal=6)
    ctx = _job(client, pid)
    _finish(client, ctx, "succeeded", anomaly_model.run(ctx))
    assert _states(client)[pid].state == "current"

    state = client.app.state  # type: ignore[attr-defined]
    extra, _ = make_dataset(7, 1, 0, 96, 96)
    with state.session_factory() as session:
        catalog_service.upload_images(
            session,
            storage=state.storage,
            settings=state.settings,
            product_id=pid,
            kind="normal",
            defect_type_id=None,
            files=[("extra.png", _png(extra[0].image))],
            actor_id=None,
        )
        session.merge(PreprocessingSetting(product_id=pid, smooth=True))
        settings_row = catalog_service.get_model_settings(session)
        settings_row.anomaly_backbone = "resnet18"
        session.commit()
    stale = _states(client)[pid]
    assert stale.state == "stale"
    assert set(stale.reasons) == {
        "anomaly.state.normals_changed",
        "anomaly.state.preprocessing_changed",
        "anomaly.state.backbone_changed",
    }
    with state.session_factory() as session:
        session.get(ModelSetting, 1).anomaly_backbone = "efficientnet-lite0"  # type: ignore[union-attr]
        session.commit()


def test_cancelled_job_keeps_the_live_model_and_writes_nothing(client: TestClient) -> None:
    pid = _product(client, "weave", n_normal=6)
    ctx = _job(client, pid)
    ctx._cancelled = True  # an admin pressed cancel before the first checkpoint
    with pytest.raises(JobCancelled):
        anomaly_model.run(ctx)
    assert client.app.state.models.get(ANOMALY) is None  # type: ignore[attr-defined]
    folder = client.app.state.settings.artifacts_path  # type: ignore[attr-defined]
    assert not folder.exists() or not any(folder.rglob("*.safetensors"))
    assert not list(client.app.state.storage.list("artifacts/"))  # type: ignore[attr-defined]


def test_backbone_choices_are_offered_to_the_model_settings_api(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    choices = available_choices(client.app.state.settings)  # type: ignore[attr-defined]
    assert "efficientnet-lite0" in choices["anomaly_backbone"]
    refused = client.put(
        "/api/v1/settings/models", json={"anomaly_backbone": "wide-resnet50-2"}, headers=admin_headers
    )
    assert refused.status_code == 400  # no local weights for it on this server
    accepted = client.put(
        "/api/v1/settings/models", json={"anomaly_backbone": "efficientnet-lite0"}, headers=admin_headers
    )
    assert accepted.status_code == 200, accepted.text
    assert {"efficientnet-lite1", "efficientnet-lite2", "auto"} <= choices["anomaly_backbone"]
    auto = client.put("/api/v1/settings/models", json={"anomaly_backbone": "auto"}, headers=admin_headers)
    assert auto.status_code == 200, auto.text
    assert client.get("/api/v1/settings/models", headers=admin_headers).json()["anomaly_backbone"] == "auto"


def _product_with_defects(client: TestClient, code: str, n_normal: int, n_defect: int) -> int:
    """A product with normal images and defect images of two types (holes and scratches alternate)."""
    from app.catalog.schemas import DefectTypeCreate

    state = client.app.state  # type: ignore[attr-defined]
    normals, defects = make_dataset(3, n_normal, n_defect, 96, 160)  # wider than tall: aspect kept
    with state.session_factory() as session:
        (product_id,) = make_products(session, [(code, f"{code} 제품")])
        types = {
            kind: catalog_service.create_defect_type(
                session,
                product_id=product_id,
                defect_in=DefectTypeCreate(code=kind, name=name),
                actor_id=None,
            ).id
            for kind, name in (("hole", "구멍"), ("scratch", "긁힘"))
        }
        session.commit()
        catalog_service.upload_images(
            session,
            storage=state.storage,
            settings=state.settings,
            product_id=product_id,
            kind="normal",
            defect_type_id=None,
            files=[(f"n{i}.png", _png(s.image)) for i, s in enumerate(normals)],
            actor_id=None,
        )
        for kind, type_id in types.items():
            catalog_service.upload_images(
                session,
                storage=state.storage,
                settings=state.settings,
                product_id=product_id,
                kind="defect",
                defect_type_id=type_id,
                files=[(f"d{i}.png", _png(s.image)) for i, s in enumerate(defects) if s.kind == kind],
                actor_id=None,
            )
        return product_id


def test_auto_backbone_build_records_tiling_choice_and_cross_validated_evaluation(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import ADMIN_PASSWORD
    from tests.deployments.test_pages import login_page

    pid = _product_with_defects(client, "weave", n_normal=10, n_defect=6)
    state = client.app.state  # type: ignore[attr-defined]
    # A product this small is below the default minimum validation size: allow the search here.
    monkeypatch.setattr(state.services.settings, "anomaly_backbone_min_validation", 3)
    monkeypatch.setattr(state.services.settings, "anomaly_backbone_margin", 0.0)
    monkeypatch.setattr(state.services.settings, "anomaly_backbone_min_z", 0.0)
    with state.session_factory() as session:
        settings_row = catalog_service.get_model_settings(session)
        settings_row.anomaly_backbone = "auto"
        session.commit()
    ctx = _job(client, pid)
    _finish(client, ctx, "succeeded", anomaly_model.run(ctx))

    detail = _states(client)[pid].detail
    assert _states(client)[pid].state == "current"  # "auto" is what was asked for: not stale
    assert detail["backbone"] == "auto"
    choice = detail["backbone_choice"]
    # margin 0: the best validation AUROC wins, a tie keeps the default
    assert choice["reason"] in ("validation_margin", "default_within_margin")
    assert (choice["params"]["normals"], choice["params"]["defects"]) == (3, 6)
    assert set(choice["scores"]) >= {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    assert detail["engine_backbone"] == choice["backbone"].replace("_", "-")
    tiling = detail["tiling"]
    assert tiling["keeps_aspect"]
    assert not tiling["grayscale"]  # the weave is coloured
    assert tiling["work_width"] > tiling["work_height"]  # 160 x 96 photos stay wider than tall
    evaluation = detail["evaluation"]
    assert evaluation["protocol"] == "cross_validated"
    assert evaluation["n_defect"] == 6
    assert set(evaluation["per_type"]) == {"구멍", "긁힘"}
    assert evaluation["roc"][0] == [0.0, 0.0]
    assert evaluation["roc"][-1] == [1.0, 1.0]
    model = state.models.get(ANOMALY).get(pid)
    assert model.config.backbone == choice["backbone"]
    assert model.detect(Image.new("RGB", (300, 90), (128, 110, 90))).anomaly_map.shape == (90, 300)

    login_page(client, "admin1", ADMIN_PASSWORD)
    page = client.get("/admin/deploy/anomaly?lang=en")
    assert page.status_code == 200
    assert 'data-curve="roc"' in page.text
    assert 'data-curve="pr"' in page.text
    assert "cross-validation" in page.text
    assert "data-confusion" in page.text
    assert "on the validation images (3 normal, 6 defect)" in page.text
    assert f"{tiling['work_width']} x {tiling['work_height']} px" in page.text
    korean = client.get("/admin/deploy/anomaly?lang=ko")
    assert "교차검증" in korean.text
    assert "긁힘" in korean.text


def test_auto_backbone_keeps_the_default_without_enough_validation_images_and_says_why(
    client: TestClient,
) -> None:
    from tests.conftest import ADMIN_PASSWORD
    from tests.deployments.test_pages import login_page

    pid = _product_with_defects(client, "twill", n_normal=10, n_defect=6)
    state = client.app.state  # type: ignore[attr-defined]
    with state.session_factory() as session:
        catalog_service.get_model_settings(session).anomaly_backbone = "auto"
        session.commit()
    ctx = _job(client, pid)
    _finish(client, ctx, "succeeded", anomaly_model.run(ctx))

    detail = _states(client)[pid].detail
    choice = detail["backbone_choice"]
    assert (choice["backbone"], choice["reason"], choice["scores"]) == (
        "efficientnet_lite0",
        "default_small_validation",
        {},  # no candidate was fitted: the search would have been a coin toss
    )
    assert detail["engine_backbone"] == "efficientnet-lite0"
    assert not detail["evaluation"]["backbone_selected_here"]
    # 160 x 96 photos of a 64 px test tile: several tiles, and a bank of one tile's size
    tiling = detail["tiling"]
    tiles = tiling["tile_cols"] * tiling["tile_rows"]
    assert tiles > 1
    assert tiling["bank_per_tile"]
    login_page(client, "admin1", ADMIN_PASSWORD)
    page = client.get("/admin/deploy/anomaly?lang=en")
    assert "with 3 normal and 6 defect validation images (fewer than 10 each)" in page.text
    assert f"/ {tiles} tiles" in page.text
    korean = client.get("/admin/deploy/anomaly?lang=ko")
    assert "정상 3장, 불량 6장" in korean.text


def test_normal_only_product_states_its_threshold_rule_on_the_deploy_screen(client: TestClient) -> None:
    from tests.conftest import ADMIN_PASSWORD
    from tests.deployments.test_pages import login_page

    pid = _product(client, "plain", n_normal=6)
    ctx = _job(client, pid)
    _finish(client, ctx, "succeeded", anomaly_model.run(ctx))
    evaluation = _states(client)[pid].detail["evaluation"]
    assert evaluation["threshold_rule"] == "normal_max"
    assert evaluation["recall"] is None
    login_page(client, "admin1", ADMIN_PASSWORD)
    page = client.get("/admin/deploy/anomaly?lang=en")
    assert "with probability at most" in page.text
    assert "No curves" in page.text


def test_another_server_loads_the_stored_version_into_its_own_cache_and_refuses_a_tampered_one(
    client: TestClient, tmp_path: Path
) -> None:
    state = client.app.state  # type: ignore[attr-defined]
    pid = _product(client, "stored", n_normal=6)
    ctx = _job(client, pid)
    _finish(client, ctx, "succeeded", anomaly_model.run(ctx))
    with state.session_factory() as session:
        artifact = anomaly_model.current_artifacts(session, anomaly_model.KIND)[pid]
        session.expunge(artifact)
    assert artifact.path == f"artifacts/anomaly_model/product-{pid}/{artifact.version}"
    # Another server: same database and storage, its own (empty) models folder.
    other_settings = make_settings(
        tmp_path / "other",
        database_url=state.settings.database_url,
        local_storage_dir=state.settings.local_storage_path,
    )
    other = Services(
        settings=other_settings,
        storage=state.storage,
        models=ModelRegistry(other_settings.models_path),
        session_factory=state.session_factory,
        metrics=state.metrics,
    )
    anomaly_model.load(other)
    loaded = current_models(other.models).get(pid)
    assert loaded is not None
    assert loaded.bank_size == current_models(state.models).get(pid).bank_size  # type: ignore[union-attr]
    assert (
        other_settings.artifacts_path / "cache" / artifact.path / ".verified"
    ).read_text() == artifact.checksum
    # A third server whose copy of the bank in the storage was altered loads nothing and says why.
    state.storage.put(f"{artifact.path}/memory_bank.safetensors", b"garbage", "application/octet-stream")
    third_settings = make_settings(
        tmp_path / "third",
        database_url=state.settings.database_url,
        local_storage_dir=state.settings.local_storage_path,
    )
    third = Services(
        settings=third_settings,
        storage=state.storage,
        models=ModelRegistry(third_settings.models_path),
        session_factory=state.session_factory,
        metrics=state.metrics,
    )
    anomaly_model.load(third)
    assert current_models(third.models).get(pid) is None
    assert "checksum" in third.models.status()["errors"]["anomaly"]


def test_build_checks_the_inference_runtimes_and_the_deploy_screen_shows_the_choice(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from app.ml import inference_runtime
    from tests.conftest import ADMIN_PASSWORD
    from tests.deployments.test_pages import login_page

    pid = _product_with_defects(client, "runtime", n_normal=8, n_defect=4)
    state = client.app.state  # type: ignore[attr-defined]
    caplog.set_level(logging.INFO, logger="app.core.jobs")
    ctx = _job(client, pid)
    _finish(client, ctx, "succeeded", anomaly_model.run(ctx))
    runtime = _states(client)[pid].detail["runtime"]
    assert runtime["requested"] == "auto"
    assert {c["runtime"]: c["passed"] for c in runtime["checks"]} == {"onnx": True, "openvino": True}
    assert all(c["max_score_rel"] <= 1e-4 and c["max_map_rel"] <= 1e-4 for c in runtime["checks"])
    assert runtime["reason"] is None
    # auto runs the fastest that passed (PyTorch too, if it happened to be the fastest on this machine).
    built = current_models(state.models).get(pid)
    assert built is not None
    assert built.runtime.split()[0] == runtime["runtime"]
    state.models.swap(ANOMALY, None)
    anomaly_model.load(state.services)  # a restart loads the stored network
    reloaded = current_models(state.models).get(pid)
    assert reloaded is not None
    assert reloaded.runtime.split()[0] == runtime["runtime"]
    assert "inference runtime" in caplog.text or "추론 런타임" in caplog.text
    login_page(client, "admin1", ADMIN_PASSWORD)
    page = client.get("/admin/deploy/anomaly?lang=en")
    assert "Inference runtime" in page.text
    assert 'data-runtime-check="onnx-fp32"' in page.text
    assert "within 1e-4 relative" in page.text

    # The real runtimes differ from PyTorch by ~1e-6: a tolerance of 1e-12 makes them fail the check.
    monkeypatch.setattr(inference_runtime, "PARITY_RTOL", 1e-12)
    monkeypatch.setattr(state.services.settings, "inference_runtime", "onnx")
    caplog.clear()
    ctx = _job(client, pid)
    _finish(client, ctx, "succeeded", anomaly_model.run(ctx))
    runtime = _states(client)[pid].detail["runtime"]
    assert (runtime["requested"], runtime["runtime"], runtime["reason"]) == (
        "onnx",
        "torch",
        "runtime.refused.parity",
    )
    refused = current_models(state.models).get(pid)
    assert refused is not None
    assert refused.runtime == "torch"
    assert "onnx fp32" in caplog.text
    assert "PyTorch" in caplog.text
    page = client.get("/admin/deploy/anomaly?lang=en")
    assert 'data-runtime="torch"' in page.text
    assert "onnx fp32 was refused" in page.text
    assert "거부" in client.get("/admin/deploy/anomaly?lang=ko").text
