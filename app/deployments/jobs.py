"""The deployment kinds: each module loads its artifacts at startup, runs its job, reports artifact state."""

from __future__ import annotations

import logging
from types import ModuleType

from sqlalchemy.orm import Session

from app.core.artifacts import ArtifactState
from app.core.jobs import JobRunner
from app.core.services import Services
from app.db.tables import DeploymentJob
from app.deployments import anomaly_model, manual_index, metrics, search_index

logger = logging.getLogger(__name__)

KINDS: dict[str, ModuleType] = {
    search_index.KIND: search_index,
    anomaly_model.KIND: anomaly_model,
    manual_index.KIND: manual_index,
}


def register_jobs(runner: JobRunner) -> None:
    """Make every implemented deployment kind runnable."""
    for kind, module in KINDS.items():
        if module.AVAILABLE:
            runner.register(kind, module.run)


def make_runner(services: Services, *, role: str = "server") -> JobRunner:
    """The job runner the settings ask for, with every kind registered.

    Without JOB_BROKER_URL jobs run in this process's threads. With it, a server publishes them to the queue,
    and a worker (`role="worker"`) runs what the queue delivers, reloading the kind's current artifacts
    before each job so that it builds on what the servers serve.
    """
    settings = services.settings
    broker = None
    if settings.job_broker_url and role == "server":
        from app.deployments.queue import CeleryBroker

        broker = CeleryBroker(settings)
    runner = JobRunner(
        services.session_factory,
        services=services,
        workers=settings.job_workers,
        role=role,
        broker=broker,
        heartbeat_s=settings.job_heartbeat_s,
        stale_after_s=settings.job_stale_after_s,
        max_attempts=settings.job_max_attempts,
    )
    register_jobs(runner)
    if role == "worker":
        runner.before_job.append(lambda kind: reload_kind(services, kind))
    return runner


def reload_kind(services: Services, kind: str) -> None:
    """Load one kind's current artifacts again (after another process built them)."""
    module = KINDS.get(kind)
    if module is None:
        return
    try:
        getattr(module, "reload", module.load)(services)
    except Exception as exc:
        logger.exception("reloading %s artifacts failed", kind)
        services.models.set_error(kind, str(exc))
    else:
        metrics.note_loaded(services, kind)


def load_artifacts(services: Services) -> None:
    """Load every kind's built artifacts; a failure is recorded in the registry, never fatal."""
    for kind, module in KINDS.items():
        try:
            module.load(services)
        except Exception as exc:  # a broken artifact must not keep the server from starting
            logger.exception("loading %s artifacts failed", kind)
            services.models.set_error(kind, str(exc))
        else:
            metrics.note_loaded(services, kind)


def build_now(services: Services, kinds: list[str] | None = None) -> dict[str, str]:
    """Run the given deployment kinds for all products in this thread; returns kind -> final status.

    Used by `defectlens demo` so a fresh install serves searchable data at once; the jobs are recorded in
    the job history like any other.
    """
    runner = JobRunner(services.session_factory, services=services)
    register_jobs(runner)
    outcome: dict[str, str] = {}
    for kind in kinds or list(KINDS):
        if kind not in runner.handlers:
            outcome[kind] = "unavailable"
            continue
        with services.session_factory() as session:
            job = DeploymentJob(kind=kind, product_id=None, status="queued", stage="queued")
            session.add(job)
            session.commit()
            job_id = job.id
        runner.run_inline(job_id)
        with services.session_factory() as session:
            row = session.get(DeploymentJob, job_id)
            outcome[kind] = row.status if row is not None else "missing"
    return outcome


def artifact_states(session: Session, services: Services) -> list[ArtifactState]:
    """Every kind's per-product artifact state, for the dashboard and the deploy screens."""
    states: list[ArtifactState] = []
    for module in KINDS.values():
        states.extend(module.states(session, services))
    return states
