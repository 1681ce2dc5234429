"""POST /api/v1/analyze: the whole flow in one call, as a line system uses it (real engines, real jobs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.cli import run_migrations
from app.db.tables import Inspection, Product
from app.demo.generator import generate_demo_dataset
from app.demo.loader import register_dataset
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, seed_users


@dataclass
class Env:
    client: TestClient
    worker: dict[str, str]
    products: dict[str, int]
    root: Path
    manifest: dict[str, object]


def _deploy(client: TestClient, admin: dict[str, str], kind: str, product_id: int | None) -> None:
    response = client.post(
        "/api/v1/deployments", json={"kind": kind, "product_id": product_id}, headers=admin
    )
    assert response.status_code == 202, response.text
    assert client.app.state.runner.wait_idle(600)  # type: ignore[attr-defined]
    job = client.get(f"/api/v1/deployments/{response.json()['id']}", headers=admin).json()
    assert job["status"] == "succeeded", job


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Demo data; search galleries and manual indexes for all products, a memory bank for metal_plate only."""
    tmp = tmp_path_factory.mktemp("analyze")
    settings = make_settings(tmp)
    run_migrations(settings)
    root = settings.data_path / "demo" / "seed-0"
    generate_demo_dataset(root, seed=0, size=128, normals_per_product=8, defects_per_type=3)
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        state = client.app.state  # type: ignore[attr-defined]
        with state.session_factory() as session:
            register_dataset(session, state.storage, settings, root)
            products = {p.code: p.id for p in session.scalars(select(Product))}
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        assert state.runner.wait_idle(600)  # manual uploads queue their own indexing
        _deploy(client, admin, "search_index", None)
        _deploy(client, admin, "manual_index", None)
        _deploy(client, admin, "anomaly_model", products["metal_plate"])
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        yield Env(client, bearer(client, "worker1", WORKER_PASSWORD), products, root, manifest)


def _holdout_defect(env: Env, product_code: str) -> tuple[bytes, str]:
    product = next(p for p in env.manifest["products"] if p["code"] == product_code)  # type: ignore[index, union-attr]
    entry = next(e for e in product["defect_images"] if e.get("holdout"))
    return (env.root / entry["path"]).read_bytes(), entry["defect_code"]


def test_analyze_runs_every_step_and_records_the_inspection(env: Env) -> None:
    data, _ = _holdout_defect(env, "metal_plate")
    response = env.client.post(
        "/api/v1/analyze",
        headers=env.worker,
        files={"file": ("line7.png", data, "image/png")},
        data={"top_k": "3"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"] == {}
    assert 1 <= len(body["search"]["matches"]) <= 3
    assert body["search"]["verdict"]["product_id"] == env.products["metal_plate"]
    anomaly = body["anomaly"]
    assert anomaly["product_id"] == env.products["metal_plate"]
    assert anomaly["is_anomaly"] == (anomaly["score"] > anomaly["threshold"])
    for key in ("heatmap_url", "overlay_url", "comparison_url", "mask_url"):
        assert env.client.get(anomaly[key], headers=env.worker).content[:4] == b"\x89PNG"
    sections = body["guidance"]["sections"]
    assert set(sections) >= {"status", "cause", "action", "prevention"}
    assert all(sections[k].strip() for k in ("status", "cause", "action", "prevention"))
    assert body["guidance"]["generator"] == "extractive"
    record = env.client.get(f"/api/v1/inspections/{body['inspection']['id']}", headers=env.worker).json()
    for step in ("search", "anomaly", "guidance"):
        assert record[step] is not None, step
    assert record["original_name"] == "line7.png"
    outcome = body["inspection"]["outcome"]
    assert outcome == record["outcome"]
    assert outcome["basis"]["anomaly"]["score"] == anomaly["score"]
    if outcome["label"] == "defect":  # guidance without a defect type follows the outcome
        assert body["guidance"]["defect_type_id"] == outcome["defect_type"]["id"]


def test_a_defect_free_photo_is_normal_and_its_guidance_says_so(env: Env) -> None:
    product = next(p for p in env.manifest["products"] if p["code"] == "metal_plate")  # type: ignore[index, union-attr]
    entry = next(e for e in product["normal_images"] if e.get("holdout"))
    response = env.client.post(
        "/api/v1/analyze",
        headers=env.worker,
        files={"file": ("ok.png", (env.root / entry["path"]).read_bytes(), "image/png")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["anomaly"]["is_anomaly"] is False
    outcome = body["inspection"]["outcome"]
    assert (outcome["label"], outcome["defect_type"], outcome["source"]) == ("normal", None, "auto")
    assert outcome["product"]["code"] == "metal_plate"
    # the search still lists the most similar past defects, but names none as the answer
    assert body["search"]["matches"]
    assert body["guidance"]["defect_type_id"] is None
    assert body["guidance"]["sections"]["status"].startswith("정상 판정")
    assert body["guidance"]["citations"] == []


def test_a_step_that_cannot_run_is_reported_and_the_rest_still_runs(env: Env) -> None:
    data, _ = _holdout_defect(env, "fabric")  # fabric has no memory bank in this installation
    response = env.client.post(
        "/api/v1/analyze",
        headers={**env.worker, "Accept-Language": "ko"},
        files={"file": ("f.png", data, "image/png")},
        data={"product_id": str(env.products["fabric"])},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["anomaly"] is None
    assert body["errors"]["anomaly"]["status"] == 409
    assert (
        "anomaly_model" in body["errors"]["anomaly"]["detail"]
        or "메모리" in body["errors"]["anomaly"]["detail"]
    )
    assert body["search"]["matches"]
    assert body["guidance"]["sections"]["status"]


def test_bad_photo_fails_the_whole_call_and_stores_nothing(env: Env) -> None:
    state = env.client.app.state  # type: ignore[attr-defined]
    with state.session_factory() as session:
        before = len(session.scalars(select(Inspection)).all())
    response = env.client.post(
        "/api/v1/analyze", headers=env.worker, files={"file": ("x.png", b"not an image at all", "image/png")}
    )
    assert response.status_code == 415
    bad_top_k = env.client.post(
        "/api/v1/analyze",
        headers=env.worker,
        files={"file": ("x.png", b"irrelevant", "image/png")},
        data={"top_k": "0"},
    )
    assert bad_top_k.status_code == 422
    with state.session_factory() as session:
        assert len(session.scalars(select(Inspection)).all()) == before
