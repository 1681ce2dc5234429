"""Inspections: the uploaded photo and its record; the files each step derives from it."""

from __future__ import annotations

import re
import uuid

from PIL import Image
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.core.config import Settings
from app.core.errors import InvalidInputError, NotFoundError
from app.core.images import check_image, open_rgb
from app.core.storage import ObjectStorage
from app.db.tables import Inspection, User
from app.inspection import outcome as outcome_service
from app.inspection.schemas import InspectionEventRead, InspectionRead

# Files a step may derive from an inspection's photo (heat map, overlay, ...): lowercase names only.
_FILE_NAME = re.compile(r"^[a-z0-9_]{1,40}\.(png|jpg|json)$")
_CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "json": "application/json"}


def create_inspection(
    session: Session,
    *,
    storage: ObjectStorage,
    settings: Settings,
    data: bytes,
    file_name: str,
    product_id: int | None,
    user: User,
) -> Inspection:
    """Check the photo fully, store it, and create the inspection; commits. Bad input stores nothing."""
    image = check_image(data, catalog_service.image_limits(settings), name=file_name)
    if product_id is not None:
        catalog_service.get_product(session, product_id=product_id)  # 404 for a wrong id
    folder = f"inspections/{uuid.uuid4().hex}"
    row = Inspection(
        user_id=user.id,
        product_id=product_id,
        status="uploaded",
        image_key=f"{folder}/original.{image.extension}",
        original_name=file_name[:255],
        content_type=image.content_type,
        size_bytes=len(image.data),
        width=image.width,
        height=image.height,
        checksum=image.checksum,
        timings_ms={},
    )
    session.add(row)
    session.flush()
    storage.put(row.image_key, image.data, image.content_type)
    try:
        session.commit()
    except Exception:
        session.rollback()
        storage.delete(row.image_key)
        raise
    return row


def get_inspection(session: Session, *, inspection_id: int) -> Inspection:
    """The inspection, or 404."""
    row = session.get(Inspection, inspection_id)
    if row is None:
        raise NotFoundError("errors.inspection_not_found", id=inspection_id)
    return row


def events(session: Session, *, inspection_id: int) -> list[InspectionEventRead]:
    """The inspection's history, oldest first (404 for a wrong id)."""
    get_inspection(session, inspection_id=inspection_id)
    return [
        InspectionEventRead(
            kind=e.kind,
            at=e.at,
            user=(e.user.display_name or e.user.username) if e.user else None,
            data=e.data or {},
        )
        for e in outcome_service.list_events(session, inspection_id=inspection_id)
    ]


def reopen_inspection(session: Session, *, inspection_id: int, user: User) -> Inspection:
    """An admin unlocks a completed inspection; commits."""
    return outcome_service.reopen(
        session, inspection=get_inspection(session, inspection_id=inspection_id), user=user
    )


def load_image(storage: ObjectStorage, inspection: Inspection) -> bytes:
    """The inspection photo's bytes."""
    return storage.get(inspection.image_key)


def load_rgb(storage: ObjectStorage, inspection: Inspection, *, max_side: int = 2048) -> Image.Image:
    """The inspection photo decoded to RGB (it was fully checked at upload), reduced to `max_side`."""
    return open_rgb(storage.get(inspection.image_key), max_side=max_side)


def file_key(inspection: Inspection, name: str) -> str:
    """The object key of a file derived from the inspection (e.g. "heatmap.png"), beside its photo."""
    if not _FILE_NAME.match(name):
        raise InvalidInputError("errors.bad_file_name", name=name)
    folder = inspection.image_key.rsplit("/", 1)[0]
    return f"{folder}/{name}"


def file_content_type(name: str) -> str:
    """The content type of a derived file, by extension."""
    return _CONTENT_TYPES[name.rsplit(".", 1)[-1]]


def image_url(inspection: Inspection) -> str:
    """The API URL of the inspection photo."""
    return f"/api/v1/inspections/{inspection.id}/image"


def file_url(inspection: Inspection, name: str) -> str:
    """The API URL of a derived file."""
    return f"/api/v1/inspections/{inspection.id}/files/{name}"


def to_read(inspection: Inspection) -> InspectionRead:
    """The API view of an inspection."""
    return InspectionRead(
        id=inspection.id,
        status=inspection.status,
        image_url=image_url(inspection),
        original_name=inspection.original_name,
        content_type=inspection.content_type,
        size_bytes=inspection.size_bytes,
        width=inspection.width,
        height=inspection.height,
        product_id=inspection.product_id,
        user_id=inspection.user_id,
        username=inspection.user.username if inspection.user else None,
        created_at=inspection.created_at,
        updated_at=inspection.updated_at,
        completed_at=inspection.completed_at,
        search=inspection.search_result,
        anomaly=inspection.anomaly_result,
        guidance=inspection.guidance,
        verdict_product_id=inspection.verdict_product_id,
        verdict_defect_type_id=inspection.verdict_defect_type_id,
        verdict_score=inspection.verdict_score,
        is_unknown=inspection.is_unknown,
        chosen_image_id=inspection.chosen_image_id,
        anomaly_score=inspection.anomaly_score,
        is_anomaly=inspection.is_anomaly,
        generator=inspection.generator,
        timings_ms=inspection.timings_ms or {},
        action_taken=inspection.action_taken,
        feedback_score=inspection.feedback_score,
        feedback_at=inspection.feedback_at,
        registered_image_id=inspection.registered_image_id,
        outcome=outcome_service.outcome_read(inspection),
    )
