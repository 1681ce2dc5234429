"""One demo installation with a built anomaly model for metal_plate, shared by the anomaly tests.

The model is built once per session through the real `anomaly_model` job (real EfficientNet-Lite0,
real PatchCore, real SQLite and local storage) on a small demo data set.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.db.tables import DeploymentJob
from tests.conftest import make_settings
from tests.factories import DemoEnv, demo_env

AnomalyEnv = DemoEnv


def run_job(client: TestClient, headers: dict[str, str], product_id: int | None) -> DeploymentJob:
    """Start an anomaly_model job over the API and wait for it."""
    response = client.post(
        "/api/v1/deployments", json={"kind": "anomaly_model", "product_id": product_id}, headers=headers
    )
    assert response.status_code == 202, response.text
    assert client.app.state.runner.wait_idle(300)  # type: ignore[attr-defined]
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        job = session.get(DeploymentJob, response.json()["id"])
        assert job is not None
        session.expunge(job)
        return job


@pytest.fixture(scope="session")
def anomaly_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnomalyEnv]:
    """Demo data registered, metal_plate's anomaly model built by the job; fabric left without one."""
    settings = make_settings(tmp_path_factory.mktemp("anomaly"))
    with demo_env(settings, defects_per_type=2, builds=[("anomaly_model", "metal_plate")]) as env:
        yield env
