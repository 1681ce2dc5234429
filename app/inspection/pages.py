"""The worker's first page: upload a photo (steps 2-4 live in app/inspection/<step>/pages.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.catalog import service as catalog_service
from app.core.dependencies import ServicesDep, SettingsDep
from app.core.templating import render
from app.db.session import SessionDep
from app.inspection.search import service as search_service

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])


@router.get("/")
def upload_page(
    request: Request, session: SessionDep, services: ServicesDep, settings: SettingsDep, _: CurrentUserDep
) -> Response:
    """Step 1: upload a photo (drag and drop or the camera), optionally naming the product."""
    return render(
        request,
        "worker/inspection/upload_view.html",
        {
            "step": 1,
            "products": catalog_service.list_products(session),
            "gallery": search_service.gallery_status(session, services),
            "max_upload_mb": settings.max_upload_bytes // 2**20,
        },
    )
