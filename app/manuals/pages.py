"""Admin manual screens: upload with progress, indexing status, download, delete; per manual, what was
understood (defect sections, their defect type, cause / action / prevention with pages) with re-mapping
and re-indexing."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from app.admin.forms import form_id, redirect, render_admin
from app.auth.dependencies import AdminDep, get_current_user
from app.catalog import service as catalog_service
from app.core.dependencies import RunnerDep, ServicesDep, SettingsDep, StorageDep
from app.core.i18n import translate
from app.db.session import SessionDep
from app.manuals import sections, service
from app.manuals.structure import PART_KINDS

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
    manuals = service.list_manuals_for_admin(session, product_id=product_id)
    return render_admin(
        request,
        "admin/manuals/manual_list.html",
        {
            "active": "manuals",
            "products": products,
            "product_id": product_id,
            "upload_products": [p for p in products if p.is_active],
            "manuals": manuals,
            "errors": {m.id: sections.error_text(m.error) for m in manuals},
            "section_counts": {m.id: len((m.structure or {}).get("sections") or []) for m in manuals},
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
    service.delete_manual(session, storage=storage, services=services, manual_id=manual_id, actor_id=admin.id)
    shown = form_id(filter_product_id)
    return redirect("/admin/manuals", "deleted", product_id=shown)


@router.get("/manuals/{manual_id}/structure")
def structure_page(request: Request, manual_id: int, session: SessionDep, _: AdminDep) -> Response:
    """What was understood in one manual; each section's defect type can be changed, the manual re-indexed."""
    manual = service.get_manual(session, manual_id=manual_id)
    return render_admin(
        request,
        "admin/manuals/manual_structure.html",
        {
            "active": "manuals",
            "manual": manual,
            "error": sections.error_text(manual.error),
            "structure": sections.manual_structure(session, manual=manual),
            "defect_types": catalog_service.list_defect_types(session, product_id=manual.product_id),
            "part_kinds": PART_KINDS,
        },
    )


@router.post("/manuals/{manual_id}/sections/{section_index}")
def remap_submit(
    manual_id: int,
    section_index: int,
    session: SessionDep,
    admin: AdminDep,
    defect_type_id: Annotated[str, Form()] = "",
) -> Response:
    """Link a section to a defect type (empty: to none); kept across re-indexing."""
    manual = service.get_manual(session, manual_id=manual_id)
    sections.remap_section(
        session,
        manual=manual,
        section_index=section_index,
        defect_type_id=form_id(defect_type_id),
        actor_id=admin.id,
    )
    return redirect(f"/admin/manuals/{manual_id}/structure", "saved")


@router.post("/manuals/{manual_id}/reindex")
def reindex_submit(manual_id: int, session: SessionDep, runner: RunnerDep, admin: AdminDep) -> Response:
    """Index the manual again in the background (its admin choices are kept)."""
    service.reindex_manual(session, runner=runner, manual_id=manual_id, actor_id=admin.id)
    return redirect(f"/admin/manuals/{manual_id}/structure", "saved")
