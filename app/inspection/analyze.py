"""/analyze: the whole worker flow in one call for line systems (upload, search, anomaly, guidance)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from app.core.errors import DomainError
from app.core.i18n import translate
from app.core.services import Services
from app.db.tables import User
from app.inspection import service as inspection_service
from app.inspection.anomaly import service as anomaly_service
from app.inspection.guidance import service as guidance_service
from app.inspection.guidance.schemas import GuidanceCreate
from app.inspection.search import service as search_service
from app.integrations import service as integrations_service


def _problem(exc: DomainError) -> dict[str, Any]:
    return {
        "detail": translate(exc.message_key, **exc.params),
        "code": exc.message_key,
        "status": exc.status_code,
    }


def analyze(
    session: Session,
    services: Services,
    *,
    data: bytes,
    file_name: str,
    product_id: int | None,
    views: Sequence[str] | None = None,
    more: Sequence[inspection_service.UploadedPhoto] = (),
    top_k: int,
    generator: str | None,
    user: User,
) -> dict[str, Any]:
    """Run every step; a bad photo or wrong id fails the call, a step that cannot run is reported per step.

    A step that cannot run (no search gallery yet, no memory bank for the product, no product known) is
    null in the answer with its reason under `errors`, and the later steps still run on what exists, so a
    line system always gets the inspection record and whatever could be worked out.
    """
    if services.inference is not None:
        services.inference.admit("analyze")  # a full queue refuses before anything is stored
    inspection = inspection_service.create_inspection(
        session,
        services.storage,
        services.settings,
        data=data,
        file_name=file_name,
        product_id=product_id,
        user=user,
        views=views,
        more=more,
    )
    errors: dict[str, dict[str, Any]] = {}
    search: dict[str, Any] | None = None
    anomaly: dict[str, Any] | None = None
    guidance: dict[str, Any] | None = None
    try:
        search = search_service.search_inspection(
            session,
            services=services,
            inspection_id=inspection.id,
            top_k=top_k,
            product_id=product_id,
            user=user,
        ).model_dump(mode="json")
    except DomainError as exc:
        session.rollback()
        errors["search"] = _problem(exc)
    try:
        anomaly = anomaly_service.check_inspection(
            session,
            services,
            inspection_id=inspection.id,
            product_id=product_id,
            reference_image_id=None,
            user=user,
        ).model_dump(mode="json")
    except DomainError as exc:
        session.rollback()
        errors["anomaly"] = _problem(exc)
    try:
        guidance = guidance_service.generate_guidance(
            session,
            services,
            inspection_id=inspection.id,
            user=user,
            body=GuidanceCreate(generator=generator),
        ).model_dump(mode="json")
    except DomainError as exc:
        session.rollback()
        errors["guidance"] = _problem(exc)
    session.expire_all()
    finished = inspection_service.get_inspection(session, inspection.id)
    if integrations_service.enqueue_event(session, inspection=finished, event="inspection.analyzed"):
        session.commit()
    record = inspection_service.to_read(finished)
    return {
        "inspection": record.model_dump(mode="json"),
        "search": search,
        "anomaly": anomaly,
        "guidance": guidance,
        "errors": errors,
        # several views: each view's photo, search and anomaly answer (empty for one unlabelled photo)
        "views": record.model_dump(mode="json")["views"],
    }
