"""Inspection API: upload a photo, read an inspection, fetch its photo and derived files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import AdminDep, CurrentUserDep, get_current_user
from app.core.dependencies import ServicesDep, SettingsDep, StorageDep
from app.core.errors import InvalidInputError, ValidationFailedError
from app.core.files import object_response, read_upload
from app.core.url_fetch import UrlPolicy, fetch_url
from app.db.session import SessionDep
from app.inspection import analyze as analyze_service
from app.inspection import report as report_service
from app.inspection import service
from app.inspection import views as views_service
from app.inspection.anomaly import pictures
from app.inspection.schemas import AnalyzeRead, InspectionEventRead, InspectionRead

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["inspections"], dependencies=[Depends(get_current_user)])


async def read_uploads(
    file: UploadFile | None, files: list[UploadFile] | None, *, limit: int, max_views: int
) -> list[service.UploadedPhoto]:
    """`file` then every `files` part, each refused over `limit`; too many views refused before reading."""
    parts = ([file] if file is not None else []) + list(files or [])
    if len(parts) > max_views:
        raise ValidationFailedError("views.errors.too_many", count=len(parts), limit=max_views)
    return [service.UploadedPhoto(await read_upload(p, limit=limit), p.filename or "upload") for p in parts]


@router.post("/inspections", status_code=201)
async def create_inspection(
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    services: ServicesDep,
    user: CurrentUserDep,
    file: Annotated[UploadFile | None, File()] = None,
    files: Annotated[list[UploadFile] | None, File()] = None,
    views: Annotated[list[str] | None, Form()] = None,
    url: Annotated[str | None, Form(max_length=2048)] = None,
    product_id: Annotated[int | None, Form()] = None,
) -> InspectionRead:
    """Upload a photo, several labelled views (`files` + `views`) or a URL on a listed host; checked first."""
    has_files = file is not None or bool(files)
    if has_files == bool(url):
        raise InvalidInputError("errors.inspection_file_or_url")
    labels = views_service.parse_labels(views)
    more: list[service.UploadedPhoto] = []
    if has_files:
        uploads = await read_uploads(
            file, files, limit=settings.max_upload_bytes, max_views=settings.max_inspection_views
        )
        data, file_name, more = uploads[0].data, uploads[0].file_name, uploads[1:]
    else:
        policy = UrlPolicy(
            allowed_hosts=settings.url_fetch_hosts,
            max_bytes=settings.max_upload_bytes,
            timeout_s=settings.url_fetch_timeout_s,
            max_redirects=settings.url_fetch_max_redirects,
        )
        fetched = await run_in_threadpool(fetch_url, str(url), policy)
        data, file_name = fetched.data, fetched.file_name

    def create() -> InspectionRead:
        row = service.create_inspection(
            session,
            storage=storage,
            settings=settings,
            data=data,
            file_name=file_name,
            product_id=product_id,
            user=user,
            views=labels,
            more=more,
            photos=services.photos,
        )
        return service.to_read(row)  # loads the views: database work, so off the event loop as well

    return await run_in_threadpool(create)


@router.get("/inspections/{inspection_id}")
def get_inspection(inspection_id: int, session: SessionDep, _: CurrentUserDep) -> InspectionRead:
    """One inspection with every step's result so far."""
    return service.to_read(service.get_inspection(session, inspection_id=inspection_id))


@router.get("/inspections/{inspection_id}/events")
def inspection_events(
    inspection_id: int, session: SessionDep, _: CurrentUserDep
) -> list[InspectionEventRead]:
    """The inspection's append-only history: every step run, choice, feedback and reopening, oldest first."""
    return service.events(session, inspection_id=inspection_id)


@router.post("/inspections/{inspection_id}/reopen")
def reopen_inspection(inspection_id: int, session: SessionDep, admin: AdminDep) -> InspectionRead:
    """Unlock a completed inspection so it can be changed again (admins only; recorded in its history)."""
    return service.to_read(service.reopen_inspection(session, inspection_id=inspection_id, user=admin))


@router.get("/inspections/{inspection_id}/image")
def inspection_image(
    inspection_id: int, session: SessionDep, storage: StorageDep, settings: SettingsDep, _: CurrentUserDep
) -> Response:
    """The inspected photo (or a redirect to a short-lived URL)."""
    row = service.get_inspection(session, inspection_id=inspection_id)
    return object_response(
        storage, settings, key=row.image_key, content_type=row.content_type, file_name=row.original_name
    )


@router.get("/inspections/{inspection_id}/files/{name}")
def inspection_file(
    inspection_id: int,
    name: str,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    services: ServicesDep,
    _: CurrentUserDep,
) -> Response:
    """A file a step derived from the photo (heat map, mask, overlay, comparison; drawn on first request)."""
    row = service.get_inspection(session, inspection_id=inspection_id)
    return object_response(
        storage,
        settings,
        key=pictures.file_key(session, services=services, inspection=row, name=name),
        content_type=service.file_content_type(name),
        file_name=name,
    )


@router.get("/inspections/{inspection_id}/views/{view}/image")
def inspection_view_image(
    inspection_id: int,
    view: str,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    _: CurrentUserDep,
) -> Response:
    """One view's photo of a several-view inspection (or a redirect to a short-lived URL)."""
    _row, photo = service.get_view(session, inspection_id=inspection_id, label=view)
    return object_response(
        storage, settings, key=photo.image_key, content_type=photo.content_type, file_name=photo.original_name
    )


@router.get("/inspections/{inspection_id}/views/{view}/files/{name}")
def inspection_view_file(
    inspection_id: int,
    view: str,
    name: str,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    services: ServicesDep,
    _: CurrentUserDep,
) -> Response:
    """A file derived from one view's photo (heat map, mask, overlay, comparison; drawn on first request)."""
    _row, photo = service.get_view(session, inspection_id=inspection_id, label=view)
    return object_response(
        storage,
        settings,
        key=pictures.file_key(session, services=services, inspection=photo, name=name),
        content_type=service.file_content_type(name),
        file_name=name,
    )


@router.get(
    "/inspections/{inspection_id}/report.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "A one-page A4 PDF"}},
)
def inspection_report(
    inspection_id: int, session: SessionDep, services: ServicesDep, _: CurrentUserDep
) -> Response:
    """The inspection as a one-page PDF report, in the reader's language (?lang= or the language cookie)."""
    pdf = report_service.inspection_report(session, services=services, inspection_id=inspection_id)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="inspection-{inspection_id}.pdf"'},
    )


@router.post("/analyze")
async def analyze(
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUserDep,
    file: Annotated[UploadFile | None, File()] = None,
    files: Annotated[list[UploadFile] | None, File()] = None,
    views: Annotated[list[str] | None, Form()] = None,
    product_id: Annotated[int | None, Form()] = None,
    top_k: Annotated[int, Form(ge=1, le=20)] = 5,
    generator: Annotated[str | None, Form()] = None,
) -> AnalyzeRead:
    """The whole pipeline in one call: {"inspection","search","anomaly","guidance","errors","views"}.

    Several labelled views: `files` with `views` (one label per file, in order); each view is searched and
    checked, and the anomaly answer combines them by the product's rule.
    """
    settings = services.settings
    if file is None and not files:
        raise ValidationFailedError("views.errors.no_file")
    uploads = await read_uploads(
        file, files, limit=settings.max_upload_bytes, max_views=settings.max_inspection_views
    )
    return await run_in_threadpool(
        analyze_service.analyze,
        session,
        services=services,
        data=uploads[0].data,
        file_name=uploads[0].file_name,
        views=views_service.parse_labels(views),
        more=uploads[1:],
        product_id=product_id,
        top_k=top_k,
        generator=generator or None,
        user=user,
    )
