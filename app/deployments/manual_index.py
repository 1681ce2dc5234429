"""The `manual_index` deployment: startup loading, the rebuild job, and per-product artifact state."""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.core.artifacts import ArtifactState
from app.core.jobs import JobContext, JobResult
from app.core.services import Services
from app.db.tables import Artifact, DeploymentJob, Manual
from app.manuals import indexing

logger = logging.getLogger(__name__)

KIND = indexing.KIND
AVAILABLE = True


def load(services: Services) -> None:
    """Load the text embedder (and a reranker if present) and the saved manual indexes.

    Reads files only: nothing is embedded here. A saved index built with another text embedder is
    left out and reported stale until a rebuild. The generators are loaded by the application's start-up.
    """
    with services.session_factory() as session:
        # A manual left "indexing" by a stopped server or worker is indexed by nothing now: show it as
        # pending so the admin sees it needs indexing. One that another live process is indexing stays.
        indexing.reset_abandoned(session, stale_after_s=services.settings.job_stale_after_s)
    library = indexing.load_saved_indexes(services, indexing.load_engines(services))
    services.models.swap(indexing.MANUALS, library)


def reload(services: Services) -> None:
    """Load the manual index versions recorded since (by a job worker or another server); no engine reload."""
    if services.models.get(indexing.MANUALS) is None:
        load(services)
    else:
        indexing.refresh(services)


def run(ctx: JobContext) -> JobResult | None:
    """Index one manual (params.manual_id, queued by an upload), one product, or every product."""
    services = ctx.services
    raw_id = ctx.params.get("manual_id")
    manual_id = int(raw_id) if isinstance(raw_id, int | str) else None
    with ctx.session_factory() as session:
        if manual_id is not None:
            ctx.log(f"indexing manual {manual_id}")
            chunks = indexing.index_manual(
                session, services=services, manual_id=manual_id, job_id=ctx.job_id, progress=ctx.progress
            )
            ctx.log(f"manual {manual_id}: {chunks} chunks")
            return {"manual_id": manual_id, "chunks": chunks}
        if ctx.product_id is not None:
            product_ids = [ctx.product_id]
        else:
            with_manuals = set(session.scalars(select(Manual.product_id).distinct()))
            indexed = set(indexing.current_library(services).indexes)
            product_ids = sorted(with_manuals | indexed)
        totals = {"products": 0, "manuals": 0, "failed": 0, "chunks": 0}
        share = 1.0 / max(1, len(product_ids))
        for i, product_id in enumerate(product_ids):
            progress = _scaled(ctx, base=i * share, share=share, label=f"product {product_id}")
            counts = indexing.rebuild_product(
                session, services=services, product_id=product_id, job_id=ctx.job_id, progress=progress
            )
            ctx.log(
                f"product {product_id}: {counts['manuals']} manuals, {counts['chunks']} chunks"
                + (f", {counts['failed']} unreadable" if counts["failed"] else "")
            )
            totals["products"] += 1
            for key in ("manuals", "failed", "chunks"):
                totals[key] += counts[key]
        return dict(totals)


def _scaled(ctx: JobContext, *, base: float, share: float, label: str) -> indexing.Progress:
    """A progress callback mapping one product's 0-1 onto its share of the whole job."""

    def report(fraction: float, stage: str) -> None:
        ctx.progress(base + fraction * share, f"{label}: {stage}")

    return report


def states(session: Session, services: Services) -> list[ArtifactState]:
    """Per active product: current, stale (manual not indexed, text embedder changed), missing, building."""
    library = services.models.get(indexing.MANUALS)
    active_jobs = list(
        session.scalars(
            select(DeploymentJob).where(
                DeploymentJob.kind == KIND, DeploymentJob.status.in_(("queued", "running"))
            )
        )
    )
    # only each product's latest job: every manual upload adds a job, so the history grows without bound
    latest_ids = (
        select(func.max(DeploymentJob.id))
        .where(DeploymentJob.kind == KIND)
        .group_by(DeploymentJob.product_id)
    )
    last_jobs = {
        job.product_id: job
        for job in session.scalars(select(DeploymentJob).where(DeploymentJob.id.in_(latest_ids)))
    }
    out: list[ArtifactState] = []
    for product in catalog_service.list_products(session):
        manuals = list(session.scalars(select(Manual).where(Manual.product_id == product.id)))
        artifact = session.scalar(
            select(Artifact)
            .where(Artifact.kind == KIND, Artifact.product_id == product.id, Artifact.is_current.is_(True))
            .order_by(Artifact.id.desc())
        )
        index = library.index_for(product.id) if library is not None else None
        detail: dict[str, object] = {
            "manuals": len(manuals),
            "indexed_manuals": sum(1 for m in manuals if m.status == "indexed"),
            "chunks": len(index) if index is not None else 0,
        }
        state = ArtifactState(
            kind=KIND,
            product_id=product.id,
            state="current",
            built_at=artifact.created_at if artifact else None,
            version=artifact.version if artifact else None,
            detail=detail,
        )
        out.append(state)
        if any(j.product_id in (product.id, None) for j in active_jobs):
            state.state = "building"
            continue
        if not manuals:
            state.state, state.reasons = "missing", ["manual_index.reason.no_manual"]
            continue
        last = last_jobs.get(product.id)
        if last is not None and last.status == "failed" and not any(m.status == "indexed" for m in manuals):
            state.state, state.reasons = "failed", ["manual_index.reason.job_failed"]
            state.params["error"] = last.error[:300]
            continue
        if artifact is None and index is None:
            state.state, state.reasons = "missing", ["manual_index.reason.never_built"]
            continue
        reasons: list[str] = []
        not_indexed = [m.file_name for m in manuals if m.status != "indexed"]
        if not_indexed:
            reasons.append("manual_index.reason.manual_not_indexed")
            state.params["manuals"] = ", ".join(not_indexed)
        built_with = (artifact.meta or {}).get("embedder_id") if artifact else None
        current_id = library.embedder.embedder_id if library is not None else None
        if (library is not None and product.id in library.mismatched) or (
            built_with and current_id and built_with != current_id
        ):
            reasons.append("manual_index.reason.text_embedder_changed")
            state.params["built_with"] = built_with or ""
            state.params["current"] = current_id or ""
        if reasons:
            state.state, state.reasons = "stale", reasons
    return out
