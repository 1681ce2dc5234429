"""Creating, listing and cancelling deployment jobs."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.audit import record_audit
from app.core.errors import ConflictError, NotFoundError
from app.db.base import utcnow
from app.db.tables import DeploymentJob, Product
from app.deployments.runner import JobRunner

ACTIVE = ("queued", "running")


def create_job(
    session: Session, *, runner: JobRunner, kind: str, product_id: int | None, actor_id: int | None
) -> DeploymentJob:
    """Queue a job unless the same kind is already queued or running for that scope."""
    if kind not in runner.handlers:
        raise ConflictError("errors.job_kind_unavailable", kind=kind)
    if product_id is not None and session.get(Product, product_id) is None:
        raise NotFoundError("errors.product_not_found", id=product_id)
    existing = session.scalar(
        select(DeploymentJob).where(
            DeploymentJob.kind == kind,
            DeploymentJob.status.in_(ACTIVE),
            (DeploymentJob.product_id == product_id)
            if product_id is not None
            else DeploymentJob.product_id.is_(None),
        )
    )
    if existing is not None:
        raise ConflictError("errors.job_already_running", id=existing.id)
    job = DeploymentJob(
        kind=kind, product_id=product_id, status="queued", created_by=actor_id, stage="queued"
    )
    session.add(job)
    session.flush()
    record_audit(
        session,
        user_id=actor_id,
        action="start",
        entity="deployment",
        entity_id=job.id,
        detail={"kind": kind, "product_id": product_id},
    )
    session.commit()
    runner.submit(job.id)
    return job


def get_job(session: Session, job_id: int) -> DeploymentJob:
    """A job or NotFoundError."""
    job = session.get(DeploymentJob, job_id)
    if job is None:
        raise NotFoundError("errors.job_not_found", id=job_id)
    return job


def list_jobs(
    session: Session, *, kind: str | None, product_id: int | None, page: int, page_size: int
) -> tuple[list[DeploymentJob], int]:
    """Jobs newest first, filtered by kind and product."""
    query = select(DeploymentJob)
    if kind:
        query = query.where(DeploymentJob.kind == kind)
    if product_id is not None:
        query = query.where(DeploymentJob.product_id == product_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(DeploymentJob.id.desc()).offset((page - 1) * page_size).limit(page_size)
    )
    return list(rows), total


def cancel_job(session: Session, *, job_id: int, actor_id: int | None) -> DeploymentJob:
    """Cancel a queued job at once, or ask a running one to stop at its next checkpoint."""
    job = get_job(session, job_id)
    if job.status not in ACTIVE:
        raise ConflictError("errors.job_not_active", id=job_id, status=job.status)
    job.is_cancel_requested = True
    if job.status == "queued":
        job.status, job.stage, job.finished_at = "cancelled", "cancelled", utcnow()
    record_audit(session, user_id=actor_id, action="cancel", entity="deployment", entity_id=job.id)
    session.commit()
    return job
