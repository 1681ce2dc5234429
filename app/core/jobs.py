"""The job runner: executes background jobs (deployments) and keeps their state in the database.

Infrastructure, not a domain: domains submit jobs through it and register handlers that take a typed
`JobContext`. Two ways to run: in threads of the server process (the embedded default), or, with a broker,
on `defectlens worker` processes that consume a queue (see app/deployments/queue.py). Either way each job row
records its owner process and a heartbeat: a job whose owner died is failed on the next start of a server
(thread mode) or taken over by another worker when the broker redelivers it (queue mode), at most
`max_attempts` times; a job whose owner is alive is never touched by someone else's restart.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypeAlias

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import JobQueueUnavailableError
from app.core.services import Services
from app.db.base import db_now, utcnow
from app.db.tables import DeploymentJob

# Engines raise it from deep inside a build, and they import no database code: it is defined beside them
# and re-exported here, where handlers and the runner meet it.
from app.ml.errors import JobCancelled

__all__ = [
    "JobBroker",
    "JobCancelled",
    "JobContext",
    "JobHandler",
    "JobParams",
    "JobResult",
    "JobRunner",
    "JsonValue",
    "job_is_live",
    "owner_is_dead_here",
    "process_owner",
]

logger = logging.getLogger(__name__)

# What a job's parameters and result are: JSON, as the job row stores them.
JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
JobParams: TypeAlias = dict[str, JsonValue]
JobResult: TypeAlias = dict[str, object]

_LOG_LIMIT = 200_000  # characters of log kept per job
_FLUSH_INTERVAL_S = 0.5


@dataclass
class JobContext:
    """What a job handler gets: its job's identity, services, and progress/cancel hooks."""

    job_id: int
    kind: str
    product_id: int | None
    params: JobParams
    session_factory: sessionmaker[Session]
    services: Services
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
            job.heartbeat_at = db_now(session)
            job.progress = self._progress
            job.stage = self._stage[:200]
            if self._pending_log:
                job.log = (job.log + "\n".join(self._pending_log) + "\n")[-_LOG_LIMIT:]
                self._pending_log.clear()
            self._cancelled = job.is_cancel_requested
            session.commit()


JobHandler = Callable[[JobContext], JobResult | None]
RunOutcome = Literal["done", "busy"]


class JobBroker(Protocol):
    """Hands a queued job to the worker processes (a message queue)."""

    def publish(self, job_id: int, kind: str) -> None: ...


def process_owner(role: str) -> str:
    """An owner id naming this process: `role@host:pid:tag` (tag tells apart runners in one process)."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def owner_is_dead_here(owner: str | None, me: str | None = None) -> bool:
    """True when `owner` is a process on this host that no longer runs (or an earlier runner `me` replaced).

    Without `me`, an owner in this very process counts as alive (a caller that is not the runner cannot
    tell its runners apart; their heartbeat decides).
    """
    if not owner:
        return True  # rows written before jobs had owners
    try:
        _, rest = owner.split("@", 1)
        host, pid_text, _tag = rest.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        return me is not None and owner != me  # an earlier runner of this process (stopped), never this one
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def job_is_live(job: DeploymentJob, *, stale_after_s: float, now: datetime | None = None) -> bool:
    """True while the job runs in a process that is alive: its owner runs (as far as this host can tell)
    and its heartbeat is younger than `stale_after_s`. The test `recover` applies, for callers that are
    not a job runner (a starting server deciding whether a job's side state was abandoned)."""
    if job.status != "running" or owner_is_dead_here(job.owner):
        return False
    stale_before = (now or utcnow()) - timedelta(seconds=stale_after_s)
    return job.heartbeat_at is None or job.heartbeat_at >= stale_before


class JobRunner:
    """Runs jobs in worker threads, or publishes them to a broker; state lives in `deployment_job`."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        services: Services,
        workers: int = 1,
        role: str = "server",
        broker: JobBroker | None = None,
        heartbeat_s: float = 5.0,
        stale_after_s: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        self.session_factory = session_factory
        self.services = services
        self.workers = workers
        self.broker = broker
        self.owner = process_owner(role)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.max_attempts = max_attempts
        self.handlers: dict[str, JobHandler] = {}
        self.on_finished: list[Callable[[str, str], None]] = []
        # Called with the job's kind before its handler runs (a worker reloads the current artifacts).
        self.before_job: list[Callable[[str], None]] = []
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Condition()
        self._active = 0

    def register(self, kind: str, handler: JobHandler) -> None:
        """Make a job kind runnable."""
        self.handlers[kind] = handler

    def start(self) -> None:
        """Recover jobs a previous process left behind, then start the worker threads (thread mode)."""
        self.recover()
        if self.broker is not None:
            return
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
        """Fail the running jobs whose owner is gone; requeue queued ones (thread mode).

        With a broker, a job a dead worker held is left `running`: the broker redelivers it and the next
        worker takes it over once its heartbeat is stale. Jobs of live owners are never touched.
        """
        with self.session_factory() as session:
            stale_before = db_now(session) - timedelta(seconds=self.stale_after_s)
            running = session.scalars(select(DeploymentJob).where(DeploymentJob.status == "running"))
            for job in running:
                owner = job.owner or ""
                lost = owner_is_dead_here(job.owner, self.owner) or (
                    job.heartbeat_at is not None and job.heartbeat_at < stale_before
                )
                if not lost or (self.broker is not None and owner.startswith("worker@")):
                    continue
                job.status = "failed"
                job.error = "interrupted: the server restarted while this job ran"
                job.finished_at = utcnow()
            queued = list(
                session.scalars(
                    select(DeploymentJob.id)
                    .where(DeploymentJob.status == "queued")
                    .order_by(DeploymentJob.id)
                )
            )
            session.commit()
        if self.broker is None:
            for job_id in queued:
                self._queue.put(job_id)

    def submit(self, job_id: int) -> None:
        """Queue a job that was just written with status 'queued' (a thread here, or the broker)."""
        if self.broker is None:
            self._queue.put(job_id)
            return
        with self.session_factory() as session:
            job = session.get(DeploymentJob, job_id)
            kind = job.kind if job is not None else ""
        try:
            self.broker.publish(job_id, kind)
        except Exception as exc:
            logger.exception("publishing job %s to the broker failed", job_id)
            with self.session_factory() as session:
                session.execute(
                    update(DeploymentJob)
                    .where(DeploymentJob.id == job_id, DeploymentJob.status == "queued")
                    .values(
                        status="failed",
                        stage="failed",
                        error=f"the job queue is unreachable: {type(exc).__name__}",
                        finished_at=utcnow(),
                    )
                )
                session.commit()
            raise JobQueueUnavailableError() from exc

    def run_inline(self, job_id: int) -> None:
        """Run a queued job in the calling thread (the CLI's `demo` builds this way, no threads)."""
        self._run(job_id)

    def run_delivered(self, job_id: int) -> RunOutcome:
        """Run a job a broker delivered; `busy` when a live owner still holds it (deliver it again later)."""
        return self._run(job_id)

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

    def _claim(self, job_id: int) -> tuple[DeploymentJob | None, RunOutcome]:
        """Take a queued job, or a running one whose owner fell silent; count the attempt."""
        with self.session_factory() as session:
            now = db_now(session)
            stale_before = now - timedelta(seconds=self.stale_after_s)
            silent = or_(DeploymentJob.heartbeat_at.is_(None), DeploymentJob.heartbeat_at < stale_before)
            claimed = session.execute(
                update(DeploymentJob)
                .where(
                    DeploymentJob.id == job_id,
                    or_(
                        DeploymentJob.status == "queued",
                        (DeploymentJob.status == "running") & silent,
                    ),
                )
                .values(
                    status="running",
                    owner=self.owner,
                    heartbeat_at=now,
                    attempts=DeploymentJob.attempts + 1,
                    started_at=func.coalesce(DeploymentJob.started_at, now),
                    stage="starting",
                )
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
            job = session.get(DeploymentJob, job_id)
            if not claimed:
                busy = job is not None and job.status == "running"
                return None, "busy" if busy else "done"
            if job is not None and job.attempts > self.max_attempts:
                job.status, job.stage, job.finished_at = "failed", "failed", utcnow()
                job.error = (
                    f"gave up after {self.max_attempts} attempts: "
                    "the worker running this job stopped each time (killed or lost)"
                )
                session.commit()
                return None, "done"
            return job, "done"

    def _heartbeat(self, job_id: int, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            try:
                with self.session_factory() as session:
                    session.execute(
                        update(DeploymentJob)
                        .where(DeploymentJob.id == job_id, DeploymentJob.owner == self.owner)
                        .values(heartbeat_at=db_now(session))
                    )
                    session.commit()
            except Exception:  # a missed beat is retried; the job itself must go on
                logger.warning("heartbeat of job %s failed", job_id, exc_info=True)

    def _run(self, job_id: int) -> RunOutcome:
        job, outcome = self._claim(job_id)
        if job is None:
            return outcome
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, stop_beat), daemon=True)
        beat.start()
        try:
            self._execute(job)
        finally:
            stop_beat.set()
            beat.join(self.heartbeat_s + 1)
        return "done"

    def _execute(self, job: DeploymentJob) -> None:
        job_id = job.id
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
            if job.attempts > 1:
                ctx.log(f"taken over after the previous owner stopped (attempt {job.attempts})")
            ctx.log(f"started {job.kind}" + (f" for product {job.product_id}" if job.product_id else ""))
            for prepare in self.before_job:
                prepare(job.kind)
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
            # Write the end only while this process still owns the job (nobody took it over meanwhile).
            if row is not None and row.owner == self.owner:
                row.status, row.error, row.result, row.finished_at = status, error[:5000], result, utcnow()
                session.commit()
        for callback in self.on_finished:
            callback(job.kind, status)
