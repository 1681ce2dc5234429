"""POST /api/v1/inspections/{id}/anomaly against a model built by the real job, and loading on restart."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from app.db.tables import Artifact, Inspection, ReferenceImage
from app.main import create_app
from app.ml.anomaly_runtime import ANOMALY
from app.ml.patchcore import PatchCore
from tests.conftest import WORKER_PASSWORD, bearer, png_bytes
from tests.inspection.anomaly.conftest import AnomalyEnv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def demo_file(env: AnomalyEnv, rel: str) -> bytes:
    return (env.settings.data_path / "demo" / "seed-0" / rel).read_bytes()


def holdout(env: AnomalyEnv, code: str, kind: str) -> list[dict[str, object]]:
    manifest = json.loads((env.settings.data_path / "demo" / "seed-0" / "manifest.json").read_text())
    product = next(p for p in manifest["products"] if p["code"] == code)
    key = "normal_images" if kind == "normal" else "defect_images"
    return [e for e in product[key] if e["holdout"]]


def upload(env: AnomalyEnv, data: bytes, product_id: int | None = None, name: str = "photo.png") -> int:
    form = {"product_id": str(product_id)} if product_id is not None else {}
    response = env.client.post(
        "/api/v1/inspections", files={"file": (name, data, "image/png")}, data=form, headers=env.worker
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def check(env: AnomalyEnv, inspection_id: int, **body: object) -> tuple[int, dict[str, object]]:
    response = env.client.post(f"/api/v1/inspections/{inspection_id}/anomaly", json=body, headers=env.worker)
    return response.status_code, response.json()


def image_ids(env: AnomalyEnv, product_id: int, kind: str) -> list[int]:
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        return list(
            session.scalars(
                select(ReferenceImage.id).where(
                    ReferenceImage.product_id == product_id, ReferenceImage.kind == kind
                )
            )
        )


def test_defect_photo_is_flagged_with_every_picture_fetchable(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    plate = env.products["metal_plate"]
    defect = holdout(env, "metal_plate", "defect")[0]
    inspection_id = upload(env, demo_file(env, str(defect["path"])), plate)
    status, result = check(env, inspection_id)
    assert status == 200, result
    assert result["product_id"] == plate
    assert result["is_anomaly"] is (result["score"] > result["threshold"])
    for key in ("heatmap_url", "mask_url", "overlay_url", "comparison_url"):
        picture = env.client.get(str(result[key]), headers=env.worker)
        assert picture.status_code == 200, key
        assert picture.headers["content-type"] == "image/png"
        assert picture.content.startswith(PNG_SIGNATURE)
    comparison = Image.open(
        io.BytesIO(env.client.get(str(result["comparison_url"]), headers=env.worker).content)
    )
    assert comparison.width > comparison.height  # reference | inspected, side by side
    reference = result["reference_image"]
    assert isinstance(reference, dict)
    assert reference["id"] in image_ids(env, plate, "normal")
    assert env.client.get(str(reference["image_url"]), headers=env.worker).status_code == 200
    # the inspection record carries the result for the history and the next step
    record = env.client.get(f"/api/v1/inspections/{inspection_id}", headers=env.worker).json()
    assert record["status"] == "anomaly_checked"
    assert record["anomaly_score"] == pytest.approx(result["score"])
    assert record["is_anomaly"] == result["is_anomaly"]
    assert record["anomaly"]["comparison_url"] == result["comparison_url"]
    assert record["timings_ms"]["anomaly"] > 0


def test_defects_score_above_normals_and_regions_cover_the_defect(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    plate = env.products["metal_plate"]
    normal_flags = []
    for entry in holdout(env, "metal_plate", "normal"):
        status, result = check(env, upload(env, demo_file(env, str(entry["path"])), plate))
        assert status == 200
        normal_flags.append((result["score"], result["threshold"]))
    results = []
    for entry in holdout(env, "metal_plate", "defect"):
        status, result = check(env, upload(env, demo_file(env, str(entry["path"])), plate))
        assert status == 200
        results.append((float(result["score"]), entry, result))  # type: ignore[arg-type]
    assert any(r["is_anomaly"] for _, _, r in results)
    # the clearest defect's boxes (in photo pixels) overlap its ground-truth box
    _, entry, result = max(results, key=lambda item: item[0])
    x0, y0, x1, y1 = entry["bbox"]  # type: ignore[misc]
    boxes = result["regions"]
    assert isinstance(boxes, list)
    assert boxes
    assert any(
        b["x"] < x1 and b["x"] + b["width"] > x0 and b["y"] < y1 and b["y"] + b["height"] > y0 for b in boxes
    )
    assert sum(score > threshold for score, threshold in normal_flags) <= 1  # at most one false alarm


def test_without_product_the_uploaded_product_is_used_and_none_is_422(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    photo = demo_file(env, str(holdout(env, "metal_plate", "normal")[0]["path"]))
    status, result = check(env, upload(env, photo, env.products["metal_plate"]), product_id=None)
    assert status == 200
    assert result["product_id"] == env.products["metal_plate"]
    status, result = check(env, upload(env, photo))
    assert status == 422
    assert "제품을 선택" in str(result["detail"])


def test_product_without_a_model_is_409_naming_the_deployment(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    photo = demo_file(env, str(holdout(env, "fabric", "normal")[0]["path"]))
    inspection_id = upload(env, photo)
    status, result = check(env, inspection_id, product_id=env.products["fabric"])
    assert status == 409
    assert "anomaly_model" in str(result["detail"])
    record = env.client.get(f"/api/v1/inspections/{inspection_id}", headers=env.worker).json()
    assert record["anomaly"] is None
    assert record["status"] == "uploaded"


def test_wrong_ids_are_404_and_foreign_reference_is_422(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    plate = env.products["metal_plate"]
    photo = demo_file(env, str(holdout(env, "metal_plate", "normal")[0]["path"]))
    inspection_id = upload(env, photo, plate)
    assert check(env, 999_999, product_id=plate)[0] == 404
    assert check(env, inspection_id, product_id=999_999)[0] == 404
    assert check(env, inspection_id, reference_image_id=999_999)[0] == 404
    fabric_normal = image_ids(env, env.products["fabric"], "normal")[0]
    status, result = check(env, inspection_id, reference_image_id=fabric_normal)
    assert status == 422
    assert str(fabric_normal) in str(result["detail"])
    plate_defect = image_ids(env, plate, "defect")[0]
    assert check(env, inspection_id, reference_image_id=plate_defect)[0] == 422


def test_chosen_reference_image_is_used(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    plate = env.products["metal_plate"]
    chosen = image_ids(env, plate, "normal")[-1]
    photo = demo_file(env, str(holdout(env, "metal_plate", "defect")[0]["path"]))
    status, result = check(env, upload(env, photo, plate), reference_image_id=chosen)
    assert status == 200
    assert result["reference_image"] == {"id": chosen, "image_url": f"/api/v1/images/{chosen}/file"}


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_odd_sized_photos_are_checked(anomaly_env: AnomalyEnv, mode: str) -> None:
    env = anomaly_env
    entry = holdout(env, "metal_plate", "defect")[0]
    original = Image.open(io.BytesIO(demo_file(env, str(entry["path"]))))
    odd = original.convert(mode).resize((301, 173))
    buffer = io.BytesIO()
    odd.save(buffer, format="PNG")
    status, result = check(env, upload(env, buffer.getvalue(), env.products["metal_plate"]))
    assert status == 200, result
    assert (result["image_width"], result["image_height"]) == (301, 173)
    for box in result["regions"]:  # type: ignore[union-attr]
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 301
        assert box["y"] >= 0
        assert box["y"] + box["height"] <= 173
    mask = env.client.get(str(result["mask_url"]), headers=env.worker)
    assert Image.open(io.BytesIO(mask.content)).size == (301, 173)


def test_tiny_flat_photo_gives_an_answer_not_a_500(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    status, _ = check(env, upload(env, png_bytes((40, 600))), product_id=env.products["metal_plate"])
    assert status == 200


def test_artifact_meta_reports_calibration_and_evaluation(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        art = session.scalar(select(Artifact).where(Artifact.kind == "anomaly_model", Artifact.is_current))
        assert art is not None
        meta = art.meta
    assert {"calibration", "evaluation", "backbone", "bank_size", "n_train"} <= set(meta)
    evaluation = meta["evaluation"]
    assert set(evaluation) >= {
        "image_auroc",
        "pixel_auroc",
        "f1",
        "threshold",
        "confusion",
        "n_normal",
        "n_defect",
        "protocol",
        "roc",
        "pr",
        "per_type",
    }
    assert evaluation["protocol"] == "cross_validated"
    assert set(evaluation["confusion"]) == {"tp", "fp", "tn", "fn"}
    assert evaluation["n_defect"] >= 1
    assert evaluation["pixel_auroc"] is not None
    assert 0.5 < evaluation["pixel_auroc"] <= 1.0
    assert meta["calibration"]["method"] == "youden"
    assert meta["backbone"] == "efficientnet-lite0"
    assert meta["n_train"] >= 5
    assert meta["bank_size"] > 0
    stored = {k.rsplit("/", 1)[-1] for k in env.client.app.state.storage.list(art.path + "/")}  # type: ignore[attr-defined]
    assert stored == {"memory_bank.safetensors", "patchcore.json", "manifest.json"}
    assert art.path == f"artifacts/anomaly_model/product-{art.product_id}/{art.version}"


def test_restart_loads_the_model_without_training(
    anomaly_env: AnomalyEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = anomaly_env

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("startup must not train")

    monkeypatch.setattr(PatchCore, "fit", classmethod(no_training))
    restarted_settings = env.settings.model_copy(update={"load_models": True})
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        artifacts_before = session.scalar(select(func.count()).select_from(Artifact))
    with TestClient(create_app(restarted_settings)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        assert state.models.get(ANOMALY).get(env.products["metal_plate"]) is not None
        assert "anomaly" not in state.models.status()["errors"]
        headers = bearer(client, "worker1", WORKER_PASSWORD)
        photo = demo_file(env, str(holdout(env, "metal_plate", "defect")[0]["path"]))
        created = client.post(
            "/api/v1/inspections",
            files={"file": ("p.png", photo, "image/png")},
            data={"product_id": str(env.products["metal_plate"])},
            headers=headers,
        )
        response = client.post(
            f"/api/v1/inspections/{created.json()['id']}/anomaly", json={}, headers=headers
        )
        assert response.status_code == 200
        with state.session_factory() as session:
            assert session.scalar(select(func.count()).select_from(Artifact)) == artifacts_before


def test_rebuild_swaps_into_the_running_server(anomaly_env: AnomalyEnv) -> None:
    from tests.inspection.anomaly.conftest import run_job

    env = anomaly_env
    registry = env.client.app.state.models  # type: ignore[attr-defined]
    before = registry.get(ANOMALY)
    old_model = before.get(env.products["metal_plate"])
    job = run_job(env.client, env.admin, env.products["metal_plate"])
    assert job.status == "succeeded", job.error
    after = registry.get(ANOMALY)
    assert after is not before
    assert before.get(env.products["metal_plate"]) is old_model  # the old set was not mutated
    assert after.get(env.products["metal_plate"]) is not old_model
    # the version just replaced stays (a server may still be fetching it); older ones are deleted
    prefix = f"artifacts/anomaly_model/product-{env.products['metal_plate']}/"
    versions = {k[len(prefix) :].split("/")[0] for k in env.client.app.state.storage.list(prefix)}  # type: ignore[attr-defined]
    assert job.result["built"][0]["version"] in versions
    assert len(versions) <= 2
    photo = demo_file(env, str(holdout(env, "metal_plate", "normal")[0]["path"]))
    assert check(env, upload(env, photo, env.products["metal_plate"]))[0] == 200


def test_page_offers_products_reference_images_and_the_guidance_step(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    plate = env.products["metal_plate"]
    photo = demo_file(env, str(holdout(env, "metal_plate", "defect")[0]["path"]))
    inspection_id = upload(env, photo, plate)
    page = env.client.get(f"/inspect/{inspection_id}/anomaly", headers=env.worker)
    assert page.status_code == 200
    html = page.text
    assert "이상 탐지" in html
    assert f'data-product-id="{plate}"' in html
    for image_id in image_ids(env, plate, "normal"):
        assert f'data-reference-id="{image_id}"' in html
    assert f"/inspect/{inspection_id}/guidance?generator=extractive" in html
    assert "/static/js/anomaly.js" in html
    fabric = env.client.get(
        f"/inspect/{inspection_id}/anomaly?product_id={env.products['fabric']}", headers=env.worker
    )
    assert f'data-product-id="{env.products["fabric"]}"' in fabric.text
    assert env.client.get("/inspect/999999/anomaly", headers=env.worker).status_code == 404


def test_pictures_are_drawn_when_looked_at_and_a_recheck_never_shows_old_ones(
    anomaly_env: AnomalyEnv,
) -> None:
    env = anomaly_env
    plate = env.products["metal_plate"]
    defect = holdout(env, "metal_plate", "defect")[0]
    inspection_id = upload(env, demo_file(env, str(defect["path"])), plate)
    storage = env.client.app.state.storage  # type: ignore[attr-defined]
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        assert row is not None
        folder = row.image_key.rsplit("/", 1)[0] + "/"

    def stored_pngs() -> set[str]:
        names = {k.rsplit("/", 1)[-1] for k in storage.list(folder) if k.endswith(".png")}
        return names - {"original.png"}

    status, first = check(env, inspection_id)
    assert status == 200, first
    assert stored_pngs() == set()  # the check drew nothing; only the map is kept
    overlay = env.client.get(str(first["overlay_url"]), headers=env.worker)
    assert overlay.status_code == 200
    assert overlay.content.startswith(PNG_SIGNATURE)
    assert len(stored_pngs()) == 1  # drawn once, then cached
    assert env.client.get(str(first["overlay_url"]), headers=env.worker).content == overlay.content
    korean = env.client.get(str(first["comparison_url"]), headers=env.worker).content
    english = env.client.get(str(first["comparison_url"]) + "?lang=en", headers=env.worker).content
    assert korean != english  # the labels follow the viewer's language

    normals = image_ids(env, plate, "normal")
    status, second = check(env, inspection_id, reference_image_id=normals[-1])
    assert status == 200, second
    assert second["overlay_url"] == first["overlay_url"]  # the contract's URLs do not change
    assert stored_pngs() == set()  # the first check's cached pictures are gone
    redrawn = env.client.get(str(second["comparison_url"]), headers=env.worker).content
    assert redrawn != korean  # drawn with the newly chosen reference image
