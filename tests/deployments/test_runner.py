"""Deployment jobs run outside requests, report progress, can be cancelled and survive restarts."""

from __future__ import annotations

import json
import threading
import time

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.jobs import JobContext
from app.db.tables import DeploymentJob
from app.main import create_app
from tests.conftest import seed_users


def _wait(
    client: TestClient, headers: dict[str, str], job_id: int, statuses: set[str], timeout: float = 20
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/deployments/{job_id}", headers=headers).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {statuses}")


def test_job_reports_progress_log_and_result(client: TestClient, admin_headers: dict[str, str]) -> None:
    def handler(ctx: JobContext) -> dict[str, int]:
        for i in range(5):
            ctx.progress(i / 5, f"step {i}")
            ctx.log(f"did step {i}")
        return {"images": 5}

    client.app.state.runner.register("search_index", handler)  # type: ignore[attr-defined]
    created = client.post("/api/v1/deployments", json={"kind": "search_index"}, headers=admin_headers)
    assert created.status_code == 202
    assert created.json()["status"] == "queued"
    job = _wait(client, admin_headers, created.json()["id"], {"succeeded"})
    assert job["progress"] == 1.0
    assert job["result"] == {"images": 5}
    assert "did step 4" in job["log"]
    listed = client.get("/api/v1/deployments?kind=search_index", headers=admin_headers).json()
    assert listed["total"] == 1


def test_events_stream_progress_until_the_end(client: TestClient, admin_headers: dict[str, str]) -> None:
    def handler(ctx: JobContext) -> None:
        for i in range(3):
            ctx.progress(i / 3, f"stage {i}")
            time.sleep(0.3)

    client.app.state.runner.register("manual_index", handler)  # type: ignore[attr-defined]
    job_id = client.post("/api/v1/deployments", json={"kind": "manual_index"}, headers=admin_headers).json()[
        "id"
    ]
    with client.stream("GET", f"/api/v1/deployments/{job_id}/events", headers=admin_headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    states = [json.loads(line[6:]) for line in events]
    assert states[-1]["status"] == "succeeded"
    assert len({s["stage"] for s in states}) >= 2


def test_cancel_running_job(client: TestClient, admin_headers: dict[str, str]) -> None:
    started = threading.Event()

    def handler(ctx: JobContext) -> None:
        started.set()
        for i in range(400):
            ctx.progress(i / 400, "working")
            time.sleep(0.05)

    client.app.state.runner.register("anomaly_model", handler)  # type: ignore[attr-defined]
    job_id = client.post("/api/v1/deployments", json={"kind": "anomaly_model"}, headers=admin_headers).json()[
        "id"
    ]
    assert started.wait(10)
    dup = client.post("/api/v1/deployments", json={"kind": "anomaly_model"}, headers=admin_headers)
    assert dup.status_code == 409
    assert client.post(f"/api/v1/deployments/{job_id}/cancel", headers=admin_headers).status_code == 200
    job = _wait(client, admin_headers, job_id, {"cancelled"})
    assert job["progress"] < 1.0
    again = client.post(f"/api/v1/deployments/{job_id}/cancel", headers=admin_headers)
    assert again.status_code == 409


def test_failed_job_keeps_the_error(client: TestClient, admin_headers: dict[str, str]) -> None:
    def handler(ctx: JobContext) -> None:
        ctx.progress(0.5, "half")
        raise RuntimeError("disk full")

    client.app.state.runner.register("search_index", handler)  # type: ignore[attr-defined]
    job_id = client.post("/api/v1/deployments", json={"kind": "search_index"}, headers=admin_headers).json()[
        "id"
    ]
    job = _wait(client, admin_headers, job_id, {"failed"})
    assert "disk full" in job["error"]


def test_unknown_kind_product_and_roles(
    client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str]
) -> None:
    client.app.state.runner.handlers.clear()  # type: ignore[attr-defined]
    assert (
        client.post("/api/v1/deployments", json={"kind": "search_index"}, headers=admin_headers).status_code
        == 409
    )
    assert (
        client.post("/api/v1/deployments", json={"kind": "bogus"}, headers=admin_headers).status_code == 422
    )
    assert (
        client.post("/api/v1/deployments", json={"kind": "search_index"}, headers=worker_headers).status_code
        == 403
    )
    client.app.state.runner.register("search_index", lambda ctx: None)  # type: ignore[attr-defined]
    missing = client.post(
        "/api/v1/deployments", json={"kind": "search_index", "product_id": 99}, headers=admin_headers
    )
    assert missing.status_code == 404
    assert client.get("/api/v1/deployments/12345", headers=admin_headers).status_code == 404


def test_restart_marks_running_jobs_failed(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first:
        seed_users(settings, first)
        with first.app.state.session_factory() as session:  # type: ignore[attr-defined]
            session.add(DeploymentJob(kind="search_index", status="running", progress=0.4, stage="embedding"))
            session.commit()
    with TestClient(create_app(settings)) as second, second.app.state.session_factory() as session:  # type: ignore[attr-defined]
        job = session.query(DeploymentJob).one()
        assert job.status == "failed"
        assert "restart" in job.error
        assert job.finished_at is not None
