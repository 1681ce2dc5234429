"""The search step page."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.catalog import service as catalog_service
from app.core.templating import render
from app.db.session import SessionDep
from app.inspection import outcome as outcome_service
from app.inspection import service as inspection_service
from app.inspection.search import service

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])


@router.get("/inspect/{inspection_id}/search")
def search_page(inspection_id: int, request: Request, session: SessionDep, user: CurrentUserDep) -> Response:
    """Step 2: TOP-1 next to the photo, the other matches, the verdict, register as a new defect."""
    inspection = inspection_service.get_inspection(session, inspection_id=inspection_id)
    result = service.stored_search(inspection)
    view = service.search_view(result) if result is not None else None
    return render(
        request,
        "worker/inspection/search_view.html",
        {
            "step": 2,
            "inspection_id": inspection.id,
            "inspection": inspection_service.to_read(inspection),
            "result": result,
            "view": view,
            "products": catalog_service.list_products(session),
            "top_k_choices": list(range(1, 21)),
            "can_change": outcome_service.can_change(inspection, user),
            "view_cards": inspection_service.view_cards(inspection),
            "combination": (inspection.anomaly_result or {}).get("combination"),
        },
    )
