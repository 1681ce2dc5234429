"""Leases (app/core/leases.py) on SQLite and MariaDB: one holder at a time among racing processes, a dead
holder's lease is taken over, a holder that stalled past its expiry cannot commit over the next holder."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.cli import run_migrations
from app.core import leases
from app.db.base import utcnow
from app.db.session import make_engine, make_session_factory
from app.db.tables import Lease
from tests import services
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "mariadb"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite file (the embedded default) or a fresh MariaDB database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lease.db'}"
        run_migrations(make_settings(tmp_path, database_url=url))
        yield url
        return
    for url in services.mariadb_database():
        run_migrations(make_settings(tmp_path, database_url=url))
        yield url


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_racing_holders_take_the_lease_one_at_a_time(factory: sessionmaker[Session]) -> None:
    inside = 0
    most_inside = 0
    entries = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, most_inside, entries
        for _ in range(3):
            with leases.hold(factory, "race", ttl_s=30, heartbeat_s=5, wait_s=120):
                with guard:
                    inside += 1
                    entries += 1
                    most_inside = max(most_inside, inside)
                time.sleep(0.02)
                with guard:
                    inside -= 1

    # Six threads with an owner each behave as six processes: the row, not a lock in memory, excludes them.
    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert entries == 18
    assert most_inside == 1


def test_a_live_holder_keeps_the_lease_and_a_waiter_gives_up(factory: sessionmaker[Session]) -> None:
    # MariaDB keeps whole seconds: an expiry of 3 s is at least 2 s.
    with leases.hold(factory, "product-1", ttl_s=3.0, heartbeat_s=0.3, wait_s=5) as held:
        # Longer than the expiry: the heartbeat keeps it, so another process never gets it.
        with (
            pytest.raises(leases.LeaseUnavailableError),
            leases.hold(factory, "product-1", ttl_s=3.0, heartbeat_s=0.3, wait_s=6),
        ):
            pass
        with factory() as session:
            held.confirm(session)
            session.commit()
        # Another name is another lease.
        with leases.hold(factory, "product-2", ttl_s=3.0, heartbeat_s=0.3, wait_s=1):
            pass
    assert leases.try_acquire(factory, "product-1", "lease@elsewhere:1:a", ttl_s=30)


def test_a_holder_that_died_elsewhere_frees_the_lease_when_it_expires(factory: sessionmaker[Session]) -> None:
    with factory() as session:  # the row a holder on another host leaves when it dies: no more beats
        dying_at = utcnow() + timedelta(seconds=2)
        session.add(Lease(name="p", owner="lease@another-host:4242:abcdef", expires_at=dying_at))
        session.commit()
    assert not leases.try_acquire(factory, "p", "lease@here:1:a", ttl_s=30)
    started = time.monotonic()
    with leases.hold(factory, "p", ttl_s=30, heartbeat_s=5, wait_s=30) as held:
        assert held.owner.startswith("lease@")
    assert time.monotonic() - started < 30


def test_a_killed_holder_on_this_host_is_taken_over_at_once(
    factory: sessionmaker[Session], database_url: str
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from app.core import leases\n"
            "from app.db.session import make_engine, make_session_factory\n"
            "factory = make_session_factory(make_engine(sys.argv[1]))\n"
            "with leases.hold(factory, 'p', ttl_s=3600, heartbeat_s=1, wait_s=60):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(3600)\n",
            database_url,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
        assert not leases.try_acquire(factory, "p", "lease@here:1:a", ttl_s=30)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # The holder's expiry is an hour away, but its process is gone: the lease is free now.
        assert leases.try_acquire(factory, "p", "lease@here:1:a", ttl_s=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_a_holder_that_stalled_past_its_expiry_cannot_commit(factory: sessionmaker[Session]) -> None:
    # A heartbeat slower than the expiry stands for a holder that froze (a pause, a lost network).
    with leases.hold(factory, "p", ttl_s=0.5, heartbeat_s=30, wait_s=1) as stalled:
        time.sleep(1.5)
        assert leases.try_acquire(factory, "p", "lease@elsewhere:1:b", ttl_s=30)
        with factory() as session, pytest.raises(leases.LeaseLostError):
            stalled.confirm(session)
    with factory() as session:  # releasing a lost lease leaves the new holder's row alone
        row = session.get(Lease, "p")
        assert row is not None
        assert row.owner == "lease@elsewhere:1:b"
