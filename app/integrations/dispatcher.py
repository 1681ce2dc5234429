"""The background sender of the sink outbox: a daemon thread per server, polling for due messages."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from app.integrations import service

logger = logging.getLogger(__name__)

_BATCH = 20
_STALE_SENDING_S = 120.0


class SinkDispatcher:
    """Sends due messages every `poll_s` seconds; failures are retried with backoff, then dead-lettered."""

    def __init__(
        self, session_factory: sessionmaker[Session], *, poll_s: float, max_attempts: int, base_url: str = ""
    ) -> None:
        self.session_factory = session_factory
        self.base_url = base_url
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sending in the background."""
        self._thread = threading.Thread(target=self._loop, name="sink-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the message in hand."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_s + 15)

    def run_once(self) -> int:
        """Send every message that is due now; returns how many were tried."""
        with self.session_factory() as session:
            claimed = service.claim_due(session, limit=_BATCH, stale_after_s=_STALE_SENDING_S)
        for delivery_id in claimed:
            with self.session_factory() as session:
                service.deliver(
                    session, delivery_id=delivery_id, max_attempts=self.max_attempts, base_url=self.base_url
                )
        return len(claimed)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
            except Exception:  # the database may be briefly away; try again next time
                logger.warning("sink dispatcher could not send", exc_info=True)
