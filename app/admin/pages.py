"""Admin console pages: dashboard, products, and the screens still to come."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from app.auth.dependencies import AdminDep, get_current_user
from app.catalog import service as catalog_service
from app.catalog.schemas import ProductCreate
from app.core.errors import DomainError, NotFoundError
from app.core.i18n import translate
from app.core.templating import render
from app.db.session import SessionDep
from app.db.tables import DefectType, Inspection, Manual
from app.deployments import service as deployment_service

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(
    prefix="/admin", tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)]
)

# Screens that later issues fill in; until then they say so instead of pretending.
PENDING_SCREENS = {
    "manuals": "admin.nav.manuals",
    "defect-types": "admin.nav.defect_types",
    "images/normal": "admin.nav.normal_images",
    "images/defect": "admin.nav.defect_images",
    "preprocessing": "admin.nav.preprocessing",
    "models": "admin.nav.models",
    "users": "admin.nav.users",
    "deploy/search": "admin.nav.deploy_search",
    "deploy/anomaly": "admin.nav.deploy_anomaly",
    "deploy/manuals": "admin.nav.deploy_manuals",
}


@router.get("")
def dashboard(request: Request, session: SessionDep, _: AdminDep) -> Response:
    """통합 대시보드."""
    counts = catalog_service.count_images(session)
    defect_types = dict(
        session.execute(
            select(DefectType.product_id, func.count())
            .where(DefectType.is_active.is_(True))
            .group_by(DefectType.product_id)
        ).all()
    )
    manuals = dict(session.execute(select(Manual.product_id, func.count()).group_by(Manual.product_id)).all())
    rows = [
        {
            "product": p,
            "normal": counts.get((p.id, "normal"), 0),
            "defect": counts.get((p.id, "defect"), 0),
            "defect_types": defect_types.get(p.id, 0),
            "manuals": manuals.get(p.id, 0),
        }
        for p in catalog_service.list_products(session)
    ]
    totals = {
        "inspections": session.scalar(select(func.count()).select_from(Inspection)) or 0,
        "anomalies": session.scalar(
            select(func.count()).select_from(Inspection).where(Inspection.is_anomaly.is_(True))
        )
        or 0,
        "completed": session.scalar(
            select(func.count()).select_from(Inspection).where(Inspection.completed_at.is_not(None))
        )
        or 0,
    }
    jobs, _total = deployment_service.list_jobs(session, kind=None, product_id=None, page=1, page_size=10)
    return render(
        request,
        "admin/dashboard/dashboard_view.html",
        {"active": "dashboard", "products": rows, "totals": totals, "jobs": jobs},
    )


@router.get("/products")
def products_page(request: Request, session: SessionDep, _: AdminDep) -> Response:
    """제품 관리."""
    products = catalog_service.list_products(session, include_inactive=True)
    return render(request, "admin/catalog/product_list.html", {"active": "products", "products": products})


@router.post("/products")
def create_product_submit(
    request: Request,
    session: SessionDep,
    admin: AdminDep,
    code: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    """Create a product from the form; errors re-show the form with what was typed."""
    form = {"code": code, "name": name, "description": description}
    try:
        product_in = ProductCreate(code=code.strip(), name=name.strip(), description=description.strip())
        catalog_service.create_product(session, product_in=product_in, actor_id=admin.id)
    except ValidationError:
        return _products_with_error(request, session, translate("errors.product_form_invalid"), form, 422)
    except DomainError as exc:
        return _products_with_error(
            request, session, translate(exc.message_key, **exc.params), form, exc.status_code
        )
    return RedirectResponse("/admin/products", status_code=303)


def _products_with_error(
    request: Request, session: SessionDep, message: str, form: dict[str, str], status: int
) -> Response:
    products = catalog_service.list_products(session, include_inactive=True)
    return render(
        request,
        "admin/catalog/product_list.html",
        {"active": "products", "products": products, "error": message, "form": form},
        status_code=status,
    )


@router.post("/products/{product_id}/deactivate")
def deactivate_product_submit(product_id: int, session: SessionDep, admin: AdminDep) -> Response:
    """Deactivate a product from the list."""
    catalog_service.deactivate_product(session, product_id=product_id, actor_id=admin.id)
    return RedirectResponse("/admin/products", status_code=303)


@router.get("/{screen:path}")
def pending_screen(screen: str, request: Request, _: AdminDep) -> Response:
    """A screen that is not built yet: say so plainly."""
    title = PENDING_SCREENS.get(screen.strip("/"))
    if title is None:
        raise NotFoundError("errors.not_found")
    active = title.rsplit(".", 1)[-1]
    return render(request, "admin/common/placeholder_view.html", {"active": active, "title_key": title})
