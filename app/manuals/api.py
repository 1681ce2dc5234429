"""Manual routes: upload (admin), list, download, delete (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import AdminDep, CurrentUserDep, get_current_user
from app.core.dependencies import RunnerDep, ServicesDep, SettingsDep, StorageDep
from app.core.errors import PayloadTooLargeError
from app.core.files import object_response
from app.db.session import SessionDep
from app.manuals import service
from app.manuals.schemas import ManualRead

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["manuals"], dependencies=[Depends(get_current_user)])


@router.post("/products/{product_id}/manuals", status_code=201)
async def upload_manual(
    product_id: int,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    runner: RunnerDep,
    admin: AdminDep,
    file: Annotated[UploadFile, File()],
) -> ManualRead:
    """Upload a product's PDF manual (checked before it is stored); it is indexed in the background."""
    data = await file.read(settings.max_manual_bytes + 1)
    if len(data) > settings.max_manual_bytes:
        raise PayloadTooLargeError("errors.manual_too_large", limit_mb=settings.max_manual_bytes // 2**20)
    manual = await run_in_threadpool(
        service.upload_manual,
        session,
        storage,
        settings,
        product_id=product_id,
        file_name=file.filename or "manual.pdf",
        data=data,
        actor_id=admin.id,
    )
    job_id = service.queue_indexing(session, runner, manual=manual, actor_id=admin.id)
    return ManualRead.model_validate(manual).model_copy(update={"index_job_id": job_id})


@router.get("/products/{product_id}/manuals")
def list_manuals(product_id: int, session: SessionDep, _: CurrentUserDep) -> list[ManualRead]:
    """A product's manuals with their indexing status and chunk counts."""
    manuals = service.list_manuals(session, product_id=product_id)
    counts = service.chunk_counts(session, product_id=product_id)
    return [
        ManualRead.model_validate(m).model_copy(update={"chunk_count": counts.get(m.id, 0)}) for m in manuals
    ]


@router.get("/manuals/{manual_id}/file")
def manual_file(
    manual_id: int, session: SessionDep, storage: StorageDep, settings: SettingsDep, _: CurrentUserDep
) -> Response:
    """The PDF (or a redirect to a short-lived URL)."""
    manual = service.get_manual(session, manual_id)
    return object_response(
        storage, settings, key=manual.object_key, content_type="application/pdf", file_name=manual.file_name
    )


@router.post("/manuals/{manual_id}/reindex", status_code=202)
def reindex_manual(manual_id: int, session: SessionDep, runner: RunnerDep, admin: AdminDep) -> ManualRead:
    """Index the manual again in the background (e.g. after a failure); its status shows the progress."""
    manual, job_id = service.reindex_manual(session, runner, manual_id=manual_id, actor_id=admin.id)
    return ManualRead.model_validate(manual).model_copy(update={"index_job_id": job_id})


@router.delete("/manuals/{manual_id}", status_code=204)
def delete_manual(
    manual_id: int, session: SessionDep, storage: StorageDep, services: ServicesDep, admin: AdminDep
) -> Response:
    """Delete a manual, its chunks, its index entries and its stored file."""
    service.delete_manual(session, storage, services, manual_id=manual_id, actor_id=admin.id)
    return Response(status_code=204)
