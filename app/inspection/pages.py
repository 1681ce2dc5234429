"""The worker's first page: upload a photo (steps 2-4 live in app/inspection/<step>/pages.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from app.auth.dependencies import AdminDep, CurrentUserDep, get_current_user
from app.catalog import service as catalog_service
from app.core.dependencies import ServicesDep, SettingsDep
from app.core.templating import render
from app.db.session import SessionDep
from app.inspection import service as inspection_service
from app.inspection.search import service as search_service

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])


@router.get("/")
def upload_page(
    request: Request, session: SessionDep, services: ServicesDep, settings: SettingsDep, _: CurrentUserDep
) -> Response:
    """Step 1: upload a photo (drag and drop or the camera), optionally naming the product."""
    products = catalog_service.list_products(session)
    return render(
        request,
        "worker/inspection/upload_view.html",
        {
            "step": 1,
            "products": products,
            "gallery": search_service.gallery_status(session, services=services),
            "max_upload_mb": settings.max_upload_bytes // 2**20,
            "max_views": settings.max_inspection_views,
            "view_suggestions": sorted({v for p in products for v in (p.views or [])}),
        },
    )


@router.post("/inspect/{inspection_id}/reopen")
def reopen_page(inspection_id: int, session: SessionDep, admin: AdminDep) -> Response:
    """An admin reopens a completed inspection (recorded), then sees its history page."""
    inspection_service.reopen_inspection(session, inspection_id=inspection_id, user=admin)
    return RedirectResponse(f"/history/{inspection_id}", status_code=303)
