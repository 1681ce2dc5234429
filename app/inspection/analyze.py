"""/analyze: the whole worker flow in one call for line systems (upload, search, anomaly, guidance)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from app.core.errors import DomainError
from app.core.i18n import translate
from app.core.services import Services
from app.db.tables import User
from app.inspection import service as inspection_service
from app.inspection.anomaly import service as anomaly_service
from app.inspection.anomaly.schemas import AnomalyRead
from app.inspection.guidance import service as guidance_service
from app.inspection.guidance.schemas import GuidanceCreate, GuidanceRead
from app.inspection.schemas import AnalyzeRead, AnalyzeStep, StepProblem
from app.inspection.search import service as search_service
from app.inspection.search.schemas import SearchRead
from app.integrations import service as integrations_service


def _problem(exc: DomainError) -> StepProblem:
    return StepProblem(
        detail=translate(exc.message_key, **exc.params), code=exc.message_key, status=exc.status_code
    )


def analyze(
    session: Session,
    *,
    services: Services,
    data: bytes,
    file_name: str,
    product_id: int | None,
    views: Sequence[str] | None = None,
    more: Sequence[inspection_service.UploadedPhoto] = (),
    top_k: int,
    generator: str | None,
    user: User,
) -> AnalyzeRead:
    """Run every step; a bad photo or wrong id fails the call, a step that cannot run is reported per step.

    A step that cannot run (no search gallery yet, no memory bank for the product, no product known) is
    null in the answer with its reason under `errors`, and the later steps still run on what exists, so a
    line system always gets the inspection record and whatever could be worked out.
    """
    if services.inference is not None:
        services.inference.admit("analyze")  # a full queue refuses before anything is stored
    inspection = inspection_service.create_inspection(
        session,
        storage=services.storage,
        settings=services.settings,
        data=data,
        file_name=file_name,
        product_id=product_id,
        user=user,
        views=views,
        more=more,
        photos=services.photos,
    )
    errors: dict[AnalyzeStep, StepProblem] = {}
    search: SearchRead | None = None
    anomaly: AnomalyRead | None = None
    guidance: GuidanceRead | None = None
    try:
        search = search_service.search_inspection(
            session,
            services=services,
            inspection_id=inspection.id,
            top_k=top_k,
            product_id=product_id,
            user=user,
        )
    except DomainError as exc:
        session.rollback()
        errors["search"] = _problem(exc)
    try:
        anomaly = anomaly_service.check_inspection(
            session,
            services=services,
            inspection_id=inspection.id,
            product_id=product_id,
            reference_image_id=None,
            user=user,
        )
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
        )
    except DomainError as exc:
        session.rollback()
        errors["guidance"] = _problem(exc)
    session.expire_all()
    finished = inspection_service.get_inspection(session, inspection_id=inspection.id)
    if integrations_service.enqueue_event(session, inspection=finished, event="inspection.analyzed"):
        session.commit()
    record = inspection_service.to_read(finished)
    return AnalyzeRead(
        inspection=record,
        search=search,
        anomaly=anomaly,
        guidance=guidance,
        errors=errors,
        views=record.views,
    )
