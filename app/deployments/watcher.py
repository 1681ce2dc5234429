"""Picks up what another process changed (a job worker, or another server) and loads it.

A finished job's artifact is recorded in the `artifact` table by whichever process ran it (a worker, or any
server). The watcher polls the current artifacts' versions every ARTIFACT_POLL_S seconds and reloads a kind
whose set changed (fetching the new version from the object storage); requests in flight keep the engine
they started with (the registry swaps references). After that look it calls `sync`, which applies the change
log (registrations and deletions made on other servers) to the live galleries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.tables import Artifact

logger = logging.getLogger(__name__)

Signature = dict[str, tuple[int, int]]


def current_signature(session: Session) -> Signature:
    """Per artifact kind: (newest current artifact id, number of current artifacts)."""
    rows = session.execute(
        select(Artifact.kind, func.max(Artifact.id), func.count(Artifact.id))
        .where(Artifact.is_current.is_(True))
        .group_by(Artifact.kind)
    )
    return {str(kind): (int(newest or 0), int(count)) for kind, newest, count in rows}


class ArtifactWatcher:
    """A daemon thread that calls `reload(kind)` when that kind's current artifacts change."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        reload: Callable[[str], None],
        *,
        poll_s: float,
        sync: Callable[[], object] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.reload = reload
        self.sync = sync
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: Signature = {}

    def start(self) -> None:
        """Remember what is loaded now, then watch."""
        with self.session_factory() as session:
            self._seen = current_signature(session)
        self._thread = threading.Thread(target=self._loop, name="artifact-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_s + 5)

    def check_once(self) -> list[str]:
        """Reload every kind whose current artifacts changed since the last look; returns those kinds."""
        with self.session_factory() as session:
            now = current_signature(session)
        changed = sorted(kind for kind in set(now) | set(self._seen) if now.get(kind) != self._seen.get(kind))
        for kind in changed:
            logger.info("artifacts of %s changed elsewhere: reloading", kind)
            self.reload(kind)
        self._seen = now
        return changed

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_once()
            except Exception:  # the database may be briefly away; look again next time
                logger.warning("artifact watcher could not check for new artifacts", exc_info=True)
            if self.sync is not None:
                try:
                    self.sync()
                except Exception:
                    logger.warning("applying the change log failed; trying again next time", exc_info=True)
