"""Several views per inspection, end to end on real engines: a memory bank per view, the product's bank as the
fallback, each view searched and checked, the answers combined by the product's rule (real EfficientNet-Lite0,
PatchCore, SQLite and local storage; the banks are built by the real `anomaly_model` job)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sqlalchemy import select

from app.cli import run_migrations
from app.db.tables import Artifact, Product
from app.demo.generator import generate_demo_dataset
from app.demo.loader import register_dataset
from app.deployments import anomaly_model
from app.main import create_app
from app.ml.anomaly_runtime import current_models
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, seed_users
from tests.integrations.test_sinks import Receiver

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Env:
    client: TestClient
    admin: dict[str, str]
    worker: dict[str, str]
    products: dict[str, int]
    root: Path
    manifest: dict[str, Any]
    job: dict[str, Any]


def _deploy(client: TestClient, admin: dict[str, str], kind: str, product_id: int | None) -> dict[str, Any]:
    response = client.post(
        "/api/v1/deployments", json={"kind": kind, "product_id": product_id}, headers=admin
    )
    assert response.status_code == 202, response.text
    assert client.app.state.runner.wait_idle(600)  # type: ignore[attr-defined]
    job: dict[str, Any] = client.get(f"/api/v1/deployments/{response.json()['id']}", headers=admin).json()
    assert job["status"] == "succeeded", job
    return job


def _entries(manifest: dict[str, Any], code: str, key: str, *, holdout: bool) -> list[dict[str, Any]]:
    product = next(p for p in manifest["products"] if p["code"] == code)
    return [e for e in product[key] if bool(e.get("holdout")) == holdout]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """metal_plate photographed from the top (its usual normals, no view label) and from the side (photos that
    look like the demo fabric, registered as metal_plate normals of view `side`); search gallery built."""
    tmp = tmp_path_factory.mktemp("views")
    settings = make_settings(tmp, sink_poll_s=0.2, sink_max_attempts=2)
    run_migrations(settings)
    root = settings.data_path / "demo" / "seed-0"
    generate_demo_dataset(root, seed=0, size=128, normals_per_product=8, defects_per_type=2)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        state = client.app.state  # type: ignore[attr-defined]
        with state.session_factory() as session:
            register_dataset(session, storage=state.storage, settings=settings, root=root)
            products = {p.code: p.id for p in session.scalars(select(Product))}
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        assert state.runner.wait_idle(600)
        side = [
            ("files", (f"side_{i}.png", (root / e["path"]).read_bytes(), "image/png"))
            for i, e in enumerate(_entries(manifest, "fabric", "normal_images", holdout=False))
        ]
        uploaded = client.post(
            f"/api/v1/products/{products['metal_plate']}/images",
            headers=admin,
            files=side,
            data={"kind": "normal", "view": "side"},
        )
        assert uploaded.status_code == 201, uploaded.text
        assert {c["view"] for c in uploaded.json()["created"]} == {"side"}
        _deploy(client, admin, "search_index", None)
        job = _deploy(client, admin, "anomaly_model", products["metal_plate"])
        yield Env(client, admin, bearer(client, "worker1", WORKER_PASSWORD), products, root, manifest, job)


def _analyze(env: Env, views: list[tuple[str, bytes]], product: str = "metal_plate") -> dict[str, Any]:
    response = env.client.post(
        "/api/v1/analyze",
        headers=env.worker,
        files=[("files", (f"{label}.png", data, "image/png")) for label, data in views],
        data={"views": [label for label, _ in views], "product_id": str(env.products[product])},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _plate_defect(env: Env) -> bytes:
    entry = _entries(env.manifest, "metal_plate", "defect_images", holdout=True)[0]
    return (env.root / entry["path"]).read_bytes()


def _side_normal(env: Env) -> bytes:
    """A side photo known to be normal: one of the side bank's own images (a held-out one of this tiny
    6-image demo bank can land just over its threshold, which would test the demo data, not the wiring)."""
    entry = _entries(env.manifest, "fabric", "normal_images", holdout=False)[0]
    return (env.root / entry["path"]).read_bytes()


def test_the_build_makes_a_bank_for_the_view_with_normals_and_keeps_the_product_bank(env: Env) -> None:
    built = env.job["result"]["built"][0] if "result" in env.job else None
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        rows = {
            (a.kind, (a.meta or {}).get("view")): a
            for a in session.scalars(select(Artifact).where(Artifact.is_current.is_(True)))
            if a.product_id == env.products["metal_plate"]
        }
    assert (anomaly_model.KIND, None) in rows
    assert (anomaly_model.VIEW_KIND, "side") in rows
    # the product bank holds the unlabelled normals; the side bank only the side photos
    assert rows[(anomaly_model.KIND, None)].meta["normals_scope"] == "unlabelled"
    assert rows[(anomaly_model.VIEW_KIND, "side")].meta["normals_scope"] == "view"
    assert rows[(anomaly_model.VIEW_KIND, "side")].meta["n_normals"] == len(
        _entries(env.manifest, "fabric", "normal_images", holdout=False)
    )
    if built is not None:
        assert "side" in built["views"]


def test_views_are_checked_each_and_combined_by_the_product_rule(env: Env) -> None:
    body = _analyze(env, [("top", _plate_defect(env)), ("side", _side_normal(env))])
    assert body["errors"].get("anomaly") is None, body["errors"]
    views = {v["view"]: v for v in body["views"]}
    assert list(views) == ["top", "side"]
    # top has no bank of its own: the product's bank checks it, and the answer says so
    assert views["top"]["bank"] == "product"
    assert views["top"]["anomaly"]["is_fallback"] is True
    assert views["side"]["bank"] == "view"
    assert views["side"]["anomaly"]["is_fallback"] is False
    assert views["top"]["is_anomaly"] is True
    assert views["side"]["is_anomaly"] is False
    # each view was searched on its own
    assert views["top"]["verdict"] is not None
    assert views["side"]["verdict"] is not None
    # rule "any" (the default): the top view decides, and its strongest region is named
    anomaly = body["anomaly"]
    combination = anomaly["combination"]
    assert combination["rule"] == "any"
    assert combination["is_anomaly"] is True
    assert combination["deciding_view"] == "top"
    assert combination["anomalous_views"] == ["top"]
    assert combination["deciding_region"] is not None
    assert anomaly["is_anomaly"] is True
    assert anomaly["view"] == "top"
    record = body["inspection"]
    assert record["is_anomaly"] is True
    # not normal: a defect, of a named type when identification is sure, else "unknown"
    assert record["outcome"]["label"] in ("defect", "unknown")
    assert record["outcome"]["basis"]["views"]["deciding_view"] == "top"
    # the pictures of each view are drawn from that view's photo and map
    for label in ("top", "side"):
        picture = env.client.get(views[label]["anomaly"]["overlay_url"], headers=env.worker)
        assert picture.status_code == 200, picture.text
        assert picture.content.startswith(PNG_SIGNATURE)
    assert anomaly["overlay_url"].endswith("/views/top/files/overlay.png")


def test_the_bank_of_the_view_is_what_makes_a_side_photo_normal(env: Env) -> None:
    # The same side photo labelled "top" (no bank of its own) is checked by the product's bank of top
    # photos, which has never seen a side: it is anomalous there, normal under the side bank.
    body = _analyze(env, [("side", _side_normal(env)), ("top", _side_normal(env))])
    views = {v["view"]: v for v in body["views"]}
    assert (views["side"]["bank"], views["side"]["is_anomaly"]) == ("view", False)
    assert (views["top"]["bank"], views["top"]["is_anomaly"]) == ("product", True)


def test_the_defect_type_is_read_from_the_view_that_decided(env: Env) -> None:
    # the normal side photo comes first: the inspection's own search answer is the side view's, but the
    # outcome identifies the defect from the top view, which decided
    body = _analyze(env, [("side", _side_normal(env)), ("top", _plate_defect(env))])
    views = {v["view"]: v for v in body["views"]}
    basis = body["inspection"]["outcome"]["basis"]
    assert basis["views"]["deciding_view"] == "top"
    assert basis["identification"]["score"] == pytest.approx(views["top"]["verdict"]["score"])
    assert body["search"]["verdict"]["score"] == pytest.approx(views["side"]["verdict"]["score"])


def test_an_admin_changes_the_rule_and_the_same_photos_answer_differently(env: Env) -> None:
    body = _analyze(env, [("top", _plate_defect(env)), ("side", _side_normal(env))])
    inspection_id = body["inspection"]["id"]
    plate = env.products["metal_plate"]
    try:
        for rule in ("all", "majority"):
            changed = env.client.patch(
                f"/api/v1/products/{plate}", headers=env.admin, json={"view_rule": rule}
            )
            assert changed.status_code == 200, changed.text
            response = env.client.post(
                f"/api/v1/inspections/{inspection_id}/anomaly", headers=env.worker, json={}
            )
            assert response.status_code == 200, response.text
            combination = response.json()["combination"]
            # one anomalous view of two is neither "all" nor a majority: the normal side view decides
            assert (combination["rule"], combination["is_anomaly"]) == (rule, False)
            assert combination["deciding_view"] == "side"
            record = env.client.get(f"/api/v1/inspections/{inspection_id}", headers=env.worker).json()
            assert record["is_anomaly"] is False
            assert record["outcome"]["label"] == "normal"
            assert record["outcome"]["basis"]["views"]["rule"] == rule
    finally:
        env.client.patch(f"/api/v1/products/{plate}", headers=env.admin, json={"view_rule": "any"})


def test_a_view_without_any_bank_is_a_clear_409(env: Env) -> None:
    response = env.client.post(
        "/api/v1/analyze",
        headers={**env.worker, "Accept-Language": "en"},
        files=[
            ("files", ("a.png", _side_normal(env), "image/png")),
            ("files", ("b.png", _side_normal(env), "image/png")),
        ],
        data={"views": ["top", "side"], "product_id": str(env.products["fabric"])},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["anomaly"] is None
    assert body["errors"]["anomaly"]["status"] == 409
    assert [v["anomaly"] for v in body["views"]] == [None, None]


def test_a_restarted_server_loads_the_view_banks(env: Env) -> None:
    settings = env.client.app.state.settings.model_copy(update={"load_models": True})  # type: ignore[attr-defined]
    with TestClient(create_app(settings)) as again:
        services = again.app.state.services  # type: ignore[attr-defined]
        loaded = current_models(services.models)
        assert loaded.views_of(env.products["metal_plate"]) == ["side"]
        assert loaded.get(env.products["metal_plate"]) is not None


def test_the_report_shows_every_view_and_what_decided(env: Env) -> None:
    body = _analyze(env, [("top", _plate_defect(env)), ("side", _side_normal(env))])
    inspection_id = body["inspection"]["id"]
    response = env.client.get(f"/api/v1/inspections/{inspection_id}/report.pdf", headers=env.worker)
    assert response.status_code == 200, response.text
    reader = PdfReader(io.BytesIO(response.content))
    assert len(reader.pages) == 1
    text = re.sub(r"\s+", "", reader.pages[0].extract_text())
    # one picture per view, captioned with its label, answer and bank; the rule and deciding view named
    assert len(reader.pages[0].images) >= 2
    assert "top·이상" in text
    assert "side·정상" in text
    assert "한시점이라도이상이면불량" in text
    assert "결정한시점:top" in text


def test_result_sinks_receive_the_views(env: Env) -> None:
    receiver = Receiver()
    try:
        made = env.client.post(
            "/api/v1/sinks",
            json={"name": "MES views", "kind": "webhook", "url": receiver.url},
            headers=env.admin,
        )
        assert made.status_code == 201, made.text
        try:
            body = _analyze(env, [("top", _plate_defect(env)), ("side", _side_normal(env))])
            _headers, message, _raw = receiver.next(timeout=20)
        finally:
            env.client.delete(f"/api/v1/sinks/{made.json()['id']}", headers=env.admin)
    finally:
        receiver.server.shutdown()
    assert message["inspection"]["id"] == body["inspection"]["id"]
    assert [v["view"] for v in message["views"]] == ["top", "side"]
    assert [v["bank"] for v in message["views"]] == ["product", "view"]
    assert [v["is_anomaly"] for v in message["views"]] == [True, False]
    assert message["combination"]["deciding_view"] == "top"
    assert message["links"]["views"]["side"].endswith(
        f"/api/v1/inspections/{body['inspection']['id']}/views/side/image"
    )


def test_the_admin_deploy_page_lists_the_view_banks(env: Env) -> None:
    page = env.client.get("/admin/deploy/anomaly", headers=env.admin)
    assert page.status_code == 200
    row = page.text.split('data-product="metal_plate"', 1)[1].split("</tr>", 1)[0]
    assert 'data-testid="view-banks"' in row
    assert "시점별 모델: side" in row


def test_a_view_left_with_too_few_normals_falls_back_after_the_next_build(env: Env) -> None:
    # runs last: the side bank goes away
    plate = env.products["metal_plate"]
    side = [
        i["id"]
        for i in env.client.get(
            f"/api/v1/products/{plate}/images?kind=normal&page_size=100", headers=env.admin
        ).json()["items"]
        if i["view"] == "side"
    ]
    for image_id in side[: len(side) - 2]:
        assert env.client.delete(f"/api/v1/images/{image_id}", headers=env.admin).status_code in (200, 204)
    job = _deploy(env.client, env.admin, "anomaly_model", plate)
    assert job["status"] == "succeeded"
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        current = select(Artifact).where(
            Artifact.kind == anomaly_model.VIEW_KIND, Artifact.is_current.is_(True)
        )
        current_views = list(session.scalars(current))
    assert current_views == []
    services = env.client.app.state.services  # type: ignore[attr-defined]
    assert current_models(services.models).views_of(plate) == []
    body = _analyze(env, [("top", _plate_defect(env)), ("side", _side_normal(env))])
    assert [v["bank"] for v in body["views"]] == ["product", "product"]
    assert all(v["anomaly"]["is_fallback"] for v in body["views"])
