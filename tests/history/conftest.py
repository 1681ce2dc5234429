"""History fixtures: a catalog and a spread of real inspections made through the services."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from tests.factories import Catalog, days_ago, make_catalog, make_inspection


@dataclass
class History:
    """The seeded catalog and the ids of the inspections, by label."""

    catalog: Catalog
    ids: dict[str, int]


@pytest.fixture
def history(client: TestClient, settings: Settings) -> History:
    """Seven inspections over the last 40 days by two users, with varied results."""
    app = client.app
    with app.state.session_factory() as session:  # type: ignore[attr-defined]
        cat = make_catalog(session)
        metal, fabric = cat.products["metal_plate"], cat.products["fabric"]
        storage = app.state.storage  # type: ignore[attr-defined]
        specs = {
            # today: a scratch on metal, anomaly, extractive report, useful (5), completed
            "scratch_today": {
                "product_id": metal, "defect_type_id": cat.defects["scratch"], "anomaly": True,
                "generator": "extractive", "score": 5, "action": "연마 후 재검사",
                "created_at": days_ago(0, 9),
            },
            # 2 days ago: a scratch found by search alone (product from the verdict), llm report, score 3
            "scratch_verdict": {
                "verdict_product_id": metal, "defect_type_id": cat.defects["scratch"], "anomaly": True,
                "generator": "llm", "score": 3, "action": "라인 정지", "created_at": days_ago(2),
            },
            # 2 days ago: a dent, anomaly, report but no feedback yet
            "dent": {
                "product_id": metal, "defect_type_id": cat.defects["dent"], "anomaly": True,
                "generator": "extractive", "created_at": days_ago(2, 15), "username": "admin1",
            },
            # 5 days ago: fabric hole, anomaly, score 4
            "hole": {
                "product_id": fabric, "defect_type_id": cat.defects["hole"], "anomaly": True,
                "generator": "extractive", "score": 4, "action": "원단 교체", "created_at": days_ago(5),
            },
            # 10 days ago: fabric, normal (no anomaly), no defect type
            "fabric_ok": {"product_id": fabric, "anomaly": False, "created_at": days_ago(10)},
            # 20 days ago: only uploaded
            "uploaded": {"created_at": days_ago(20)},
            # 40 days ago: outside the default 30-day statistics window
            "old": {
                "product_id": metal, "defect_type_id": cat.defects["dent"], "anomaly": True,
                "generator": "extractive", "score": 1, "action": "폐기", "created_at": days_ago(40),
            },
        }  # fmt: skip
        ids = {
            label: make_inspection(session, storage, settings, **spec).id  # type: ignore[arg-type]
            for label, spec in specs.items()
        }
    return History(catalog=cat, ids=ids)
