"""The anomaly step API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.core.services import Services
from app.db.session import SessionDep
from app.inspection.anomaly import service
from app.inspection.anomaly.schemas import AnomalyRead, AnomalyRequest

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["inspections"], dependencies=[Depends(get_current_user)])


def get_services(request: Request) -> Services:
    """The app's long-lived services."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


@router.post("/inspections/{inspection_id}/anomaly")
def check_anomaly(
    inspection_id: int,
    body: AnomalyRequest,
    session: SessionDep,
    services: ServicesDep,
    _: CurrentUserDep,
) -> AnomalyRead:
    """Localise anomalies in the photo with the product's PatchCore model (runs in the threadpool)."""
    return service.check_inspection(
        session,
        services,
        inspection_id=inspection_id,
        product_id=body.product_id,
        reference_image_id=body.reference_image_id,
    )
