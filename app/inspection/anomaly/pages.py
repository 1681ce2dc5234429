"""The anomaly step page."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.core.dependencies import ServicesDep
from app.core.templating import render
from app.db.session import SessionDep
from app.inspection import outcome as outcome_service
from app.inspection import service as inspection_service
from app.inspection.anomaly import service

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])


@router.get("/inspect/{inspection_id}/anomaly")
def anomaly_page(
    request: Request,
    inspection_id: int,
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUserDep,
    product_id: int | None = None,
) -> Response:
    """Step 3: the stored check, or (first visit, by its owner) the check run once by anomaly.js."""
    page = service.page_context(
        session, services=services, inspection_id=inspection_id, product_id=product_id, user=user
    )
    return render(
        request,
        "worker/inspection/anomaly_view.html",
        {
            "step": 3,
            "inspection_id": inspection_id,
            "page": page,
            "is_admin": user.role == "admin",
            "outcome": outcome_service.outcome_read(page.inspection),
            "views": inspection_service.view_cards(page.inspection),
            "combination": (page.inspection.anomaly_result or {}).get("combination"),
        },
    )
