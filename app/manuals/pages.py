"""Admin manual screen: upload with progress, indexing status, download, delete."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from app.admin.forms import form_id, redirect, render_admin
from app.auth.dependencies import AdminDep, get_current_user
from app.catalog import service as catalog_service
from app.core.dependencies import ServicesDep, SettingsDep, StorageDep
from app.core.i18n import translate
from app.db.session import SessionDep
from app.manuals import service

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(
    prefix="/admin", tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)]
)

MANUAL_STATUSES = ("pending", "indexing", "indexed", "failed")


@router.get("/manuals")
def manuals_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _: AdminDep,
    product_id: int | None = None,
) -> Response:
    """매뉴얼 관리: upload PDFs per product, watch their indexing, download or delete them."""
    products = catalog_service.list_products(session, include_inactive=True)
    return render_admin(
        request,
        "admin/manuals/manual_list.html",
        {
            "active": "manuals",
            "products": products,
            "product_id": product_id,
            "upload_products": [p for p in products if p.is_active],
            "manuals": service.list_manuals_for_admin(session, product_id=product_id),
            "status_labels": json.dumps(
                {s: translate(f"adm.manuals.statuses.{s}") for s in MANUAL_STATUSES}, ensure_ascii=False
            ),
            "limits": {
                "limit_mb": settings.max_manual_bytes // 2**20,
                "pages": settings.max_manual_pages,
            },
        },
    )


@router.post("/manuals/{manual_id}/delete")
def delete_manual_submit(
    manual_id: int,
    session: SessionDep,
    storage: StorageDep,
    services: ServicesDep,
    admin: AdminDep,
    filter_product_id: Annotated[str, Form()] = "",
) -> Response:
    """Delete a manual (its chunks, index entries and stored PDF go with it)."""
    service.delete_manual(session, storage, services, manual_id=manual_id, actor_id=admin.id)
    shown = form_id(filter_product_id)
    return redirect("/admin/manuals", "deleted", product_id=shown)
