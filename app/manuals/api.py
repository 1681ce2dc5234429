"""Manual routes: upload (admin), list, download, structure and re-mapping (admin), delete (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import AdminDep, CurrentUserDep, get_current_user
from app.core.dependencies import RunnerDep, ServicesDep, SettingsDep, StorageDep
from app.core.files import object_response, read_upload
from app.db.session import SessionDep
from app.db.tables import Manual
from app.manuals import sections, service
from app.manuals.schemas import ManualRead

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["manuals"], dependencies=[Depends(get_current_user)])


def _read(manual: Manual, **update: Any) -> ManualRead:
    """The manual's body, its stored error in the reader's language."""
    return ManualRead.model_validate(manual).model_copy(
        update={"error": sections.error_text(manual.error), **update}
    )


class SectionMapping(BaseModel):
    """The defect type a manual section answers for (null: none)."""

    defect_type_id: int | None


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
    """Upload a product's PDF or DOCX manual (checked before it is stored); it is parsed and indexed in
    the background, in a process with CPU, memory and time limits (status pending -> indexed / failed)."""
    data = await read_upload(file, limit=settings.max_manual_bytes, error_key="errors.manual_too_large")

    def store() -> ManualRead:
        manual = service.upload_manual(
            session,
            storage=storage,
            settings=settings,
            product_id=product_id,
            file_name=file.filename or "manual",
            data=data,
            actor_id=admin.id,
        )
        job_id = service.queue_indexing(session, runner=runner, manual=manual, actor_id=admin.id)
        return _read(manual, index_job_id=job_id)

    return await run_in_threadpool(store)


@router.get("/products/{product_id}/manuals")
def list_manuals(product_id: int, session: SessionDep, _: CurrentUserDep) -> list[ManualRead]:
    """A product's manuals with their indexing status and chunk counts."""
    manuals = service.list_manuals(session, product_id=product_id)
    counts = service.chunk_counts(session, product_id=product_id)
    return [_read(m, chunk_count=counts.get(m.id, 0)) for m in manuals]


@router.get("/manuals/{manual_id}/file")
def manual_file(
    manual_id: int, session: SessionDep, storage: StorageDep, settings: SettingsDep, _: CurrentUserDep
) -> Response:
    """The PDF / DOCX (or a redirect to a short-lived URL)."""
    manual = service.get_manual(session, manual_id=manual_id)
    kind = "docx" if manual.file_name.lower().endswith(".docx") else "pdf"
    return object_response(
        storage,
        settings,
        key=manual.object_key,
        content_type=service.MEDIA_TYPES[kind],
        file_name=manual.file_name,
    )


@router.get("/manuals/{manual_id}/structure")
def manual_structure(manual_id: int, session: SessionDep, _: CurrentUserDep) -> dict[str, Any]:
    """What was understood: defect sections, the defect type each maps to, cause / action / prevention
    text with pages, and the product's defect types without a section."""
    return sections.manual_structure(session, manual=service.get_manual(session, manual_id=manual_id))


@router.put("/manuals/{manual_id}/structure/sections/{section_index}")
def remap_section(
    manual_id: int, section_index: int, body: SectionMapping, session: SessionDep, admin: AdminDep
) -> dict[str, Any]:
    """Map a section to another defect type (or none); kept across re-indexing, used at once."""
    manual = service.get_manual(session, manual_id=manual_id)
    return sections.remap_section(
        session,
        manual=manual,
        section_index=section_index,
        defect_type_id=body.defect_type_id,
        actor_id=admin.id,
    )


@router.post("/manuals/{manual_id}/reindex", status_code=202)
def reindex_manual(manual_id: int, session: SessionDep, runner: RunnerDep, admin: AdminDep) -> ManualRead:
    """Index the manual again in the background (e.g. after a failure); its status shows the progress."""
    manual, job_id = service.reindex_manual(session, runner=runner, manual_id=manual_id, actor_id=admin.id)
    return _read(manual, index_job_id=job_id)


@router.delete("/manuals/{manual_id}", status_code=204)
def delete_manual(
    manual_id: int, session: SessionDep, storage: StorageDep, services: ServicesDep, admin: AdminDep
) -> Response:
    """Delete a manual, its chunks, its index entries and its stored file."""
    service.delete_manual(session, storage=storage, services=services, manual_id=manual_id, actor_id=admin.id)
    return Response(status_code=204)
