"""The worker's first page: upload a photo (steps 2-4 live in app/inspection/<step>/pages.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.catalog import service as catalog_service
from app.core.templating import render
from app.db.session import SessionDep

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])


@router.get("/")
def upload_page(request: Request, session: SessionDep, _: CurrentUserDep) -> Response:
    """Step 1: upload a photo."""
    products = catalog_service.list_products(session)
    return render(
        request, "worker/inspection/step_view.html", {"step": 1, "step_key": "upload", "products": products}
    )
