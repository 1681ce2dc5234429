"""Leases and job heartbeats use the database's clock, so hosts whose clocks disagree still agree on who is
alive (MariaDB: several servers and workers share it). A host's clock running 10 minutes slow is simulated
by replacing the host-clock function `utcnow` wherever the code under test refers to it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.cli import run_migrations
from app.core import jobs, leases
from app.core.jobs import job_is_live
from app.db import base
from app.db.session import make_engine, make_session_factory
from app.db.tables import DeploymentJob
from tests import services
from tests.conftest import make_settings

SKEW = timedelta(minutes=10)

pytestmark = pytest.mark.mariadb


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    for url in services.mariadb_database():
        run_migrations(make_settings(tmp_path, database_url=url))
        engine = make_engine(url)
        yield make_session_factory(engine)
        engine.dispose()


def _host_clock_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = lambda: datetime.now(base.UTC) - SKEW  # noqa: E731
    for module in (base, leases, jobs):
        monkeypatch.setattr(module, "utcnow", slow, raising=False)


def test_a_lease_taken_on_a_host_whose_clock_is_slow_is_not_taken_over_by_another(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as slow_host:
        _host_clock_slow(slow_host)
        assert leases.try_acquire(factory, "product-1", "lease@slow-host:1:a", ttl_s=60)
    # Another host with a right clock: the holder's 60 s are not over, so the lease is not free.
    assert not leases.try_acquire(factory, "product-1", "lease@right-host:2:b", ttl_s=60)


def test_a_job_beating_on_a_host_whose_clock_is_slow_stays_live_for_the_others(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with factory() as session:
        job = DeploymentJob(kind="search_index", status="running", stage="starting", owner="worker@slow:1:a")
        session.add(job)
        session.commit()
        job_id = job.id
    ctx = jobs.JobContext(
        job_id=job_id,
        kind="search_index",
        product_id=None,
        params={},
        session_factory=factory,
        services=None,  # type: ignore[arg-type]  # flush writes progress only
    )
    with monkeypatch.context() as slow_host:
        _host_clock_slow(slow_host)
        ctx.progress(0.5, "embedding")  # the heartbeat the worker writes
    with factory() as session:
        job = session.get(DeploymentJob, job_id)
        assert job is not None
        assert job_is_live(job, stale_after_s=60, now=base.db_now(session))
