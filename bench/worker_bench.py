"""Job workers on RabbitMQ: how fast a queued job is picked up, and how fast a build recovers after its worker
is killed with SIGKILL (issue 16's benchmark).

One run, real services: the machine's RabbitMQ (a virtual host of its own, deleted afterwards), SQLite in a
temporary folder, `defectlens worker` processes. Figures:
- pick-up: from the API's 202 until the job row is `running` under a warm, idle worker (search-index builds);
- recovery: a worker is killed mid anomaly build and a second one is started at once; from the kill until the
  job is `running` again under the new owner, and until it has `succeeded`.

    OMP_NUM_THREADS=1 python bench/worker_bench.py --pickups 10 --kills 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli import run_migrations
from app.core.config import Settings
from app.db.tables import DeploymentJob
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, bearer, make_settings, seed_users
from tests.deployments.test_queue_workers import QUEUE_SETTINGS, Worker, _rabbitmqctl
from tests.inspection.search.conftest import clean_photo, make_catalog, png, upload


def _status(client: TestClient, job_id: int) -> tuple[str, str | None]:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        job = session.get(DeploymentJob, job_id)
        assert job is not None
        return job.status, job.owner


def _until(client: TestClient, job_id: int, check: object, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check(*_status(client, job_id)):  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"job {job_id} stayed {_status(client, job_id)}")


def _start(client: TestClient, admin: dict[str, str], kind: str, product_id: int | None = None) -> int:
    response = client.post(
        "/api/v1/deployments", json={"kind": kind, "product_id": product_id}, headers=admin
    )
    response.raise_for_status()
    return int(response.json()["id"])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pickups", type=int, default=10)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--rabbit", default=os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1:5672"))
    args = parser.parse_args()
    vhost = f"dl-bench-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    workers: list[Worker] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            values = {**QUEUE_SETTINGS, "job_broker_url": f"amqp://guest:guest@{args.rabbit}/{vhost}"}
            settings: Settings = make_settings(Path(tmp), load_models=True, **values)
            run_migrations(settings)
            with TestClient(create_app(settings)) as client:
                seed_users(settings, client)
                admin = bearer(client, "admin1", ADMIN_PASSWORD)
                catalog = make_catalog(client, admin, n=2)
                upload(
                    client, admin, catalog.product_id, "normal", [png(clean_photo(s)) for s in range(30, 42)]
                )
                workers.append(Worker(settings, Path(tmp) / "w0.log"))
                # Warm-up: the first job waits for the worker to start and load its models.
                first = _start(client, admin, "search_index")
                _until(client, first, lambda s, o: s in {"succeeded", "failed"}, 300)
                pickups: list[float] = []
                for _ in range(args.pickups):
                    created = time.monotonic()
                    job_id = _start(client, admin, "search_index")
                    pickups.append(_until(client, job_id, lambda s, o: s != "queued", 60) - created)
                    _until(client, job_id, lambda s, o: s in {"succeeded", "failed"}, 300)
                rejoin: list[float] = []
                finish: list[float] = []
                for k in range(args.kills):
                    job_id = _start(client, admin, "anomaly_model", catalog.product_id)
                    _until(client, job_id, lambda s, o: s == "running", 120)
                    time.sleep(1.0)  # mid-build
                    first_owner = _status(client, job_id)[1]
                    workers[-1].kill()
                    killed = time.monotonic()
                    workers.append(Worker(settings, Path(tmp) / f"w{k + 1}.log"))
                    rejoin.append(
                        _until(client, job_id, lambda s, o, f=first_owner: s == "running" and o != f, 600)
                        - killed
                    )
                    done = _until(client, job_id, lambda s, o: s in {"succeeded", "failed"}, 900)
                    assert _status(client, job_id)[0] == "succeeded"
                    finish.append(done - killed)
    finally:
        for worker in workers:
            worker.stop()
        _rabbitmqctl("delete_vhost", vhost)
    load = os.getloadavg()[0]
    now = datetime.now(UTC)
    print(f"Date: {now:%Y-%m-%d %H:%M} UTC. Machine: {platform.machine()}, {os.cpu_count()} cores,")
    print(f"1-minute load average {load:.1f} at the end. heartbeat {QUEUE_SETTINGS['job_heartbeat_s']} s,")
    print(f"stale after {QUEUE_SETTINGS['job_stale_after_s']} s.\n")
    print("| measure | n | p50 s | p95 s | max s |\n|---|---|---|---|---|")
    for name, values in (
        ("queued job picked up by an idle worker", pickups),
        ("killed worker's build running again on a new worker", rejoin),
        ("killed worker's build succeeded", finish),
    ):
        if values:
            print(
                f"| {name} | {len(values)} | {statistics.median(values):.2f} | {_pct(values, 0.95):.2f} "
                f"| {max(values):.2f} |"
            )


if __name__ == "__main__":
    main()
