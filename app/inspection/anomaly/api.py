"""The anomaly step API."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.core.dependencies import ServicesDep
from app.db.session import SessionDep
from app.inspection.anomaly import service
from app.inspection.anomaly.schemas import AnomalyRead, AnomalyRequest

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["inspections"], dependencies=[Depends(get_current_user)])


@router.post("/inspections/{inspection_id}/anomaly")
def check_anomaly(
    inspection_id: int,
    body: AnomalyRequest,
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUserDep,
) -> AnomalyRead:
    """Localise anomalies in the photo with the product's PatchCore model (runs in the threadpool)."""
    return service.check_inspection(
        session,
        services=services,
        inspection_id=inspection_id,
        product_id=body.product_id,
        reference_image_id=body.reference_image_id,
        user=user,
    )
