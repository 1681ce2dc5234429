"""The history list and statistics give the same answers on MariaDB (production) as on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.core.config import Settings
from tests import services
from tests.conftest import make_settings
from tests.factories import days_ago
from tests.history.conftest import History


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings on a fresh MariaDB database (overrides the SQLite default for this module)."""
    for url in services.mariadb_database():
        s = make_settings(tmp_path, database_url=url)
        run_migrations(s)
        yield s


def test_list_and_stats_on_mariadb(
    client: TestClient, worker_headers: dict[str, str], history: History
) -> None:
    listed = client.get("/api/v1/inspections?page_size=3", headers=worker_headers).json()
    assert listed["total"] == 7
    assert listed["items"][0]["id"] == history.ids["scratch_today"]
    assert listed["items"][0]["defect_type"]["name"] == "긁힘"
    metal = history.catalog.products["metal_plate"]
    by_product = client.get(f"/api/v1/inspections?product_id={metal}", headers=worker_headers).json()
    assert by_product["total"] == 4
    stats = client.get("/api/v1/inspections/stats", headers=worker_headers).json()
    assert (stats["total"], stats["anomalies"], stats["actions_completed"]) == (6, 4, 3)
    assert stats["average_score"] == 4.0
    assert [(d["code"], d["count"]) for d in stats["per_defect_type"]] == [
        ("scratch", 2),
        ("dent", 1),
        ("hole", 1),
    ]
    assert [(p["code"], p["count"]) for p in stats["per_product"]] == [("metal_plate", 3), ("fabric", 2)]
    assert [f["count"] for f in stats["feedback"]] == [0, 0, 1, 1, 1]
    by_day = {d["day"]: (d["count"], d["anomalies"]) for d in stats["per_day"]}
    assert by_day[days_ago(2).date().isoformat()] == (2, 2)
    assert sum(count for count, _ in by_day.values()) == 6
