"""The deployment kinds: each module loads its artifacts at startup, runs its job, reports artifact state."""

from __future__ import annotations

import logging
from types import ModuleType

from sqlalchemy.orm import Session

from app.core.services import Services
from app.db.tables import DeploymentJob
from app.deployments import anomaly_model, manual_index, search_index
from app.deployments.runner import JobRunner
from app.deployments.status import ArtifactState

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


def load_artifacts(services: Services) -> None:
    """Load every kind's built artifacts; a failure is recorded in the registry, never fatal."""
    for kind, module in KINDS.items():
        try:
            module.load(services)
        except Exception as exc:  # a broken artifact must not keep the server from starting
            logger.exception("loading %s artifacts failed", kind)
            services.models.set_error(kind, str(exc))


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
