"""Deployment jobs on job workers over a real RabbitMQ: separate `defectlens worker` processes, killed with
SIGKILL mid-job, taken over by another worker, untouched by a server restart; the server serves what they
built.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.core.config import Settings
from app.db.base import utcnow
from app.db.tables import DeploymentJob
from app.deployments.queue import CeleryBroker
from app.main import create_app
from tests import services
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, seed_users
from tests.inspection.search.conftest import clean_photo, hole_photo, inspect, make_catalog, png, upload

ROOT = Path(__file__).resolve().parents[2]
RABBIT = os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1:5672")

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A RabbitMQ virtual host of this test's own (deleted afterwards)."""
    host, port = RABBIT.split(":")
    if not services._port_open(int(port)) or not services.shutil.which("rabbitmqctl"):
        services.unavailable(f"RabbitMQ not reachable at {RABBIT} (or rabbitmqctl missing)")
    vhost = f"dl-test-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@{host}:{port}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


QUEUE_SETTINGS: dict[str, Any] = {
    "job_heartbeat_s": 0.5,
    "job_stale_after_s": 4.0,
    "artifact_poll_s": 0.5,
}


def _settings(tmp_path: Path, broker_url: str, **overrides: Any) -> Settings:
    values = {**QUEUE_SETTINGS, "job_broker_url": broker_url, "load_models": True, **overrides}
    return make_settings(tmp_path, **values)


class Worker:
    """A `defectlens worker` process sharing the test's database and files."""

    def __init__(self, settings: Settings, log: Path, *, max_attempts: int = 3) -> None:
        env = {
            **os.environ,
            "ENVIRONMENT": "test",
            "LOG_JSON": "false",
            "DATABASE_URL": settings.database_url,
            "DATA_DIR": str(settings.data_path),
            "MODELS_DIR": str(settings.models_path),
            "MANUAL_STORE_DIR": str(settings.manual_store_path),
            "JOB_BROKER_URL": settings.job_broker_url,
            "JOB_HEARTBEAT_S": str(settings.job_heartbeat_s),
            "JOB_STALE_AFTER_S": str(settings.job_stale_after_s),
            "JOB_MAX_ATTEMPTS": str(max_attempts),
        }
        self.log = log
        self._handle = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--concurrency", "1"],
            cwd=ROOT,
            env=env,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._handle.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Workers started by a test; all stopped at its end."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def _job(client: TestClient, job_id: int) -> DeploymentJob:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        job = session.get(DeploymentJob, job_id)
        assert job is not None
        session.expunge(job)
        return job


def _wait_job(
    client: TestClient, job_id: int, done: set[str], timeout: float, logs: list[Path]
) -> DeploymentJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(client, job_id)
        if job.status in done:
            return job
        time.sleep(0.05)
    tails = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs if p.exists())
    raise AssertionError(f"job {job_id} stayed {_job(client, job_id).status}; worker logs:\n{tails}")


def _start_job(client: TestClient, admin: dict[str, str], kind: str, product_id: int | None = None) -> int:
    created = client.post("/api/v1/deployments", json={"kind": kind, "product_id": product_id}, headers=admin)
    assert created.status_code == 202, created.text
    return int(created.json()["id"])


def test_a_worker_builds_and_the_server_serves_it_without_a_restart(
    tmp_path: Path, broker_url: str, workers: list[Worker]
) -> None:
    settings = _settings(tmp_path, broker_url)
    run_migrations(settings)
    log = tmp_path / "worker.log"
    workers.append(Worker(settings, log))
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        catalog = make_catalog(client, admin)
        job_id = _start_job(client, admin, "search_index")
        job = _wait_job(client, job_id, {"succeeded", "failed"}, 180, [log])
        assert job.status == "succeeded", job.error
        assert str(job.owner).startswith("worker@")
        assert job.attempts == 1
        # The server never ran the job, yet it searches the worker's gallery within seconds.
        worker = bearer(client, "worker1", WORKER_PASSWORD)
        inspection_id = inspect(client, worker, png(hole_photo(50)))
        deadline = time.monotonic() + 5
        while True:
            found = client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=worker)
            if found.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert found.status_code == 200, found.text
        assert found.json()["matches"][0]["defect_type"]["id"] == catalog.hole_id


def test_a_killed_worker_s_job_survives_a_server_restart_and_is_taken_over(
    tmp_path: Path, broker_url: str, workers: list[Worker]
) -> None:
    settings = _settings(tmp_path, broker_url)
    run_migrations(settings)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        catalog = make_catalog(client, admin, n=2)
        upload(client, admin, catalog.product_id, "normal", [png(clean_photo(s)) for s in range(30, 42)])
        workers.append(Worker(settings, logs[0]))
        job_id = _start_job(client, admin, "anomaly_model", catalog.product_id)
        running = _wait_job(client, job_id, {"running", "succeeded", "failed"}, 120, logs)
        assert running.status == "running", "the build ended before the worker could be killed"
        first_owner = running.owner

    # A server restart while the worker builds leaves the job alone: its owner is alive.
    with TestClient(create_app(settings)) as client:
        after_restart = _job(client, job_id)
        assert (after_restart.status, after_restart.owner) == ("running", first_owner)

        workers[0].kill()
        assert _job(client, job_id).status == "running"
        workers.append(Worker(settings, logs[1]))
        job = _wait_job(client, job_id, {"succeeded", "failed", "cancelled"}, 480, logs)
        assert job.status == "succeeded", job.error
        assert job.attempts == 2
        assert job.owner != first_owner
        assert "taken over" in job.log
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        states = client.get("/api/v1/deployments", params={"kind": "anomaly_model"}, headers=admin).json()
        assert states["items"][0]["status"] == "succeeded"


def test_a_job_whose_workers_keep_dying_ends_failed_with_the_reason(
    tmp_path: Path, broker_url: str, workers: list[Worker]
) -> None:
    settings = _settings(tmp_path, broker_url, load_models=False)
    run_migrations(settings)
    log = tmp_path / "worker.log"
    with TestClient(create_app(settings)) as client:
        # The row a worker leaves behind when it is killed: running, silent, its one allowed attempt spent.
        with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
            job = DeploymentJob(
                kind="search_index",
                status="running",
                owner="worker@another-host:4242:abcdef",
                heartbeat_at=utcnow() - timedelta(minutes=5),
                attempts=1,
            )
            session.add(job)
            session.commit()
            job_id = job.id
        CeleryBroker(settings).publish(job_id, "search_index")  # what RabbitMQ redelivers
        workers.append(Worker(settings, log, max_attempts=1))
        failed = _wait_job(client, job_id, {"failed", "succeeded"}, 120, [log])
        assert failed.status == "failed"
        assert "gave up after 1 attempts" in failed.error
        assert failed.finished_at is not None


def test_an_unreachable_broker_refuses_the_job_clearly(tmp_path: Path) -> None:
    with socket_free_port() as port:
        settings = _settings(tmp_path, f"amqp://guest:guest@127.0.0.1:{port}//", load_models=False)
    run_migrations(settings)
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        response = client.post("/api/v1/deployments", json={"kind": "search_index"}, headers=admin)
        assert response.status_code == 503
        assert "작업 큐" in response.json()["detail"]
        listed = client.get("/api/v1/deployments", headers=admin).json()["items"]
        assert listed[0]["status"] == "failed"
        assert "unreachable" in listed[0]["error"]


class socket_free_port:  # noqa: N801 - used as a context manager like a function
    """A loopback port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None
