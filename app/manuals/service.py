"""Manual documents: checked PDF upload into the object store, listing, download and deletion."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog.service import get_product
from app.core.audit import record_audit
from app.core.config import Settings
from app.core.errors import InvalidInputError, NotFoundError, PayloadTooLargeError, UnsupportedMediaError
from app.core.storage import ObjectStorage
from app.db.tables import Manual
from app.ml.pdf_text import PdfError, parse_pdf

logger = logging.getLogger(__name__)

_PDF_ERRORS = {
    "not_pdf": (UnsupportedMediaError, "errors.manual_not_pdf"),
    "encrypted": (InvalidInputError, "errors.manual_encrypted"),
    "too_many_pages": (PayloadTooLargeError, "errors.manual_too_many_pages"),
    "too_large": (PayloadTooLargeError, "errors.manual_too_large"),
    "no_text": (InvalidInputError, "errors.manual_no_text"),
}


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^\w.\-]+", "_", name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1], flags=re.UNICODE).strip(
        "._"
    )
    return (stem or "manual")[:120]


def upload_manual(
    session: Session,
    storage: ObjectStorage,
    settings: Settings,
    *,
    product_id: int,
    file_name: str,
    data: bytes,
    actor_id: int | None,
) -> Manual:
    """Check that the file is a readable PDF with text within limits, store it, and record it as pending."""
    product = get_product(session, product_id)
    try:
        parsed = parse_pdf(data, max_pages=settings.max_manual_pages, max_bytes=settings.max_manual_bytes)
    except PdfError as exc:
        error_class, key = _PDF_ERRORS.get(exc.code, (InvalidInputError, "errors.manual_not_pdf"))
        raise error_class(
            key, pages=settings.max_manual_pages, limit_mb=settings.max_manual_bytes // 2**20
        ) from exc
    name = _safe_name(file_name)
    if not name.lower().endswith(".pdf"):
        name += ".pdf"
    # A fresh uuid per upload: two uploads with the same file name never overwrite each other.
    key = f"manuals/{product.id}/{uuid.uuid4().hex}_{re.sub(r'[^A-Za-z0-9._-]', '_', name)}"
    manual = Manual(
        product_id=product.id,
        file_name=name,
        object_key=key,
        size_bytes=len(data),
        page_count=parsed.page_count,
        checksum=hashlib.sha256(data).hexdigest(),
        status="pending",
        created_by=actor_id,
    )
    storage.put(key, data, "application/pdf")
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
    get_product(session, product_id)
    return list(
        session.scalars(select(Manual).where(Manual.product_id == product_id).order_by(Manual.id.desc()))
    )


def get_manual(session: Session, manual_id: int) -> Manual:
    """A manual or NotFoundError."""
    manual = session.get(Manual, manual_id)
    if manual is None:
        raise NotFoundError("errors.manual_not_found", id=manual_id)
    return manual


def delete_manual(session: Session, storage: ObjectStorage, *, manual_id: int, actor_id: int | None) -> None:
    """Delete the manual (its chunks go with it), then its object."""
    manual = get_manual(session, manual_id)
    key = manual.object_key
    session.delete(manual)
    record_audit(session, user_id=actor_id, action="delete", entity="manual", entity_id=manual_id)
    session.commit()
    try:
        storage.delete(key)
    except Exception:
        logger.exception("could not delete object of manual %s; it is now an orphan", manual_id)


def list_manuals_for_admin(session: Session, *, product_id: int | None) -> list[Manual]:
    """Manuals of one product or of every product, newest first (the admin manuals screen)."""
    query = select(Manual).order_by(Manual.id.desc())
    if product_id is not None:
        get_product(session, product_id)
        query = query.where(Manual.product_id == product_id)
    return list(session.scalars(query))
