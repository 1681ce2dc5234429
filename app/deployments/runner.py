"""The job runner: executes deployment jobs in worker threads and keeps their state in the database."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.base import utcnow
from app.db.tables import DeploymentJob
from app.ml.errors import JobCancelled

logger = logging.getLogger(__name__)

_LOG_LIMIT = 200_000  # characters of log kept per job
_FLUSH_INTERVAL_S = 0.5


@dataclass
class JobContext:
    """What a job handler gets: its job's identity, services, and progress/cancel hooks."""

    job_id: int
    kind: str
    product_id: int | None
    params: dict[str, Any]
    session_factory: sessionmaker[Session]
    services: Any
    _last_flush: float = field(default=0.0, repr=False)
    _progress: float = field(default=0.0, repr=False)
    _stage: str = field(default="", repr=False)
    _pending_log: list[str] = field(default_factory=list, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    def progress(self, fraction: float, stage: str | None = None) -> None:
        """Report progress (0-1) and optionally a new stage; raises JobCancelled when cancel was asked."""
        self._progress = max(0.0, min(1.0, fraction))
        stage_changed = stage is not None and stage != self._stage
        if stage is not None:
            self._stage = stage
        if stage_changed or time.monotonic() - self._last_flush >= _FLUSH_INTERVAL_S:
            self.flush()
        self.check_cancelled()

    def log(self, message: str) -> None:
        """Append a timestamped line to the job's log."""
        self._pending_log.append(f"{utcnow().strftime('%H:%M:%S')} {message}")
        logger.info("job %s: %s", self.job_id, message)

    def should_cancel(self) -> bool:
        """True once an admin asked to cancel this job."""
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the job was cancelled."""
        if self._cancelled:
            raise JobCancelled()

    def flush(self) -> None:
        """Write progress, stage and new log lines; read the cancel flag."""
        self._last_flush = time.monotonic()
        with self.session_factory() as session:
            job = session.get(DeploymentJob, self.job_id)
            if job is None:
                self._cancelled = True
                return
            job.progress = self._progress
            job.stage = self._stage[:200]
            if self._pending_log:
                job.log = (job.log + "\n".join(self._pending_log) + "\n")[-_LOG_LIMIT:]
                self._pending_log.clear()
            self._cancelled = job.is_cancel_requested
            session.commit()


JobHandler = Callable[[JobContext], dict[str, Any] | None]


class JobRunner:
    """Runs queued jobs one at a time per worker thread; state lives in the `deployment_job` table."""

    def __init__(
        self, session_factory: sessionmaker[Session], *, services: Any = None, workers: int = 1
    ) -> None:
        self.session_factory = session_factory
        self.services = services
        self.workers = workers
        self.handlers: dict[str, JobHandler] = {}
        self.on_finished: list[Callable[[str, str], None]] = []
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Condition()
        self._active = 0

    def register(self, kind: str, handler: JobHandler) -> None:
        """Make a job kind runnable."""
        self.handlers[kind] = handler

    def start(self) -> None:
        """Recover jobs a previous process left behind, then start the worker threads."""
        self.recover()
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"job-runner-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask workers to finish and wait briefly (a running job is marked failed on the next start)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def recover(self) -> None:
        """Mark jobs that were running when the process stopped as failed; requeue queued ones."""
        with self.session_factory() as session:
            session.execute(
                update(DeploymentJob)
                .where(DeploymentJob.status == "running")
                .values(
                    status="failed",
                    error="interrupted: the server restarted while this job ran",
                    finished_at=utcnow(),
                )
            )
            queued = list(
                session.scalars(
                    select(DeploymentJob.id)
                    .where(DeploymentJob.status == "queued")
                    .order_by(DeploymentJob.id)
                )
            )
            session.commit()
        for job_id in queued:
            self._queue.put(job_id)

    def submit(self, job_id: int) -> None:
        """Queue a job that was just written with status 'queued'."""
        self._queue.put(job_id)

    def run_inline(self, job_id: int) -> None:
        """Run a queued job in the calling thread (the CLI's `demo` builds this way, no threads)."""
        self._run(job_id)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job is queued or running (used by the CLI and tests)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active or not self._queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.2))
        return True

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._idle:
                self._active += 1
            try:
                self._run(job_id)
            except Exception:
                logger.exception("job runner failed on job %s", job_id)
            finally:
                with self._idle:
                    self._active -= 1
                    self._idle.notify_all()

    def _claim(self, job_id: int) -> DeploymentJob | None:
        with self.session_factory() as session:
            claimed = session.execute(
                update(DeploymentJob)
                .where(DeploymentJob.id == job_id, DeploymentJob.status == "queued")
                .values(status="running", started_at=utcnow(), stage="starting")
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
            return session.get(DeploymentJob, job_id) if claimed else None

    def _run(self, job_id: int) -> None:
        job = self._claim(job_id)
        if job is None:
            return
        ctx = JobContext(
            job_id=job.id,
            kind=job.kind,
            product_id=job.product_id,
            params=dict(job.params or {}),
            session_factory=self.session_factory,
            services=self.services,
        )
        handler = self.handlers.get(job.kind)
        status, error, result = "succeeded", "", {}
        try:
            if handler is None:
                raise RuntimeError(f"no handler for job kind {job.kind!r}")
            ctx.log(f"started {job.kind}" + (f" for product {job.product_id}" if job.product_id else ""))
            result = handler(ctx) or {}
            ctx.log("finished")
        except JobCancelled:
            status = "cancelled"
            ctx.log("cancelled by an admin")
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            ctx.log(f"failed: {error}")
            logger.exception("job %s failed", job_id)
        ctx._progress = 1.0 if status == "succeeded" else ctx._progress
        ctx._stage = {"succeeded": "done", "cancelled": "cancelled", "failed": "failed"}[status]
        ctx.flush()
        with self.session_factory() as session:
            row = session.get(DeploymentJob, job_id)
            if row is not None:
                row.status, row.error, row.result, row.finished_at = status, error[:5000], result, utcnow()
                session.commit()
        for callback in self.on_finished:
            callback(job.kind, status)
