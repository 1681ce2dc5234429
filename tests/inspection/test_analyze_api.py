"""POST /api/v1/analyze: the whole flow in one call, as a line system uses it (real engines, real jobs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from app.db.tables import Inspection
from tests.conftest import make_settings
from tests.factories import DemoEnv, demo_env


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoEnv]:
    """Demo data; search galleries and manual indexes for all products, a memory bank for metal_plate only."""
    settings = make_settings(tmp_path_factory.mktemp("analyze"))
    builds = [("search_index", None), ("manual_index", None), ("anomaly_model", "metal_plate")]
    with demo_env(settings, defects_per_type=3, builds=builds) as built:
        yield built


def _holdout_defect(env: DemoEnv, product_code: str) -> tuple[bytes, str]:
    product = next(p for p in env.manifest.products if p.code == product_code)
    entry = next(e for e in product.defect_images if e.holdout)
    return (env.root / entry.path).read_bytes(), entry.defect_code


def test_analyze_runs_every_step_and_records_the_inspection(env: DemoEnv) -> None:
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


def test_a_defect_free_photo_is_normal_and_its_guidance_says_so(env: DemoEnv) -> None:
    product = next(p for p in env.manifest.products if p.code == "metal_plate")
    entry = next(e for e in product.normal_images if e.holdout)
    response = env.client.post(
        "/api/v1/analyze",
        headers=env.worker,
        files={"file": ("ok.png", (env.root / entry.path).read_bytes(), "image/png")},
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


def test_a_step_that_cannot_run_is_reported_and_the_rest_still_runs(env: DemoEnv) -> None:
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


def test_bad_photo_fails_the_whole_call_and_stores_nothing(env: DemoEnv) -> None:
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
