"""Inspections: the uploaded photo and its record; the files each step derives from it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.core.config import Settings
from app.core.errors import InvalidInputError, NotFoundError, ValidationFailedError
from app.core.images import DecodedPhotos, check_image, open_rgb
from app.core.services import Services
from app.core.storage import ObjectStorage
from app.db.tables import Inspection, InspectionView, User
from app.inspection import outcome as outcome_service
from app.inspection import views as views_service
from app.inspection.schemas import InspectionEventRead, InspectionRead, InspectionViewRead

# Files a step may derive from an inspection's photo (heat map, overlay, ...): lowercase names only.
_FILE_NAME = re.compile(r"^[a-z0-9_]{1,40}\.(png|jpg|json)$")
_CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "json": "application/json"}


class Photo(Protocol):
    """What holds a stored photo and its anomaly result: an inspection, or one view of it."""

    @property
    def id(self) -> int: ...

    @property
    def image_key(self) -> str: ...

    @property
    def checksum(self) -> str: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def anomaly_result(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class UploadedPhoto:
    """One more photo of a several-view upload (the first travels as `data` / `file_name`)."""

    data: bytes
    file_name: str


def create_inspection(
    session: Session,
    *,
    storage: ObjectStorage,
    settings: Settings,
    data: bytes,
    file_name: str,
    product_id: int | None,
    user: User,
    views: Sequence[str] | None = None,
    more: Sequence[UploadedPhoto] = (),
    photos: DecodedPhotos | None = None,
) -> Inspection:
    """Check every photo and view label fully, store them, and create the inspection; commits.

    Bad input (a bad photo, a wrong product, views not matching the files, a duplicate, unknown or
    malformed label, too many views) stores nothing. With `views`, the first photo is the inspection's
    own photo and every photo also gets an `InspectionView` row with its label. With `photos`, the decodes
    the check made are kept there for the steps that follow.
    """
    limits = catalog_service.image_limits(settings)
    uploads = [UploadedPhoto(data, file_name), *more]
    if len(uploads) > settings.max_inspection_views:
        raise ValidationFailedError(
            "views.errors.too_many", count=len(uploads), limit=settings.max_inspection_views
        )
    keep = photos is not None
    images = [check_image(u.data, limits, name=u.file_name, keep_pixels=keep) for u in uploads]
    product = catalog_service.get_product(session, product_id=product_id) if product_id is not None else None
    labels: list[str] = []
    if views or len(uploads) > 1:
        labels = views_service.check_labels(
            settings, labels=list(views or []), file_count=len(uploads), product=product
        )
    folder = f"inspections/{uuid.uuid4().hex}"
    first = images[0]
    row = Inspection(
        user_id=user.id,
        product_id=product_id,
        status="uploaded",
        image_key=f"{folder}/original.{first.extension}",
        original_name=file_name[:255],
        content_type=first.content_type,
        size_bytes=len(first.data),
        width=first.width,
        height=first.height,
        checksum=first.checksum,
        timings_ms={},
    )
    session.add(row)
    session.flush()
    objects = [(row.image_key, first)]
    # no labels (one unlabelled photo): no view rows
    for position, (label, upload, image) in enumerate(zip(labels, uploads, images, strict=False)):
        # The first view is the inspection's own photo; the others get a folder each for their files.
        key = row.image_key if position == 0 else f"{folder}/views/{label}/original.{image.extension}"
        if position > 0:
            objects.append((key, image))
        session.add(
            InspectionView(
                inspection_id=row.id,
                position=position,
                view=label,
                image_key=key,
                original_name=upload.file_name[:255],
                content_type=image.content_type,
                size_bytes=len(image.data),
                width=image.width,
                height=image.height,
                checksum=image.checksum,
            )
        )
    stored: list[str] = []
    try:
        session.flush()
        for key, image in objects:
            storage.put(key, image.data, image.content_type)
            stored.append(key)
        session.commit()
    except Exception:
        session.rollback()
        for key in stored:
            storage.delete(key)
        raise
    if photos is not None:
        for image in images:
            if image.pixels is not None and max(image.pixels.size) <= settings.max_decode_side:
                photos.put(image.checksum, image.pixels)
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


def load_image(storage: ObjectStorage, inspection: Photo) -> bytes:
    """The inspection photo's bytes."""
    return storage.get(inspection.image_key)


def load_rgb(storage: ObjectStorage, inspection: Photo, *, max_side: int = 2048) -> Image.Image:
    """The inspection (or view) photo decoded to RGB (fully checked at upload), reduced to `max_side`."""
    return open_rgb(storage.get(inspection.image_key), max_side=max_side)


def photo_rgb(services: Services, photo: Photo) -> Image.Image:
    """The photo as the steps see it (`load_rgb` at MAX_DECODE_SIDE), taken from the photos decoded last
    when it is there (the upload's check or the previous step decoded it)."""
    max_side = services.settings.max_decode_side
    kept = services.photos
    if kept is not None:
        found = kept.get(photo.checksum, max_side=max_side)
        if found is not None:
            return found
    image = load_rgb(services.storage, photo, max_side=max_side)
    if kept is not None and image.size == (photo.width, photo.height):  # a whole decode, not a reduced one
        kept.put(photo.checksum, image.copy())
    return image


def get_view(session: Session, *, inspection_id: int, label: str) -> tuple[Inspection, InspectionView]:
    """The inspection and its view with this label, or 404."""
    inspection = get_inspection(session, inspection_id=inspection_id)
    view = views_service.by_label(inspection.views, label)
    if view is None:
        raise NotFoundError("views.errors.view_not_found", id=inspection_id, label=label[:40])
    return inspection, view


def view_image_url(inspection_id: int, label: str) -> str:
    """The API URL of one view's photo."""
    return f"/api/v1/inspections/{inspection_id}/views/{label}/image"


def view_file_url(inspection_id: int, label: str, name: str) -> str:
    """The API URL of a file derived from one view's photo."""
    return f"/api/v1/inspections/{inspection_id}/views/{label}/files/{name}"


def view_read(inspection: Inspection, view: InspectionView) -> InspectionViewRead:
    """The API view of one labelled photo with its own search and anomaly results."""
    anomaly = {k: v for k, v in (view.anomaly_result or {}).items() if k != "render"} or None
    search = view.search_result
    return InspectionViewRead(
        view=view.view,
        position=view.position,
        image_url=view_image_url(inspection.id, view.view),
        original_name=view.original_name,
        content_type=view.content_type,
        size_bytes=view.size_bytes,
        width=view.width,
        height=view.height,
        search=search,
        verdict=(search or {}).get("verdict"),
        anomaly=anomaly,
        anomaly_score=view.anomaly_score,
        is_anomaly=view.is_anomaly,
        bank=(view.anomaly_result or {}).get("bank"),
    )


def view_cards(inspection: Inspection) -> list[dict[str, Any]]:
    """What the pages show of each view, side by side: photo or overlay, answer, the bank that gave it."""
    cards = []
    for view in inspection.views:
        result = view.anomaly_result or {}
        verdict = (view.search_result or {}).get("verdict") or {}
        defect = verdict.get("defect_type") if isinstance(verdict.get("defect_type"), dict) else {}
        overlay = result.get("overlay_url")
        cards.append(
            {
                "label": view.view,
                "image_url": view_image_url(inspection.id, view.view),
                "overlay_url": overlay
                if isinstance(overlay, str) and overlay.startswith("/api/v1/")
                else None,
                "is_anomaly": view.is_anomaly,
                "score": result.get("score"),
                "threshold": result.get("threshold"),
                "bank": result.get("bank") if result.get("bank") in ("view", "product") else None,
                "defect_type": str((defect or {}).get("name") or ""),
                "regions": len(result.get("regions") or []),
            }
        )
    return cards


def file_key(inspection: Photo, name: str) -> str:
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
        views=[view_read(inspection, v) for v in inspection.views],
    )
