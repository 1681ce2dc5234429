"""The search step API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.core.dependencies import ServicesDep
from app.db.session import SessionDep
from app.inspection.search import service
from app.inspection.search.schemas import (
    ChooseRequest,
    GalleryStatus,
    RegisterPreview,
    RegisterRead,
    RegisterRequest,
    SearchRead,
    SearchRequest,
)

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["inspections"], dependencies=[Depends(get_current_user)])


@router.post("/inspections/{inspection_id}/search")
def search(
    inspection_id: int, body: SearchRequest, session: SessionDep, services: ServicesDep, user: CurrentUserDep
) -> SearchRead:
    """Similar known defects, best first, and the verdict (stored on the inspection)."""
    return service.search_inspection(
        session,
        services=services,
        inspection_id=inspection_id,
        top_k=body.top_k,
        product_id=body.product_id,
        user=user,
    )


@router.get("/inspections/{inspection_id}/search")
def stored_search(inspection_id: int, session: SessionDep, _: CurrentUserDep) -> SearchRead:
    """The stored search result (409 when the step has not run)."""
    return service.get_stored_search(session, inspection_id=inspection_id)


@router.post("/inspections/{inspection_id}/search/choose")
def choose(inspection_id: int, body: ChooseRequest, session: SessionDep, user: CurrentUserDep) -> SearchRead:
    """Make one of the matches the TOP-1 (null: back to the best match); it becomes the worker's outcome."""
    return service.choose_match(session, inspection_id=inspection_id, image_id=body.image_id, user=user)


@router.get("/inspections/{inspection_id}/register/preview")
def register_preview(
    inspection_id: int,
    product_id: Annotated[int, Query()],
    defect_type_id: Annotated[int, Query()],
    session: SessionDep,
    _: CurrentUserDep,
) -> RegisterPreview:
    """The catalog file name the photo would get."""
    return service.registration_preview(
        session, inspection_id=inspection_id, product_id=product_id, defect_type_id=defect_type_id
    )


@router.post("/inspections/{inspection_id}/register", status_code=201)
def register(
    inspection_id: int,
    body: RegisterRequest,
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUserDep,
) -> RegisterRead:
    """Add the photo to the catalog as a defect image; it is searchable at once."""
    return service.register_inspection(
        session,
        services=services,
        inspection_id=inspection_id,
        product_id=body.product_id,
        defect_type_id=body.defect_type_id,
        user=user,
    )


@router.get("/search/status")
def gallery_status(session: SessionDep, services: ServicesDep, _: CurrentUserDep) -> GalleryStatus:
    """The live embedder, gallery sizes and whether the index is current."""
    return service.gallery_status(session, services=services)
