"""Deployment jobs on a real queue: Celery over RabbitMQ (recommended) or Redis.

The server publishes `defectlens.run_job(job_id)` to the queue `{JOB_QUEUE_PREFIX}.{kind}`;
`defectlens worker` processes consume the queues they are given (GPU workers can take `anomaly_model` and
`search_index`, CPU workers `manual_index`). Settings that survive faults: a message is acknowledged only
after the job ended (`acks_late`), requeued when the worker process dies (`reject_on_worker_lost`), and a
worker takes one message at a time (prefetch 1). Progress, stage, log and result stay in the database, so
pages and SSE do not change; the job row's owner and heartbeat decide when another worker may take a dead
worker's job over (see app/core/jobs.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery, Task

from app.core.config import Settings
from app.core.jobs import JobRunner

logger = logging.getLogger(__name__)

TASK_NAME = "defectlens.run_job"


def queue_name(settings: Settings, kind: str) -> str:
    """The queue that carries one deployment kind's jobs."""
    return f"{settings.job_queue_prefix}.{kind}"


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for long, crash-safe jobs (never the process-global default app)."""
    app = Celery("defectlens", broker=settings.job_broker_url, set_as_current=False)
    transport: dict[str, Any] = {}
    if settings.job_broker_url.startswith(("redis://", "rediss://")):
        # Redis has no connection-bound acks: an unacknowledged message comes back after the visibility
        # timeout, so keep it a few stale periods, not Celery's default hour.
        transport = {
            "visibility_timeout": max(60, int(settings.job_stale_after_s * 4)),
            "unacked_restore_interval": 10,
        }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        broker_transport_options=transport,
    )
    return app


class CeleryBroker:
    """Publishes jobs for the workers (used by the server's JobRunner)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_celery(settings)

    def publish(self, job_id: int, kind: str) -> None:
        """Send the job to its kind's queue; raises when the broker cannot be reached."""
        self.app.send_task(
            TASK_NAME,
            args=[job_id],
            queue=queue_name(self.settings, kind),
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )


def make_worker_app(settings: Settings, runner: JobRunner) -> Celery:
    """The worker side: one task that runs a delivered job through `runner` (models loaded once)."""
    app = make_celery(settings)

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run_job(task: Task, job_id: int) -> None:
        if runner.run_delivered(job_id) == "busy":
            # Another process still holds the job with a fresh heartbeat: look again once it may be stale.
            raise task.retry(countdown=max(1.0, settings.job_heartbeat_s), max_retries=None)

    return app


def run_worker(settings: Settings, runner: JobRunner, *, kinds: Sequence[str], concurrency: int) -> None:
    """Consume the kinds' queues until stopped (the `defectlens worker` command)."""
    app = make_worker_app(settings, runner)
    queues = ",".join(queue_name(settings, kind) for kind in kinds)
    logger.info("worker %s consuming %s", runner.owner, queues)
    app.worker_main(
        [
            "worker",
            f"--queues={queues}",
            f"--concurrency={concurrency}",
            "--pool=solo" if concurrency == 1 else "--pool=threads",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
            f"--hostname={runner.owner.replace(':', '-')}",
        ]
    )
