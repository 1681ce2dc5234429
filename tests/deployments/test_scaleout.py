"""Several `defectlens serve` processes on one MariaDB and one SeaweedFS (S3): each loads what another built
from the object storage, applies the other's registrations and deletions from the change log, and accepts
the other's logins. Every server has its own data and models folders (its own artifact cache), so nothing
reaches it but the database and the storage.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth import service as auth_service
from app.auth.schemas import UserCreate
from app.cli import run_migrations
from app.core.config import Settings
from app.db.session import make_engine, make_session_factory
from app.db.tables import Artifact
from tests import services
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, make_settings
from tests.inspection.search.conftest import hole_photo, inspect, make_catalog, png, scratch_photo, upload
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.mariadb, pytest.mark.s3, pytest.mark.slow]

# The scale-out promise: a change made on one server is visible on every other within this bound.
VISIBLE_WITHIN_S = 5.0


@pytest.fixture(params=["faiss", "milvus"])
def shared(
    tmp_path: Path, s3_server: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """One MariaDB database and one S3 bucket that the servers of a test share (and one Milvus, for the
    galleries kept in Milvus: VECTOR_BACKEND=milvus)."""
    vectors: dict[str, Any] = {}
    if request.param == "milvus":
        vectors = {
            "vector_backend": "milvus",
            "milvus_uri": request.getfixturevalue("milvus_uri"),
            "milvus_collection_prefix": f"scaleout_{uuid.uuid4().hex[:8]}",
        }
    for url in services.mariadb_database():
        yield {
            **vectors,
            "database_url": url,
            "storage_backend": "s3",
            "s3_endpoint_url": s3_server["endpoint"],
            "s3_bucket": f"scaleout-{uuid.uuid4().hex[:8]}",
            "s3_access_key": s3_server["access_key"],
            "s3_secret_key": s3_server["secret_key"],
            "s3_create_bucket": True,
            "load_models": True,
            "artifact_poll_s": 0.5,
        }


def _server_settings(tmp_path: Path, name: str, shared: dict[str, Any]) -> Settings:
    return make_settings(tmp_path / name, **shared)


def _seed_users(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            for username, password, role in (
                ("admin1", ADMIN_PASSWORD, "admin"),
                ("worker1", WORKER_PASSWORD, "worker"),
            ):
                auth_service.create_user(
                    session,
                    user_in=UserCreate(username=username, password=password, role=role),
                    settings=settings,
                    actor_id=None,
                )
    finally:
        engine.dispose()


@pytest.fixture
def servers(tmp_path: Path, shared: dict[str, Any]) -> Iterator[list[ServerProcess]]:
    """Servers A and B (separate processes, data and model folders), the schema migrated, users seeded."""
    first = _server_settings(tmp_path, "a", shared)
    run_migrations(first)
    _seed_users(first)
    # A long first login delay, so "throttled on B after failing on A" does not depend on timing.
    started = [
        ServerProcess(
            _server_settings(tmp_path, name, shared), tmp_path / f"server-{name}.log", LOGIN_DELAY_BASE_S="60"
        )
        for name in ("a", "b")
    ]
    try:
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


def _login(client: httpx.Client, username: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _eventually(check: Callable[[], Any], *, within: float, what: str, logs: list[ServerProcess]) -> Any:
    """Poll `check` until it returns something truthy, at most `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {s.url}\n{s.tail(2500)}" for s in logs)
            raise AssertionError(f"{what} not visible within {within} s\n{tails}")
        time.sleep(0.1)


def _wait_job(
    client: httpx.Client, headers: dict[str, str], job_id: int, timeout: float = 300
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/deployments/{job_id}", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def _top_match(client: httpx.Client, headers: dict[str, str], inspection_id: int) -> dict[str, Any] | None:
    found = client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=headers)
    if found.status_code != 200 or not found.json()["matches"]:
        return None
    return dict(found.json()["matches"][0])


def test_two_servers_share_builds_registrations_deletions_and_logins(servers: list[ServerProcess]) -> None:
    a, b = (s.client() for s in servers)
    with a, b:
        # A login on A is a valid session on B (sessions live in the database).
        admin = _login(a, "admin1", ADMIN_PASSWORD)
        assert b.get("/api/v1/auth/me", headers=admin).status_code == 200
        worker = _login(b, "worker1", WORKER_PASSWORD)
        assert a.get("/api/v1/auth/me", headers=worker).status_code == 200

        # Failed logins on A count on B (the throttle lives in the database, not in a process).
        wrong = {"username": "worker1", "password": "not-the-password"}
        failures = [a.post("/api/v1/auth/login", json=wrong).status_code for _ in range(5)]
        assert failures == [401] * 5  # LOGIN_MAX_ATTEMPTS: the next attempt must wait
        throttled = b.post("/api/v1/auth/login", json={"username": "worker1", "password": WORKER_PASSWORD})
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) > 1

        # Upload and build through A.
        catalog = make_catalog(a, admin)  # type: ignore[arg-type]
        created = a.post("/api/v1/deployments", json={"kind": "search_index"}, headers=admin)
        assert created.status_code == 202, created.text
        job = _wait_job(a, admin, int(created.json()["id"]))
        assert job["status"] == "succeeded", job

        # Search through B: B fetched A's version from the storage (no embedding of the catalog).
        hole_query = inspect(b, worker, png(hole_photo(50)))  # type: ignore[arg-type]
        match = _eventually(
            lambda: _top_match(b, worker, hole_query),
            within=VISIBLE_WITHIN_S,
            what="A's build on B",
            logs=servers,
        )
        assert match["defect_type"]["id"] == catalog.hole_id

        # Register on B: found on A through the change log, without a rebuild.
        new_photo = png(scratch_photo(77))
        (new_id,) = upload(b, admin, catalog.product_id, "defect", [new_photo], catalog.scratch_id)  # type: ignore[arg-type]
        same_photo = inspect(a, worker, new_photo)  # type: ignore[arg-type]

        def found_on_a() -> bool:
            top = _top_match(a, worker, same_photo)
            return top is not None and top["image_id"] == new_id

        _eventually(found_on_a, within=VISIBLE_WITHIN_S, what="B's registration on A", logs=servers)

        # Delete on A: gone from B's results.
        same_on_b = inspect(b, worker, new_photo)  # type: ignore[arg-type]
        assert a.delete(f"/api/v1/images/{new_id}", headers=admin).status_code == 204

        def gone_on_b() -> bool:
            top = _top_match(b, worker, same_on_b)
            return top is not None and top["image_id"] != new_id

        _eventually(gone_on_b, within=VISIBLE_WITHIN_S, what="A's deletion on B", logs=servers)
        # Neither server rebuilt anything: one gallery version in the database.
        versions = a.get("/api/v1/deployments", params={"kind": "search_index"}, headers=admin).json()
        assert len(versions["items"]) == 1


def test_a_new_server_starts_from_the_stored_version_and_the_log(
    servers: list[ServerProcess], tmp_path: Path, shared: dict[str, Any]
) -> None:
    a = servers[0].client()
    with a:
        admin = _login(a, "admin1", ADMIN_PASSWORD)
        worker = _login(a, "worker1", WORKER_PASSWORD)
        catalog = make_catalog(a, admin)  # type: ignore[arg-type]
        job = _wait_job(
            a,
            admin,
            int(a.post("/api/v1/deployments", json={"kind": "search_index"}, headers=admin).json()["id"]),
        )
        assert job["status"] == "succeeded", job
        late_photo = png(hole_photo(91))
        (late_id,) = upload(a, admin, catalog.product_id, "defect", [late_photo], catalog.hole_id)  # type: ignore[arg-type]
    # A third server started after the build and the registration: the version from the storage, the
    # registration from the log.
    settings_c = _server_settings(tmp_path, "c", shared)
    third = ServerProcess(settings_c, tmp_path / "server-c.log")
    try:
        third.wait_ready()
        with third.client() as c:
            inspection = inspect(c, worker, late_photo)  # type: ignore[arg-type]
            top = _top_match(c, worker, inspection)
            assert top is not None
            assert top["image_id"] == late_id
        engine = make_engine(settings_c.database_url)
        with make_session_factory(engine)() as session:
            current = session.scalars(select(Artifact).where(Artifact.is_current.is_(True))).one()
        engine.dispose()
        cached = settings_c.artifacts_path / "cache" / current.path / ".verified"
        assert cached.read_text() == current.checksum  # fetched and verified into C's own cache
    finally:
        third.stop()
