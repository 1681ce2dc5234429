"""The history API: filters, paging and statistics on real inspection rows; who may read them."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.history import service as history_service
from tests.factories import days_ago, make_inspection
from tests.history.conftest import History


def _ids(response: object) -> list[int]:
    body = response.json()  # type: ignore[attr-defined]
    return [item["id"] for item in body["items"]]


def test_list_is_newest_first_with_names_and_worker_can_read(
    client: TestClient, worker_headers: dict[str, str], history: History
) -> None:
    response = client.get("/api/v1/inspections", headers=worker_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 7
    assert body["page"] == 1
    assert body["page_size"] == 20
    assert _ids(response)[0] == history.ids["scratch_today"]
    assert _ids(response)[-1] == history.ids["old"]
    first = body["items"][0]
    assert first["product"] == {
        "id": history.catalog.products["metal_plate"],
        "code": "metal_plate",
        "name": "금속 판",
    }
    assert first["defect_type"]["name"] == "긁힘"
    assert first["image_url"] == f"/api/v1/inspections/{first['id']}/image"
    assert first["user"]["username"] == "worker1"
    assert first["is_action_completed"] is True
    assert first["feedback_score"] == 5
    # the photo behind the list's URL is really there
    assert client.get(first["image_url"], headers=worker_headers).status_code == 200


def test_product_filter_uses_the_verdict_when_no_product_was_chosen(
    client: TestClient, worker_headers: dict[str, str], history: History
) -> None:
    metal = history.catalog.products["metal_plate"]
    ids = _ids(client.get(f"/api/v1/inspections?product_id={metal}", headers=worker_headers))
    assert set(ids) == {history.ids[k] for k in ("scratch_today", "scratch_verdict", "dent", "old")}


def test_filters_combine(client: TestClient, worker_headers: dict[str, str], history: History) -> None:
    scratch = history.catalog.defects["scratch"]
    get = lambda q: set(_ids(client.get(f"/api/v1/inspections?{q}", headers=worker_headers)))  # noqa: E731
    assert get(f"defect_type_id={scratch}") == {history.ids["scratch_today"], history.ids["scratch_verdict"]}
    assert get(f"defect_type_id={scratch}&generator=llm") == {history.ids["scratch_verdict"]}
    assert get("feedback_score=4") == {history.ids["hole"]}
    assert get("status=uploaded") == {history.ids["uploaded"]}
    assert get("is_anomaly=false") == {history.ids["fabric_ok"]}
    date_from = days_ago(5).date().isoformat()
    date_to = days_ago(2).date().isoformat()
    assert get(f"date_from={date_from}&date_to={date_to}") == {
        history.ids[k] for k in ("scratch_verdict", "dent", "hole")
    }
    # a single day: both inspections from two days ago, not the others
    assert get(f"date_from={date_to}&date_to={date_to}") == {
        history.ids["scratch_verdict"],
        history.ids["dent"],
    }
    assert get("generator=nope") == set()


def test_paging(client: TestClient, worker_headers: dict[str, str], history: History) -> None:
    pages = [
        client.get(f"/api/v1/inspections?page={n}&page_size=3", headers=worker_headers).json()
        for n in (1, 2, 3)
    ]
    assert [len(p["items"]) for p in pages] == [3, 3, 1]
    assert all(p["total"] == 7 for p in pages)
    seen = [item["id"] for p in pages for item in p["items"]]
    assert len(set(seen)) == 7
    beyond = client.get("/api/v1/inspections?page=9&page_size=3", headers=worker_headers).json()
    assert beyond["items"] == []
    assert beyond["total"] == 7


def test_bad_filters_are_clear_4xx_in_the_users_language(
    client: TestClient, worker_headers: dict[str, str], history: History
) -> None:
    backwards = client.get(
        "/api/v1/inspections?date_from=2026-03-10&date_to=2026-03-01", headers=worker_headers
    )
    assert backwards.status_code == 400
    assert "시작일(2026-03-10)이 종료일(2026-03-01)보다 늦습니다" in backwards.json()["detail"]
    english = client.get(
        "/api/v1/inspections?date_from=2026-03-10&date_to=2026-03-01&lang=en", headers=worker_headers
    )
    assert "is after the end date" in english.json()["detail"]
    assert client.get("/api/v1/inspections?feedback_score=9", headers=worker_headers).status_code == 400
    assert client.get("/api/v1/inspections?status=bogus", headers=worker_headers).status_code == 400
    assert client.get("/api/v1/inspections?date_from=yesterday", headers=worker_headers).status_code == 422
    assert client.get("/api/v1/inspections?page=0", headers=worker_headers).status_code == 422
    too_long = client.get(
        "/api/v1/inspections/stats?date_from=2020-01-01&date_to=2026-01-01", headers=worker_headers
    )
    assert too_long.status_code == 400


def test_history_needs_login(client: TestClient, history: History) -> None:
    assert client.get("/api/v1/inspections").status_code == 401
    assert client.get("/api/v1/inspections/stats").status_code == 401


def test_stats_default_to_the_last_30_days(
    client: TestClient, worker_headers: dict[str, str], history: History
) -> None:
    stats = client.get("/api/v1/inspections/stats", headers=worker_headers).json()
    assert stats["total"] == 6  # "old" (40 days ago) is outside
    assert stats["anomalies"] == 4
    assert stats["actions_completed"] == 3
    assert stats["feedback_count"] == 3
    assert stats["average_score"] == 4.0  # (5 + 3 + 4) / 3
    assert [(d["code"], d["count"]) for d in stats["per_defect_type"]] == [
        ("scratch", 2),
        ("dent", 1),
        ("hole", 1),
    ]
    assert stats["per_defect_type"][0]["name"] == "긁힘"
    assert stats["per_defect_type"][0]["product_code"] == "metal_plate"
    assert [(p["code"], p["count"]) for p in stats["per_product"]] == [("metal_plate", 3), ("fabric", 2)]
    assert {g["generator"]: g["count"] for g in stats["generators"]} == {"extractive": 3, "llm": 1}
    assert [f["count"] for f in stats["feedback"]] == [0, 0, 1, 1, 1]
    assert len(stats["per_day"]) == 30
    by_day = {d["day"]: (d["count"], d["anomalies"]) for d in stats["per_day"]}
    assert by_day[days_ago(2).date().isoformat()] == (2, 2)
    assert by_day[days_ago(10).date().isoformat()] == (1, 0)
    assert sum(c for c, _ in by_day.values()) == 6


def test_stats_over_a_range_and_a_product(
    client: TestClient, worker_headers: dict[str, str], history: History
) -> None:
    date_from = (days_ago(0) - timedelta(days=60)).date().isoformat()
    metal = history.catalog.products["metal_plate"]
    stats = client.get(
        f"/api/v1/inspections/stats?date_from={date_from}&product_id={metal}", headers=worker_headers
    ).json()
    assert stats["date_from"] == date_from
    assert stats["total"] == 4
    assert [(d["code"], d["count"]) for d in stats["per_defect_type"]] == [("dent", 2), ("scratch", 2)]
    assert [f["count"] for f in stats["feedback"]] == [1, 0, 1, 0, 1]
    assert len(stats["per_day"]) == 61


def test_stats_on_an_empty_database(client: TestClient, admin_headers: dict[str, str]) -> None:
    stats = client.get("/api/v1/inspections/stats", headers=admin_headers).json()
    assert stats["total"] == 0
    assert stats["average_score"] is None
    assert stats["per_defect_type"] == []
    assert [f["count"] for f in stats["feedback"]] == [0, 0, 0, 0, 0]


def test_days_are_the_factorys_local_days(
    client: TestClient, settings: Settings, worker_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server in Seoul: 00:30 KST is still the previous day in UTC, but it counts on the Korean day."""
    seoul = ZoneInfo("Asia/Seoul")
    monkeypatch.setattr(history_service, "local_tz", lambda: seoul)
    day = datetime.now(seoul).date() - timedelta(days=3)
    just_after_midnight = datetime.combine(day, time(0, 30), tzinfo=seoul)
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        make_inspection(
            session,
            client.app.state.storage,
            settings,
            anomaly=True,
            created_at=just_after_midnight,  # type: ignore[attr-defined]
        )
    assert just_after_midnight.astimezone(UTC).date() == day - timedelta(days=1)
    listed = client.get(f"/api/v1/inspections?date_from={day}&date_to={day}", headers=worker_headers).json()
    assert listed["total"] == 1
    before = client.get(
        f"/api/v1/inspections?date_to={day - timedelta(days=1)}", headers=worker_headers
    ).json()
    assert before["total"] == 0
    stats = client.get("/api/v1/inspections/stats", headers=worker_headers).json()
    by_day = {d["day"]: (d["count"], d["anomalies"]) for d in stats["per_day"]}
    assert by_day[day.isoformat()] == (1, 1)
    assert by_day[(day - timedelta(days=1)).isoformat()] == (0, 0)
