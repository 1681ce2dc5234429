"""What to watch in /metrics when jobs run on workers and several servers share the work.

Read at each scrape from the database every server and worker shares, so any server's /metrics tells the
whole picture: how many jobs wait per kind (queue depth), how long the oldest has waited or run, how
stale a running job's heartbeat is, and which artifact version is current. Each server adds what it has
loaded itself (`defectlens_artifact_loaded_info`, kept by `note_loaded`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from app.core.services import Services
from app.db.base import db_now
from app.db.tables import Artifact, DeploymentJob
from app.ml.search_runtime import SEARCH

logger = logging.getLogger(__name__)

SEARCH_KIND = "search_index"


class DeploymentCollector:
    """A Prometheus collector over the job and artifact tables (one query each per scrape)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def describe(self) -> list[Any]:
        """No fixed description: keeps registration from calling `collect` (and the database)."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The job queue and artifact gauges; nothing when the database cannot be read."""
        depth = GaugeMetricFamily("defectlens_job_queue_depth", "Jobs waiting to start", labels=["kind"])
        running = GaugeMetricFamily("defectlens_jobs_running", "Jobs running now", labels=["kind"])
        waited = GaugeMetricFamily(
            "defectlens_job_oldest_queued_seconds", "Age of the oldest waiting job", labels=["kind"]
        )
        ran = GaugeMetricFamily(
            "defectlens_job_oldest_running_seconds", "Run time of the longest-running job", labels=["kind"]
        )
        heartbeat = GaugeMetricFamily(
            "defectlens_job_heartbeat_age_seconds",
            "Oldest heartbeat among running jobs (past JOB_STALE_AFTER_S another worker takes over)",
            labels=["kind"],
        )
        current = GaugeMetricFamily(
            "defectlens_artifact_current_info",
            "1 for each artifact version recorded as current",
            labels=["kind", "product", "version"],
        )
        try:
            with self.services.session_factory() as session:
                now = db_now(session)  # the clock the heartbeats were written with
                jobs = session.execute(
                    select(
                        DeploymentJob.kind,
                        DeploymentJob.status,
                        func.count(DeploymentJob.id),
                        func.min(DeploymentJob.created_at),
                        func.min(DeploymentJob.started_at),
                        func.min(DeploymentJob.heartbeat_at),
                    )
                    .where(DeploymentJob.status.in_(("queued", "running")))
                    .group_by(DeploymentJob.kind, DeploymentJob.status)
                ).all()
                artifacts = session.execute(
                    select(Artifact.kind, Artifact.product_id, Artifact.version).where(
                        Artifact.is_current.is_(True)
                    )
                ).all()
        except Exception:  # a scrape must answer even while the database is away
            logger.warning("job metrics unavailable", exc_info=True)
            return
        for kind, status, count, created, started, beat in jobs:
            if status == "queued":
                depth.add_metric([kind], count)
                waited.add_metric([kind], _age(now, created))
            else:
                running.add_metric([kind], count)
                ran.add_metric([kind], _age(now, started))
                heartbeat.add_metric([kind], _age(now, beat))
        for kind, product_id, version in artifacts:
            current.add_metric([kind, _product(product_id), version], 1)
        yield from (depth, running, waited, ran, heartbeat, current)


def _age(now: Any, then: Any) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


def _product(product_id: int | None) -> str:
    return "" if product_id is None else str(product_id)


def register(services: Services) -> None:
    """Add the job and artifact gauges to this process's /metrics."""
    services.metrics.registry.register(DeploymentCollector(services))


def note_loaded(services: Services, kind: str) -> None:
    """Record the versions of `kind` this process serves after loading it (for /metrics)."""
    try:
        with services.session_factory() as session:
            rows = session.execute(
                select(Artifact.product_id, Artifact.version).where(
                    Artifact.kind == kind, Artifact.is_current.is_(True)
                )
            ).all()
    except Exception:
        logger.warning("could not read the current %s versions", kind, exc_info=True)
        return
    versions = {_product(pid): version for pid, version in rows}
    if kind == SEARCH_KIND:
        # The search engine knows its own generation: report that, not what the table says now.
        engine = services.models.get(SEARCH)
        generation = engine.generation if engine is not None else None
        versions = {"": generation} if generation else {}
    services.metrics.note_loaded(kind, versions)
