"""History pages (workers and admins) and the admin dashboard."""

from __future__ import annotations

from datetime import date
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.auth.dependencies import AdminDep, CurrentUserDep, get_current_user
from app.catalog import service as catalog_service
from app.core.dependencies import ArtifactStatesDep, ServicesDep
from app.core.errors import InvalidInputError
from app.core.templating import render
from app.db.session import SessionDep
from app.db.tables import INSPECTION_STATUSES, OUTCOME_LABELS, DefectType, Product
from app.history import dashboard as dashboard_service
from app.history import service
from app.inspection import service as inspection_service
from app.inspection.guidance.labels import generator_label

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])

PAGE_SIZE = 20
FILTER_FIELDS = (
    "product_id",
    "defect_type_id",
    "generator",
    "date_from",
    "date_to",
    "feedback_score",
    "status",
    "label",
)


def _int(name: str, value: str) -> int | None:
    if not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError("errors.history_bad_param", field=name, value=value[:40]) from None


def _date(name: str, value: str) -> date | None:
    if not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInputError("errors.history_bad_param", field=name, value=value[:40]) from None


def page_filter(request: Request) -> tuple[service.HistoryFilter, dict[str, str]]:
    """The filter from a page's query string (empty form fields mean "any"), and the raw values."""
    raw = {name: request.query_params.get(name, "")[:64] for name in FILTER_FIELDS}
    flt = service.HistoryFilter(
        product_id=_int("product_id", raw["product_id"]),
        defect_type_id=_int("defect_type_id", raw["defect_type_id"]),
        generator=raw["generator"].strip() or None,
        date_from=_date("date_from", raw["date_from"]),
        date_to=_date("date_to", raw["date_to"]),
        feedback_score=_int("feedback_score", raw["feedback_score"]),
        status=raw["status"].strip() or None,
        label=raw["label"].strip() or None,
    )
    return flt, raw


def _choices(session: SessionDep) -> dict[str, object]:
    products = catalog_service.list_products(session, include_inactive=True)
    defect_types: dict[int, list[DefectType]] = {}
    for product in products:
        defect_types[product.id] = catalog_service.list_defect_types(
            session, product_id=product.id, include_inactive=True
        )
    return {
        "products": products,
        "defect_types": defect_types,
        "generators": service.generator_names(session),
        "generator_label": generator_label,
        "statuses": INSPECTION_STATUSES,
        "labels": OUTCOME_LABELS,
    }


@router.get("/admin")
def dashboard_page(
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    artifact_states: ArtifactStatesDep,
    _: AdminDep,
) -> Response:
    """통합 대시보드: products and their artifacts, inspections, defects per type, latest activity."""
    view = dashboard_service.dashboard(session, states=artifact_states(session, services))
    return render(request, "admin/dashboard/dashboard_view.html", {"active": "dashboard", "view": view})


@router.get("/history")
def history_list_page(
    request: Request, session: SessionDep, _: CurrentUserDep, page: Annotated[int, Query(ge=1)] = 1
) -> Response:
    """검사 이력: every inspection, filtered and paged."""
    flt, raw = page_filter(request)
    result = service.list_inspections(session, flt=flt, page=page, page_size=PAGE_SIZE)
    query = urlencode({k: v for k, v in raw.items() if v})
    return render(
        request,
        "worker/history/history_list.html",
        {"result": result, "filters": raw, "query": query, **_choices(session)},
    )


@router.get("/history/stats")
def history_stats_page(request: Request, session: SessionDep, _: CurrentUserDep) -> Response:
    """검사 통계: charts over a date range (default: the last 30 days)."""
    flt, raw = page_filter(request)
    stats = service.inspection_stats(session, flt=flt)
    return render(
        request,
        "worker/history/history_stats.html",
        {
            "stats": stats,
            "filters": raw,
            "query": urlencode({k: v for k, v in raw.items() if v}),
            **_choices(session),
        },
    )


@router.get("/history/{inspection_id}")
def history_detail_page(
    inspection_id: int, request: Request, session: SessionDep, user: CurrentUserDep
) -> Response:
    """One inspection with every step's result, its images and the worker's record."""
    inspection = inspection_service.get_inspection(session, inspection_id=inspection_id)
    products, defects = service.names_for(session, rows=[inspection])
    item = service.to_item(inspection, products, defects)
    return render(
        request,
        "worker/history/history_detail.html",
        {
            "item": item,
            "inspection": inspection,
            "detail": service.detail_view(inspection),
            "generator_label": generator_label,
            "feedback_user": service.user_of(session, user_id=inspection.feedback_by),
            "events": inspection_service.events(session, inspection_id=inspection.id),
            "can_reopen": user.role == "admin" and inspection.status == "completed",
            "chosen_product": session.get(Product, inspection.product_id) if inspection.product_id else None,
        },
    )
