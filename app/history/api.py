"""Inspection history API: list with filters, statistics."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.db.session import SessionDep
from app.history import service
from app.history.schemas import InspectionPage, InspectionStats

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["history"], dependencies=[Depends(get_current_user)])


def history_filter(
    product_id: int | None = None,
    defect_type_id: int | None = None,
    generator: Annotated[str | None, Query(max_length=64)] = None,
    date_from: date | None = None,
    date_to: date | None = None,
    feedback_score: int | None = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    is_anomaly: bool | None = None,
    label: Annotated[str | None, Query(max_length=16)] = None,
) -> service.HistoryFilter:
    """The history filter from query parameters (dates are YYYY-MM-DD, inclusive, server time zone)."""
    return service.HistoryFilter(
        product_id=product_id,
        defect_type_id=defect_type_id,
        generator=generator or None,
        date_from=date_from,
        date_to=date_to,
        feedback_score=feedback_score,
        status=status or None,
        is_anomaly=is_anomaly,
        label=label or None,
    )


FilterDep = Annotated[service.HistoryFilter, Depends(history_filter)]


@router.get("/inspections")
def list_inspections(
    session: SessionDep,
    _: CurrentUserDep,
    flt: FilterDep,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 20,
) -> InspectionPage:
    """Inspections, newest first, filtered and paged (workers and admins)."""
    return service.list_inspections(session, flt=flt, page=page, page_size=page_size)


@router.get("/inspections/stats")
def inspection_stats(session: SessionDep, _: CurrentUserDep, flt: FilterDep) -> InspectionStats:
    """Counts over a date range (default: the last 30 days): per type, product, day, generator, score."""
    return service.inspection_stats(session, flt=flt)
