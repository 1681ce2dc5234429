"""One demo installation with a built anomaly model for metal_plate, shared by the anomaly tests.

The model is built once per session through the real `anomaly_model` job (real EfficientNet-Lite0,
real PatchCore, real SQLite and local storage) on a small demo data set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.cli import run_migrations
from app.core.config import Settings
from app.db.tables import DeploymentJob, Product
from app.demo.generator import generate_demo_dataset
from app.demo.loader import register_dataset
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, seed_users


@dataclass
class AnomalyEnv:
    """The running app, its settings, logins and the demo product ids."""

    client: TestClient
    settings: Settings
    admin: dict[str, str]
    worker: dict[str, str]
    products: dict[str, int]
    job: DeploymentJob


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
    tmp = tmp_path_factory.mktemp("anomaly")
    settings = make_settings(tmp)
    run_migrations(settings)
    root = settings.data_path / "demo" / "seed-0"
    generate_demo_dataset(root, seed=0, size=128, normals_per_product=8, defects_per_type=2)
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        state = client.app.state  # type: ignore[attr-defined]
        with state.session_factory() as session:
            register_dataset(session, state.storage, settings, root)
            products = {p.code: p.id for p in session.scalars(select(Product))}
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        worker = bearer(client, "worker1", WORKER_PASSWORD)
        job = run_job(client, admin, products["metal_plate"])
        assert job.status == "succeeded", job.error
        yield AnomalyEnv(client, settings, admin, worker, products, job)
