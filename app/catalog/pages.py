"""Admin catalog screens: products, defect types, images, preprocessing, model selection."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.admin.forms import error_text, form_id, redirect, render_admin
from app.auth.dependencies import AdminDep, get_current_user
from app.auth.pages import safe_next
from app.catalog import service
from app.catalog.model_choices import available_choices, image_change_hook, model_choices
from app.catalog.schemas import (
    DefectTypeCreate,
    DefectTypeUpdate,
    ModelSettingsUpdate,
    PreprocessingRead,
    ProductCreate,
    ProductUpdate,
)
from app.core.artifacts import DEPLOY_LINKS
from app.core.config import Settings
from app.core.dependencies import (
    ModelsDep,
    ServicesDep,
    SettingsDep,
    StorageDep,
    get_artifact_states,
    get_services,
)
from app.core.errors import DomainError, NotFoundError
from app.core.i18n import translate
from app.db.session import SessionDep
from app.db.tables import DefectType, Product
from app.inspection import views as views_service

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(
    prefix="/admin", tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)]
)

IMAGES_PAGE_SIZE = 24


def stale_artifacts(
    request: Request, session: SessionDep, *, product_id: int | None, kinds: set[str]
) -> list[dict[str, Any]]:
    """Artifacts of the product that are not current, with a translated reason and the deploy link."""
    states = get_artifact_states(request)(session, get_services(request))
    out = []
    for state in states:
        if state.kind not in kinds or state.state == "current":
            continue
        if product_id is not None and state.product_id not in (None, product_id):
            continue
        out.append(
            {
                "kind": state.kind,
                "state": state.state,
                "product_id": state.product_id,
                "reasons": [translate(r, **state.params) for r in state.reasons],
                "link": DEPLOY_LINKS.get(state.kind, "/admin"),
            }
        )
    return out


def _pick_product(products: list[Product], product_id: int | None) -> Product | None:
    for p in products:
        if p.id == product_id:
            return p
    return products[0] if products and product_id is None else None


# --- Products ---------------------------------------------------------------------------------------


def _products_page(
    request: Request,
    session: SessionDep,
    *,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render_admin(
        request,
        "admin/catalog/product_list.html",
        {
            "active": "products",
            "rows": service.product_overviews(session),
            "error": error,
            "form": form or {},
        },
        status_code=status_code,
    )


@router.get("/products")
def products_page(request: Request, session: SessionDep, _: AdminDep) -> Response:
    """제품 관리: every product (inactive ones too) with its counts, and the new-product form."""
    return _products_page(request, session)


@router.post("/products")
def create_product_submit(
    request: Request,
    session: SessionDep,
    admin: AdminDep,
    code: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    """Create a product; a refused form comes back with what was typed and why."""
    form = {"code": code, "name": name, "description": description}
    try:
        product_in = ProductCreate(code=code.strip(), name=name.strip(), description=description.strip())
        service.create_product(session, product_in=product_in, actor_id=admin.id)
    except (ValidationError, DomainError) as exc:
        message, status = error_text(exc, "errors.product_form_invalid")
        return _products_page(request, session, error=message, form=form, status_code=status)
    return redirect("/admin/products", "created")


def _product_edit_page(
    request: Request,
    product: Product,
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return render_admin(
        request,
        "admin/catalog/product_edit.html",
        {
            "active": "products",
            "product": product,
            "form": form
            or {
                "name": product.name,
                "description": product.description,
                "view_rule": product.view_rule,
                "views": ", ".join(product.views or []),
            },
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/products/{product_id}/edit")
def product_edit_page(product_id: int, request: Request, session: SessionDep, _: AdminDep) -> Response:
    """Edit a product's name and description (the code is fixed: file names and galleries use it)."""
    return _product_edit_page(request, service.get_product(session, product_id=product_id))


@router.post("/products/{product_id}")
def product_edit_submit(
    product_id: int,
    request: Request,
    session: SessionDep,
    admin: AdminDep,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    view_rule: Annotated[str, Form()] = "any",
    views: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """Save a product's name, description, and how its views combine (several views per inspection)."""
    product = service.get_product(session, product_id=product_id)
    form = {"name": name, "description": description, "view_rule": view_rule, "views": views}
    try:
        views_service.check_rule(view_rule)
        product_in = ProductUpdate(
            name=name.strip(),
            description=description.strip(),
            view_rule=view_rule,  # checked just above
            views=views_service.normalise_product_views([views]),
        )
        service.update_product(session, product_id=product_id, product_in=product_in, actor_id=admin.id)
    except (ValidationError, DomainError) as exc:
        message, status = error_text(exc, "errors.admin_product_edit_invalid")
        session.rollback()
        return _product_edit_page(request, product, form=form, error=message, status_code=status)
    return redirect("/admin/products", "saved")


@router.post("/products/{product_id}/deactivate")
def deactivate_product_submit(product_id: int, session: SessionDep, admin: AdminDep) -> Response:
    """Deactivate a product (its history stays readable)."""
    service.deactivate_product(session, product_id=product_id, actor_id=admin.id)
    return redirect("/admin/products", "deactivated")


@router.post("/products/{product_id}/reactivate")
def reactivate_product_submit(product_id: int, session: SessionDep, admin: AdminDep) -> Response:
    """Put a deactivated product back in use."""
    service.update_product(
        session, product_id=product_id, product_in=ProductUpdate(is_active=True), actor_id=admin.id
    )
    return redirect("/admin/products", "reactivated")


# --- Defect types -----------------------------------------------------------------------------------


def _defect_types_page(
    request: Request,
    session: SessionDep,
    *,
    product_id: int | None,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    products = service.list_products(session, include_inactive=True)
    return render_admin(
        request,
        "admin/catalog/defect_type_list.html",
        {
            "active": "defect_types",
            "products": products,
            "active_products": [p for p in products if p.is_active],
            "product_id": product_id,
            "rows": service.defect_type_overviews(session, product_id=product_id),
            "error": error,
            "form": form or {"product_id": str(product_id or "")},
        },
        status_code=status_code,
    )


@router.get("/defect-types")
def defect_types_page(
    request: Request,
    session: SessionDep,
    _: AdminDep,
    product_id: int | None = None,
) -> Response:
    """불량 유형 관리: every product's defect types (or one product's), and the new-type form."""
    return _defect_types_page(request, session, product_id=product_id)


@router.post("/defect-types")
def create_defect_type_submit(
    request: Request,
    session: SessionDep,
    admin: AdminDep,
    product_id: Annotated[str, Form()] = "",
    code: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    filter_product_id: Annotated[str, Form()] = "",
) -> Response:
    """Add a defect type to a product."""
    form = {"product_id": product_id, "code": code, "name": name, "description": description}
    shown = form_id(filter_product_id)
    try:
        target = form_id(product_id)
        if target is None:
            raise DomainError("errors.admin_product_required")
        defect_in = DefectTypeCreate(code=code.strip(), name=name.strip(), description=description.strip())
        service.create_defect_type(session, product_id=target, defect_in=defect_in, actor_id=admin.id)
    except (ValidationError, DomainError) as exc:
        message, status = error_text(exc, "errors.admin_defect_form_invalid")
        return _defect_types_page(
            request, session, product_id=shown, error=message, form=form, status_code=status
        )
    return redirect("/admin/defect-types", "created", product_id=shown)


def _defect_type_edit_page(
    request: Request,
    defect_type: DefectType,
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return render_admin(
        request,
        "admin/catalog/defect_type_edit.html",
        {
            "active": "defect_types",
            "defect_type": defect_type,
            "form": form or {"name": defect_type.name, "description": defect_type.description},
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/defect-types/{defect_type_id}/edit")
def defect_type_edit_page(
    defect_type_id: int, request: Request, session: SessionDep, _: AdminDep
) -> Response:
    """Edit a defect type's display name and description (the code is fixed)."""
    return _defect_type_edit_page(request, service.get_defect_type(session, defect_type_id=defect_type_id))


@router.post("/defect-types/{defect_type_id}")
def defect_type_edit_submit(
    defect_type_id: int,
    request: Request,
    session: SessionDep,
    admin: AdminDep,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    """Save a defect type's display name and description."""
    defect_type = service.get_defect_type(session, defect_type_id=defect_type_id)
    form = {"name": name, "description": description}
    try:
        defect_in = DefectTypeUpdate(name=name.strip(), description=description.strip())
        service.update_defect_type(
            session, defect_type_id=defect_type_id, defect_in=defect_in, actor_id=admin.id
        )
    except (ValidationError, DomainError) as exc:
        message, status = error_text(exc, "errors.admin_defect_form_invalid")
        session.rollback()
        return _defect_type_edit_page(request, defect_type, form=form, error=message, status_code=status)
    return redirect("/admin/defect-types", "saved", product_id=defect_type.product_id)


@router.post("/defect-types/{defect_type_id}/{action}")
def defect_type_toggle_submit(
    defect_type_id: int,
    action: Literal["deactivate", "reactivate"],
    session: SessionDep,
    admin: AdminDep,
    filter_product_id: Annotated[str, Form()] = "",
) -> Response:
    """Deactivate or reactivate a defect type (past inspections keep their labels)."""
    service.update_defect_type(
        session,
        defect_type_id=defect_type_id,
        defect_in=DefectTypeUpdate(is_active=action == "reactivate"),
        actor_id=admin.id,
    )
    shown = form_id(filter_product_id)
    return redirect("/admin/defect-types", f"{action}d", product_id=shown)


# --- Reference images -------------------------------------------------------------------------------


@router.get("/images/{kind}")
def images_page(
    kind: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _: AdminDep,
    product_id: int | None = None,
    defect_type_id: int | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    """정상/불량 이미지 등록: upload files or ZIPs with progress, the refused list, and a paged grid."""
    if kind not in ("normal", "defect"):
        raise NotFoundError("errors.not_found")
    products = service.list_products(session)
    product = _pick_product(products, product_id)
    defect_types: list[DefectType] = []
    images: list[Any] = []
    total = 0
    if product is not None:
        defect_types = service.list_defect_types(session, product_id=product.id)
        if defect_type_id is not None and defect_type_id not in {d.id for d in defect_types}:
            defect_type_id = None
        images, total = service.list_images(
            session,
            product_id=product.id,
            kind=kind,
            defect_type_id=defect_type_id if kind == "defect" else None,
            page=page,
            page_size=IMAGES_PAGE_SIZE,
        )
    pages = max(1, -(-total // IMAGES_PAGE_SIZE))
    return render_admin(
        request,
        "admin/catalog/image_list.html",
        {
            "active": f"{kind}_images",
            "kind": kind,
            "products": products,
            "product": product,
            "defect_types": defect_types,
            "defect_type_names": {d.id: d for d in defect_types},
            "defect_type_id": defect_type_id,
            "images": images,
            "total": total,
            "page": min(page, pages),
            "pages": pages,
            "limits": _upload_limits(settings),
            "stale": stale_artifacts(
                request,
                session,
                product_id=product.id if product else None,
                kinds={"search_index"} if kind == "defect" else {"anomaly_model", "search_index"},
            ),
            "self_url": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        },
    )


def _upload_limits(settings: Settings) -> dict[str, int]:
    return {
        "file_mb": settings.max_upload_bytes // 2**20,
        "zip_mb": settings.max_zip_bytes // 2**20,
        "zip_entries": settings.max_zip_entries,
    }


@router.post("/images/{image_id}/delete")
def delete_image_submit(
    image_id: int,
    session: SessionDep,
    storage: StorageDep,
    services: ServicesDep,
    admin: AdminDep,
    next: Annotated[str, Form()] = "/admin/images/normal",
) -> Response:
    """Delete an image (row, stored object and gallery entry) and go back to the grid."""
    service.delete_image(
        session, storage=storage, image_id=image_id, actor_id=admin.id, on_change=image_change_hook(services)
    )
    target = urlsplit(safe_next(next, "/admin/images/normal"))
    return redirect(target.path, "deleted", **dict(parse_qsl(target.query)))


# --- Preprocessing ----------------------------------------------------------------------------------

PREPROCESSING_STEPS = ("grayscale", "contrast", "equalize", "smooth", "normalize")


@router.get("/preprocessing")
def preprocessing_page(
    request: Request,
    session: SessionDep,
    _: AdminDep,
    product_id: int | None = None,
) -> Response:
    """이미지 전처리 설정: switches per product, a live before/after preview, and every product's settings."""
    overview = service.preprocessing_overview(session)
    products = [p for p, _s in overview]
    product = _pick_product(products, product_id)
    current = dict(overview).get(product) if product else None
    sample_images: list[Any] = []
    if product is not None:
        # Normal images first: they are what the memory bank is built from.
        for kind in ("normal", "defect"):
            rows, _total = service.list_images(
                session, product_id=product.id, kind=kind, defect_type_id=None, page=1, page_size=12
            )
            sample_images.extend(rows)
    return render_admin(
        request,
        "admin/catalog/preprocessing_edit.html",
        {
            "active": "preprocessing",
            "overview": overview,
            "product": product,
            "current": current,
            "steps": PREPROCESSING_STEPS,
            "sample_images": sample_images,
            "stale": stale_artifacts(
                request,
                session,
                product_id=product.id if product else None,
                kinds={"search_index", "anomaly_model"},
            ),
        },
    )


@router.post("/preprocessing/{product_id}")
def preprocessing_submit(
    product_id: int,
    session: SessionDep,
    admin: AdminDep,
    steps: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Save a product's switches (its gallery and memory bank become stale)."""
    chosen = set(steps or [])
    settings_in = PreprocessingRead(**{name: name in chosen for name in PREPROCESSING_STEPS})
    service.set_preprocessing(session, product_id=product_id, settings_in=settings_in, actor_id=admin.id)
    return redirect("/admin/preprocessing", "saved", product_id=product_id)


# --- Model selection --------------------------------------------------------------------------------


def _models_page(
    request: Request,
    session: SessionDep,
    settings: Settings,
    models: ModelsDep,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return render_admin(
        request,
        "admin/catalog/model_settings.html",
        {
            "active": "models",
            "current": service.get_model_settings(session),
            "choices": model_choices(settings, models.device),
            "status": models.status(),
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/models")
def models_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    models: ModelsDep,
    _: AdminDep,
) -> Response:
    """모델 선택: the embedder, anomaly backbone and generators, with what this server can run and why not."""
    return _models_page(request, session, settings, models)


@router.post("/models")
def models_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    models: ModelsDep,
    admin: AdminDep,
    embedder: Annotated[str, Form()] = "",
    anomaly_backbone: Annotated[str, Form()] = "",
    default_generator: Annotated[str, Form()] = "",
    allowed_generators: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Save the choices that changed; a choice this server cannot run is refused with the reason."""

    current = service.get_model_settings(session)
    changes: dict[str, Any] = {}
    for key, value in (
        ("embedder", embedder),
        ("anomaly_backbone", anomaly_backbone),
        ("default_generator", default_generator),
    ):
        # The packaged backbone is spelled with "-" in old rows and "_" by the engine: the same model.
        if value and value.replace("-", "_") != str(getattr(current, key)).replace("-", "_"):
            changes[key] = value
    allowed = sorted(set(allowed_generators or []) | ({default_generator} if default_generator else set()))
    if allowed != sorted(current.allowed_generators or []):
        changes["allowed_generators"] = allowed
    try:
        service.set_model_settings(
            session,
            settings_in=ModelSettingsUpdate(**changes),
            available=available_choices(settings, models.device),
            actor_id=admin.id,
        )
    except (ValidationError, DomainError) as exc:
        message, status = error_text(exc, "errors.validation")
        session.rollback()
        return _models_page(request, session, settings, models, error=message, status_code=status)
    return redirect("/admin/models", "saved")
