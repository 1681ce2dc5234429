"""The worker's four step pages."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.catalog import service as catalog_service
from app.core.errors import NotFoundError
from app.core.templating import render
from app.db.session import SessionDep

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])

STEPS = {"upload": 1, "search": 2, "anomaly": 3, "guidance": 4}


@router.get("/")
def upload_page(request: Request, session: SessionDep, _: CurrentUserDep) -> Response:
    """Step 1: upload a photo."""
    products = catalog_service.list_products(session)
    return render(
        request, "worker/inspection/step_view.html", {"step": 1, "step_key": "upload", "products": products}
    )


@router.get("/inspect/{step_key}")
def step_page(step_key: str, request: Request, _: CurrentUserDep) -> Response:
    """Steps 2-4 (filled in by the search, anomaly and guidance features)."""
    if step_key not in STEPS or step_key == "upload":
        raise NotFoundError("errors.not_found")
    return render(
        request,
        "worker/inspection/step_view.html",
        {"step": STEPS[step_key], "step_key": step_key, "products": []},
    )
