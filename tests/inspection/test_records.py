"""Honest, owned records: one outcome per inspection in the API, history and stats; only the owner (or an
admin) changes an inspection; a completed one is locked until an admin reopens it; every change is kept.

Rows are real inspections made through the inspection service, with each step's result written on them as
the step services store it (tests/factories.py); the engines themselves are exercised in
test_outcome_flow.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.db.tables import Inspection
from tests.conftest import bearer
from tests.factories import Catalog, make_catalog, make_inspection, make_users

WORKER2_PASSWORD = "worker2-pass-123"


@pytest.fixture
def catalog(client: TestClient) -> Catalog:
    """Two products, three defect types, and a second worker (worker2)."""
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        cat = make_catalog(session)
        settings = client.app.state.settings  # type: ignore[attr-defined]
        make_users(session, settings, usernames=["worker2"], password=WORKER2_PASSWORD)
    return cat


@pytest.fixture
def worker2_headers(client: TestClient, catalog: Catalog) -> dict[str, str]:
    """Bearer header of worker2, another worker."""
    return bearer(client, "worker2", WORKER2_PASSWORD)


def _make(client: TestClient, settings: Settings, **spec: Any) -> int:
    app = client.app
    with app.state.session_factory() as session:  # type: ignore[attr-defined]
        return make_inspection(session, app.state.storage, settings, **spec).id  # type: ignore[attr-defined]


def _row(client: TestClient, inspection_id: int) -> Inspection:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        assert row is not None
        session.expunge(row)
        return row


def _search_result(inspection_id: int, cat: Catalog, *, is_unknown: bool = False) -> dict[str, Any]:
    """A stored search result with two matches (scratch first, dent second), as the search step stores it."""
    metal = {"id": cat.products["metal_plate"], "code": "metal_plate", "name": "금속 판"}
    scratch = {"id": cat.defects["scratch"], "code": "scratch", "name": "긁힘"}
    dent = {"id": cat.defects["dent"], "code": "dent", "name": "찍힘"}
    return {
        "inspection_id": inspection_id,
        "matches": [
            {"image_id": 9001, "score": 0.93, "image_url": "/api/v1/images/9001/file", "file_name": "a.png",
             "product": metal, "defect_type": scratch},
            {"image_id": 9002, "score": 0.90, "image_url": "/api/v1/images/9002/file", "file_name": "b.png",
             "product": metal, "defect_type": dent},
        ],
        "verdict": {"product_id": metal["id"], "defect_type_id": scratch["id"], "score": 0.93, "margin": 0.2,
                    "is_unknown": is_unknown, "product": metal, "defect_type": scratch, "min_score": 0.5,
                    "min_margin": 0.01, "threshold_source": "default"},
        "chosen_image_id": None,
        "top_k": 5,
        "product_id": None,
        "embedder": "test",
        "elapsed_ms": 1.0,
        "next_product_id": metal["id"],
    }  # fmt: skip


# ----- ownership (issue 14 item 1) --------------------------------------------------------------------------
def test_another_worker_cannot_replace_the_first_workers_feedback(
    client: TestClient, settings: Settings, catalog: Catalog, worker2_headers: dict[str, str]
) -> None:
    """The reported attack: worker2 rewrote worker1's feedback on a completed inspection (200 before)."""
    inspection_id = _make(
        client,
        settings,
        product_id=catalog.products["metal_plate"],
        defect_type_id=catalog.defects["scratch"],
        anomaly=True,
        generator="extractive",
        score=5,
        action="연마 후 재검사",
    )
    before = _row(client, inspection_id)
    response = client.post(
        f"/api/v1/inspections/{inspection_id}/feedback",
        json={"action_taken": "아무 조치 안 함", "score": 1},
        headers=worker2_headers,
    )
    assert response.status_code == 403, response.text
    assert "다른 작업자" in response.json()["detail"]
    after = _row(client, inspection_id)
    assert (after.action_taken, after.feedback_score, after.feedback_by) == (
        "연마 후 재검사",
        5,
        before.feedback_by,
    )


def test_another_worker_cannot_run_or_choose_on_the_first_workers_inspection(
    client: TestClient,
    settings: Settings,
    catalog: Catalog,
    worker2_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    inspection_id = _make(client, settings, product_id=catalog.products["metal_plate"])
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        row.search_result = _search_result(inspection_id, catalog)
        row.status = "searched"
        session.commit()
    url = f"/api/v1/inspections/{inspection_id}"
    for path, body in (
        ("/search/choose", {"image_id": 9002}),
        ("/search", {"top_k": 5}),
        ("/anomaly", {"product_id": None, "reference_image_id": None}),
        ("/guidance", {"generator": None}),
        (
            "/register",
            {"product_id": catalog.products["metal_plate"], "defect_type_id": catalog.defects["dent"]},
        ),
        ("/feedback", {"action_taken": "x", "score": 3}),
    ):
        response = client.post(url + path, json=body, headers=worker2_headers)
        assert response.status_code == 403, (path, response.text)
    assert _row(client, inspection_id).chosen_image_id is None
    # English too
    response = client.post(
        url + "/search/choose", json={"image_id": 9002}, headers={**worker2_headers, "Accept-Language": "en"}
    )
    assert response.status_code == 403
    assert "another worker" in response.json()["detail"]
    # an admin may
    response = client.post(url + "/search/choose", json={"image_id": 9002}, headers=admin_headers)
    assert response.status_code == 200, response.text


def test_completed_inspection_is_locked_until_an_admin_reopens_it_and_every_feedback_is_kept(
    client: TestClient,
    settings: Settings,
    catalog: Catalog,
    worker_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    inspection_id = _make(
        client,
        settings,
        product_id=catalog.products["metal_plate"],
        defect_type_id=catalog.defects["scratch"],
        anomaly=True,
        generator="extractive",
    )
    url = f"/api/v1/inspections/{inspection_id}"
    first = client.post(url + "/feedback", json={"action_taken": "연마", "score": 2}, headers=worker_headers)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "completed"

    again = client.post(
        url + "/feedback", json={"action_taken": "덮어쓰기", "score": 5}, headers=worker_headers
    )
    assert again.status_code == 409
    assert "관리자" in again.json()["detail"]
    assert client.post(url + "/anomaly", json={}, headers=worker_headers).status_code == 409
    assert _row(client, inspection_id).status == "completed"

    assert client.post(url + "/reopen", headers=worker_headers).status_code == 403
    reopened = client.post(url + "/reopen", headers=admin_headers)
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["status"] == "guided"
    assert reopened.json()["completed_at"] is None
    assert client.post(url + "/reopen", headers=admin_headers).status_code == 409  # not completed now

    second = client.post(url + "/feedback", json={"action_taken": "교체", "score": 4}, headers=worker_headers)
    assert second.status_code == 200, second.text
    assert (second.json()["action_taken"], second.json()["feedback_score"]) == ("교체", 4)

    events = client.get(url + "/events", headers=worker_headers).json()
    assert [e["kind"] for e in events] == ["feedback", "reopen", "feedback"]
    assert events[0]["data"]["score"] == 2
    assert events[0]["user"] == "worker1"
    assert events[1]["user"] == "admin1"
    previous = events[2]["data"]["previous"]
    assert (previous["action_taken"], previous["score"]) == ("연마", 2)
    assert events[2]["data"]["score"] == 4

    # the history page shows the whole trail
    client.post("/api/v1/auth/login", json={"username": "worker1", "password": "worker-pass-123"})
    page = client.get(f"/history/{inspection_id}")
    assert page.status_code == 200
    assert page.text.count('data-event="feedback"') == 2
    assert 'data-event="reopen"' in page.text
    assert "만족도 2 · 연마" in page.text


# ----- one outcome, counted honestly (issue 12 items 1 and 3) -----------------------------------------------
def test_history_and_stats_count_outcomes_never_the_runner_up_of_an_unknown(
    client: TestClient, settings: Settings, catalog: Catalog, worker_headers: dict[str, str]
) -> None:
    metal = catalog.products["metal_plate"]
    # identification unsure, its runner-up is "dent": the outcome is unknown
    unknown = _make(
        client,
        settings,
        product_id=metal,
        defect_type_id=catalog.defects["dent"],
        is_unknown=True,
        anomaly=True,
    )
    # identified scratch, anomalous: a scratch
    scratch = _make(
        client, settings, product_id=metal, defect_type_id=catalog.defects["scratch"], anomaly=True
    )
    # the search found a scratch, but the anomaly model says normal: normal, no defect name
    normal = _make(
        client, settings, product_id=metal, defect_type_id=catalog.defects["scratch"], anomaly=False
    )

    body = client.get(f"/api/v1/inspections/{normal}", headers=worker_headers).json()
    assert body["outcome"]["label"] == "normal"
    assert body["outcome"]["defect_type"] is None
    assert body["outcome"]["product"]["code"] == "metal_plate"
    assert body["outcome"]["source"] == "auto"
    assert body["outcome"]["basis"]["rule"] == "anomaly_normal"
    assert 0.0 <= body["outcome"]["confidence"] <= 1.0

    items = {i["id"]: i for i in client.get("/api/v1/inspections", headers=worker_headers).json()["items"]}
    assert items[unknown]["outcome"]["label"] == "unknown"
    assert items[unknown]["defect_type"] is None
    assert items[scratch]["outcome"]["defect_type"]["code"] == "scratch"
    assert items[normal]["defect_type"] is None

    by_dent = client.get(
        f"/api/v1/inspections?defect_type_id={catalog.defects['dent']}", headers=worker_headers
    )
    assert by_dent.json()["total"] == 0
    by_label = client.get("/api/v1/inspections?label=unknown", headers=worker_headers).json()
    assert [i["id"] for i in by_label["items"]] == [unknown]
    assert client.get("/api/v1/inspections?label=bogus", headers=worker_headers).status_code == 400

    stats = client.get("/api/v1/inspections/stats", headers=worker_headers).json()
    assert {d["code"]: d["count"] for d in stats["per_defect_type"]} == {"scratch": 1}
    assert {o["label"]: o["count"] for o in stats["per_outcome"]} == {
        "normal": 1,
        "defect": 1,
        "unknown": 1,
        "pending": 0,
    }

    # the pages say the same
    client.post("/api/v1/auth/login", json={"username": "admin1", "password": "admin-pass-123"})
    listing = client.get("/history").text
    assert listing.count('data-outcome="unknown"') == 1
    assert listing.count('data-outcome="normal"') == 1
    dashboard = client.get("/admin").text
    for stat, count in (("outcome_normal", 1), ("outcome_defect", 1), ("outcome_unknown", 1)):
        assert f'data-stat="{stat}"><div class="stat-value">{count}<' in dashboard
    detail = client.get(f"/history/{normal}").text
    assert "가장 유사한 과거 불량" in detail
    assert 'data-outcome="normal"' in detail


def test_a_workers_choice_overrides_the_outcome_and_shows_who_and_when(
    client: TestClient, settings: Settings, catalog: Catalog, worker_headers: dict[str, str]
) -> None:
    inspection_id = _make(client, settings, product_id=catalog.products["metal_plate"], anomaly=False)
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        row.search_result = _search_result(inspection_id, catalog)
        session.commit()
    url = f"/api/v1/inspections/{inspection_id}"
    chosen = client.post(url + "/search/choose", json={"image_id": 9002}, headers=worker_headers)
    assert chosen.status_code == 200, chosen.text
    outcome = client.get(url, headers=worker_headers).json()["outcome"]
    assert (outcome["label"], outcome["defect_type"]["code"], outcome["source"]) == (
        "defect",
        "dent",
        "worker",
    )
    assert outcome["changed_by"] == "worker1"
    assert outcome["changed_at"] is not None
    assert outcome["basis"]["worker"]["action"] == "choose"

    client.post("/api/v1/auth/login", json={"username": "worker1", "password": "worker-pass-123"})
    page = client.get(f"/inspect/{inspection_id}/search").text
    assert 'data-testid="outcome-changed"' in page
    assert "작업자 변경: worker1" in page

    back = client.post(url + "/search/choose", json={"image_id": None}, headers=worker_headers)
    assert back.status_code == 200
    outcome = client.get(url, headers=worker_headers).json()["outcome"]
    assert (outcome["label"], outcome["source"]) == ("normal", "auto")
    kinds = [e["kind"] for e in client.get(url + "/events", headers=worker_headers).json()]
    assert kinds == ["choose", "choose"]


def test_viewing_the_anomaly_page_of_a_finished_inspection_shows_the_stored_check(
    client: TestClient, settings: Settings, catalog: Catalog, worker_headers: dict[str, str]
) -> None:
    """A GET never re-runs the check: the page carries the stored result and offers no automatic run."""
    inspection_id = _make(
        client,
        settings,
        product_id=catalog.products["metal_plate"],
        defect_type_id=catalog.defects["scratch"],
        anomaly=True,
        generator="extractive",
        score=4,
        action="연마",
    )
    before = _row(client, inspection_id)
    client.post("/api/v1/auth/login", json={"username": "worker1", "password": "worker-pass-123"})
    for path in ("anomaly", "search", "guidance"):
        page = client.get(f"/inspect/{inspection_id}/{path}")
        assert page.status_code == 200, path
        assert 'data-testid="locked"' in page.text, path
    anomaly_page = client.get(f"/inspect/{inspection_id}/anomaly").text
    assert 'id="anomaly-stored"' in anomaly_page
    assert 'data-can-change="false"' in anomaly_page
    assert 'id="anomaly-rerun"' not in anomaly_page
    guidance_page = client.get(f"/inspect/{inspection_id}/guidance").text
    assert 'data-auto-start="false"' in guidance_page
    after = _row(client, inspection_id)
    assert (after.status, after.anomaly_result, after.updated_at) == (
        before.status,
        before.anomaly_result,
        before.updated_at,
    )


def test_registering_an_unknown_makes_the_registered_type_the_outcome(
    client: TestClient, settings: Settings, catalog: Catalog, worker_headers: dict[str, str]
) -> None:
    metal = catalog.products["metal_plate"]
    inspection_id = _make(
        client,
        settings,
        product_id=metal,
        defect_type_id=catalog.defects["scratch"],
        is_unknown=True,
        anomaly=True,
    )
    url = f"/api/v1/inspections/{inspection_id}"
    assert client.get(url, headers=worker_headers).json()["outcome"]["label"] == "unknown"
    registered = client.post(
        url + "/register",
        json={"product_id": metal, "defect_type_id": catalog.defects["dent"]},
        headers=worker_headers,
    )
    assert registered.status_code == 201, registered.text
    outcome = client.get(url, headers=worker_headers).json()["outcome"]
    assert (outcome["label"], outcome["defect_type"]["code"], outcome["source"]) == (
        "defect",
        "dent",
        "worker",
    )
    assert outcome["basis"]["worker"]["action"] == "register"
    stats = client.get("/api/v1/inspections/stats", headers=worker_headers).json()
    assert {d["code"]: d["count"] for d in stats["per_defect_type"]} == {"dent": 1}
    events = client.get(url + "/events", headers=worker_headers).json()
    assert [(e["kind"], e["data"]["outcome"]) for e in events] == [("register", "defect")]
