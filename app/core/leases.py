"""Leases: a named lock row in the database that one process holds at a time, across servers and workers.

A lease is taken atomically (a conditional UPDATE of its row, or the row's INSERT when there is none yet),
kept alive by a heartbeat thread and given back on release. A holder that dies stops beating: its lease
expires `ttl_s` after the last beat and the next process takes it (at once when the holder was a process on
this host that no longer runs). Before committing what the lease protects, the holder confirms it inside the
same transaction (`HeldLease.confirm`): a holder that stalled past the expiry, and so lost the lease to
another process, fails there instead of overwriting the other's work.

Works the same on SQLite and MariaDB. Callers that also hold an in-process lock take that lock first, so
threads of one process never wait on each other through the database.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.jobs import owner_is_dead_here, process_owner
from app.db.base import db_now
from app.db.tables import Lease

__all__ = ["HeldLease", "LeaseLostError", "LeaseUnavailableError", "hold", "try_acquire"]

logger = logging.getLogger(__name__)

_POLL_S = (0.05, 1.0)  # first and longest wait between two attempts while another process holds the lease


class LeaseUnavailableError(Exception):
    """Another live process kept the lease for longer than the caller would wait."""


class LeaseLostError(Exception):
    """The lease expired while held (the holder stalled) and another process may have taken it."""


@dataclass
class HeldLease:
    """A lease this process holds, until the `hold` block ends."""

    name: str
    owner: str
    ttl_s: float
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def confirm(self, session: Session) -> None:
        """Extend the lease inside the caller's transaction; LeaseLostError when another process took it.

        Call it last before the commit that publishes what the lease protects: the row stays locked by
        that transaction until it commits, so nobody can take the lease in between.
        """
        kept = session.execute(
            update(Lease)
            .where(Lease.name == self.name, Lease.owner == self.owner)
            .values(expires_at=db_now(session) + timedelta(seconds=self.ttl_s))
        ).rowcount  # type: ignore[attr-defined]
        if not kept:
            self.lost = True
            raise LeaseLostError(f"lease {self.name!r} expired while held and was taken over")


def try_acquire(session_factory: sessionmaker[Session], name: str, owner: str, *, ttl_s: float) -> bool:
    """Take the lease if it is free, expired, or held by a process of this host that no longer runs."""
    try:
        with session_factory() as session:
            now = db_now(session)
            values = {"owner": owner, "acquired_at": now, "expires_at": now + timedelta(seconds=ttl_s)}
            taken = session.execute(
                update(Lease)
                .where(Lease.name == name, or_(Lease.owner == "", Lease.expires_at < now))
                .values(**values)
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
            if taken:
                return True
            holder = session.scalar(select(Lease.owner).where(Lease.name == name))
            if holder is None:
                # No row yet: the first INSERT wins; a concurrent one fails on the primary key.
                session.add(Lease(name=name, **values))
                session.commit()
                return True
            if owner_is_dead_here(holder):
                taken = session.execute(
                    update(Lease).where(Lease.name == name, Lease.owner == holder).values(**values)
                ).rowcount  # type: ignore[attr-defined]
                session.commit()
                if taken:
                    logger.info("lease %s taken over from %s, which no longer runs", name, holder)
                return bool(taken)
            return False
    except (IntegrityError, OperationalError) as exc:  # lost an INSERT race, or a deadlock victim: retry
        logger.debug("lease %s not taken this time: %s", name, type(exc).__name__)
        return False


def _beat(session_factory: sessionmaker[Session], lease: HeldLease, every_s: float) -> None:
    while not lease._stop.wait(every_s):
        try:
            with session_factory() as session:
                kept = session.execute(
                    update(Lease)
                    .where(Lease.name == lease.name, Lease.owner == lease.owner)
                    .values(expires_at=db_now(session) + timedelta(seconds=lease.ttl_s))
                ).rowcount  # type: ignore[attr-defined]
                session.commit()
        except Exception:  # a missed beat is retried; the expiry leaves room for a few
            logger.warning("heartbeat of lease %s failed", lease.name, exc_info=True)
            continue
        if not kept:
            lease.lost = True
            logger.warning("lease %s was taken over by another process", lease.name)
            return


def _release(session_factory: sessionmaker[Session], lease: HeldLease) -> None:
    try:
        with session_factory() as session:
            session.execute(
                update(Lease)
                .where(Lease.name == lease.name, Lease.owner == lease.owner)
                .values(owner="", expires_at=db_now(session))
            )
            session.commit()
    except Exception:  # the lease then frees itself when it expires
        logger.warning("releasing lease %s failed", lease.name, exc_info=True)


@contextmanager
def hold(
    session_factory: sessionmaker[Session],
    name: str,
    *,
    ttl_s: float,
    heartbeat_s: float,
    wait_s: float,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[HeldLease]:
    """Hold the lease `name` for the block: wait while another process holds it, beat, release at the end.

    Raises:
        LeaseUnavailableError: Still held by another live process after `wait_s`.
    """
    owner = process_owner("lease")  # one owner per hold: two holds never mistake each other for itself
    deadline = time.monotonic() + wait_s
    pause = _POLL_S[0]
    while not try_acquire(session_factory, name, owner, ttl_s=ttl_s):
        if time.monotonic() >= deadline:
            raise LeaseUnavailableError(name)
        if on_wait is not None:
            on_wait()  # a job reports that it waits, and stops here when it is cancelled
        time.sleep(pause * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not security
        pause = min(_POLL_S[1], pause * 2)
    lease = HeldLease(name=name, owner=owner, ttl_s=ttl_s)
    beat = threading.Thread(
        target=_beat, args=(session_factory, lease, heartbeat_s), name=f"lease-{name}", daemon=True
    )
    beat.start()
    try:
        yield lease
    finally:
        lease._stop.set()
        beat.join(heartbeat_s + 1)
        _release(session_factory, lease)
