"""Creating, listing and cancelling deployment jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.artifacts import DEPLOYMENT_KINDS, ArtifactState
from app.core.audit import record_audit
from app.core.errors import ConflictError, NotFoundError
from app.core.jobs import JobRunner
from app.db.base import utcnow
from app.db.tables import Artifact, DeploymentJob, Manual, Product, ReferenceImage

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


# --- Deploy screens ------------------------------------------------------------------------------------

# URL slug of each deploy screen <-> job kind, from the one table of deployment kinds.
SCREEN_KINDS = {k.slug: k.kind for k in DEPLOYMENT_KINDS}
KIND_SCREENS = {k.kind: k.slug for k in DEPLOYMENT_KINDS}


def kind_for_screen(slug: str) -> str:
    """The job kind a deploy screen manages, or NotFoundError."""
    kind = SCREEN_KINDS.get(slug)
    if kind is None:
        raise NotFoundError("errors.not_found")
    return kind


@dataclass
class ProductArtifactRow:
    """One product on a deploy screen: what the job would use and the state of what was built."""

    product: Product
    inputs: int
    state: ArtifactState | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeployScreen:
    """Everything a deploy screen shows."""

    kind: str
    is_available: bool
    rows: list[ProductArtifactRow]
    total_inputs: int
    active_jobs: list[DeploymentJob]
    history: list[DeploymentJob]
    history_total: int
    product_names: dict[int, str]


def _input_counts(session: Session, kind: str) -> dict[int, int]:
    """Per product, what a job of `kind` builds from: defect images, normal images or manuals."""
    if kind == "manual_index":
        query = select(Manual.product_id, func.count()).group_by(Manual.product_id)
    else:
        image_kind = "defect" if kind == "search_index" else "normal"
        query = (
            select(ReferenceImage.product_id, func.count())
            .where(ReferenceImage.kind == image_kind)
            .group_by(ReferenceImage.product_id)
        )
    return dict(session.execute(query).all())


def current_artifact_meta(session: Session, kind: str) -> dict[int, dict[str, Any]]:
    """The meta of each product's current artifact of `kind` (anomaly: calibration, evaluation...)."""
    rows = session.scalars(
        select(Artifact)
        .where(Artifact.kind == kind, Artifact.is_current.is_(True), Artifact.product_id.is_not(None))
        .order_by(Artifact.id)
    )
    return {row.product_id: dict(row.meta or {}) for row in rows if row.product_id is not None}


def deploy_screen(
    session: Session,
    *,
    kind: str,
    states: list[ArtifactState],
    is_available: bool,
    page: int,
    page_size: int = 10,
) -> DeployScreen:
    """The view of one deploy screen: per-product artifact state, running jobs, the job history."""
    products = list(
        session.scalars(select(Product).where(Product.is_active.is_(True)).order_by(Product.code))
    )
    counts = _input_counts(session, kind)
    metas = current_artifact_meta(session, kind)
    by_product = {s.product_id: s for s in states if s.kind == kind}
    rows = [
        ProductArtifactRow(
            product=p,
            inputs=counts.get(p.id, 0),
            state=by_product.get(p.id),
            meta=metas.get(p.id) or dict(by_product[p.id].detail if p.id in by_product else {}),
        )
        for p in products
    ]
    active = list(
        session.scalars(
            select(DeploymentJob)
            .where(DeploymentJob.kind == kind, DeploymentJob.status.in_(ACTIVE))
            .order_by(DeploymentJob.id.desc())
        )
    )
    history, total = list_jobs(session, kind=kind, product_id=None, page=page, page_size=page_size)
    names = product_names(session)
    return DeployScreen(
        kind=kind,
        is_available=is_available,
        rows=rows,
        total_inputs=sum(r.inputs for r in rows),
        active_jobs=active,
        history=history,
        history_total=total,
        product_names=names,
    )


def product_names(session: Session) -> dict[int, str]:
    """Product display names by id (for job tables)."""
    return dict(session.execute(select(Product.id, Product.name)).all())
