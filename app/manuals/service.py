"""Manual documents: checked PDF/DOCX upload into the object store, listing, structure, deletion."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.catalog.service import get_product
from app.core.audit import record_audit
from app.core.config import Settings
from app.core.errors import (
    ConflictError,
    DomainError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from app.core.jobs import JobRunner
from app.core.services import Services
from app.core.storage import ObjectStorage
from app.db.tables import DeploymentJob, Manual, ManualChunk
from app.manuals import indexing
from app.manuals.document import DOCX_MEDIA_TYPE, Limits, ManualFileError, check_upload

logger = logging.getLogger(__name__)

_UPLOAD_ERRORS: dict[str, tuple[type[DomainError], str]] = {
    "not_manual": (UnsupportedMediaError, "errors.manual_not_manual"),
    "encrypted": (InvalidInputError, "errors.manual_encrypted"),
    "too_many_pages": (PayloadTooLargeError, "errors.manual_too_many_pages"),
    "too_large": (PayloadTooLargeError, "errors.manual_too_large"),
    "zip_bomb": (PayloadTooLargeError, "errors.manual_zip_bomb"),
}
MEDIA_TYPES = {"pdf": "application/pdf", "docx": DOCX_MEDIA_TYPE}


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^\w.\-]+", "_", name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1], flags=re.UNICODE).strip(
        "._"
    )
    return (stem or "manual")[:120]


def upload_manual(
    session: Session,
    *,
    storage: ObjectStorage,
    settings: Settings,
    product_id: int,
    file_name: str,
    data: bytes,
    actor_id: int | None,
) -> Manual:
    """Check the file (PDF or DOCX by content, size, page count, ZIP limits), store it, record it pending.

    Only cheap structural checks run here; the text is read later, by the indexing job, in a bounded
    process (a hostile file then fails its manual instead of holding the request).
    """
    product = get_product(session, product_id=product_id)
    try:
        kind, pages = check_upload(
            data, Limits(max_bytes=settings.max_manual_bytes, max_pages=settings.max_manual_pages)
        )
    except ManualFileError as exc:
        error_class, key = _UPLOAD_ERRORS.get(exc.code, (InvalidInputError, "errors.manual_not_manual"))
        raise error_class(
            key, pages=settings.max_manual_pages, limit_mb=settings.max_manual_bytes // 2**20
        ) from exc
    name = _safe_name(file_name)
    stem = re.sub(r"\.(pdf|docx)$", "", name, flags=re.IGNORECASE) or "manual"
    name = f"{stem}.{kind}"
    # A fresh uuid per upload: two uploads with the same file name never overwrite each other.
    key = f"manuals/{product.id}/{uuid.uuid4().hex}_{re.sub(r'[^A-Za-z0-9._-]', '_', name)}"
    manual = Manual(
        product_id=product.id,
        file_name=name,
        object_key=key,
        size_bytes=len(data),
        page_count=pages,
        checksum=hashlib.sha256(data).hexdigest(),
        status="pending",
        created_by=actor_id,
    )
    storage.put(key, data, MEDIA_TYPES[kind])
    try:
        session.add(manual)
        session.flush()
        record_audit(
            session,
            user_id=actor_id,
            action="create",
            entity="manual",
            entity_id=manual.id,
            detail={"file_name": name, "product_id": product.id},
        )
        session.commit()
    except Exception:
        session.rollback()
        storage.delete(key)
        raise
    return manual


def list_manuals(session: Session, *, product_id: int) -> list[Manual]:
    """A product's manuals, newest first."""
    get_product(session, product_id=product_id)
    return list(
        session.scalars(select(Manual).where(Manual.product_id == product_id).order_by(Manual.id.desc()))
    )


def get_manual(session: Session, *, manual_id: int) -> Manual:
    """A manual or NotFoundError."""
    manual = session.get(Manual, manual_id)
    if manual is None:
        raise NotFoundError("errors.manual_not_found", id=manual_id)
    return manual


def queue_indexing(
    session: Session, *, runner: JobRunner, manual: Manual, actor_id: int | None
) -> int | None:
    """Queue a `manual_index` job for one manual (runs in the background); returns the job id.

    None when this server cannot index (the kind is not registered): the manual then stays pending
    and a later product-wide `manual_index` deployment picks it up.
    """
    if indexing.KIND not in runner.handlers:
        return None
    job = DeploymentJob(
        kind=indexing.KIND,
        product_id=manual.product_id,
        status="queued",
        stage="queued",
        params={"manual_id": manual.id},
        created_by=actor_id,
    )
    session.add(job)
    session.commit()
    runner.submit(job.id)
    return job.id


def reindex_manual(
    session: Session, *, runner: JobRunner, manual_id: int, actor_id: int | None
) -> tuple[Manual, int]:
    """Queue the manual for indexing again; 409 while it is being indexed or this server cannot index.

    A manual left "indexing" by an indexer that no longer runs (its job failed or its process died) can be
    queued again.
    """
    manual = get_manual(session, manual_id=manual_id)
    busy = session.scalar(
        select(DeploymentJob.id).where(
            DeploymentJob.kind == indexing.KIND,
            DeploymentJob.status.in_(("queued", "running")),
            DeploymentJob.product_id == manual.product_id,
        )
    )
    if busy is not None or indexing.indexer_is_live(session, manual, stale_after_s=runner.stale_after_s):
        raise ConflictError("errors.job_already_running", id=busy or manual.index_job_id or 0)
    manual.status, manual.error = "pending", ""
    job_id = queue_indexing(session, runner=runner, manual=manual, actor_id=actor_id)
    if job_id is None:
        raise ConflictError("errors.job_kind_unavailable", kind=indexing.KIND)
    return manual, job_id


def chunk_counts(session: Session, *, product_id: int) -> dict[int, int]:
    """Chunk rows per manual of a product (for the admin list)."""
    rows = session.execute(
        select(ManualChunk.manual_id, func.count())
        .where(ManualChunk.product_id == product_id)
        .group_by(ManualChunk.manual_id)
    )
    return {int(manual_id): int(count) for manual_id, count in rows}


def delete_manual(
    session: Session, *, storage: ObjectStorage, services: Services, manual_id: int, actor_id: int | None
) -> None:
    """Delete the manual, its chunks and its index entries, then its object."""
    manual = get_manual(session, manual_id=manual_id)
    key = manual.object_key
    record_audit(session, user_id=actor_id, action="delete", entity="manual", entity_id=manual_id)
    indexing.delete_manual(session, services=services, manual=manual)
    try:
        storage.delete(key)
    except Exception:
        logger.exception("could not delete object of manual %s; it is now an orphan", manual_id)


def list_manuals_for_admin(session: Session, *, product_id: int | None) -> list[Manual]:
    """Manuals of one product or of every product, newest first (the admin manuals screen)."""
    query = select(Manual).order_by(Manual.id.desc())
    if product_id is not None:
        get_product(session, product_id=product_id)
        query = query.where(Manual.product_id == product_id)
    return list(session.scalars(query))
