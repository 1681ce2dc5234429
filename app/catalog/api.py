"""Catalog routes: products, defect types, images, preprocessing, model settings."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import AdminDep, CurrentUserDep, get_current_user
from app.catalog import service
from app.catalog.dependencies import DefectTypeDep, ProductDep
from app.catalog.model_choices import available_choices, image_change_hook, model_choices
from app.catalog.schemas import (
    DefectTypeCreate,
    DefectTypeRead,
    DefectTypeUpdate,
    ImageCreated,
    ImagePage,
    ImageRead,
    ImageRejected,
    ImageUploadResult,
    ModelChoiceRead,
    ModelSettingsRead,
    ModelSettingsUpdate,
    PreprocessingRead,
    ProductCreate,
    ProductRead,
    ProductUpdate,
)
from app.core.dependencies import ModelsDep, ServicesDep, SettingsDep, StorageDep
from app.core.files import object_response, read_upload
from app.core.i18n import translate_reason
from app.db.session import SessionDep

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["catalog"], dependencies=[Depends(get_current_user)])


@router.get("/products")
def list_products(
    session: SessionDep, _: CurrentUserDep, include_inactive: bool = False
) -> list[ProductRead]:
    """Products (active ones unless asked)."""
    products = service.list_products(session, include_inactive=include_inactive)
    return [ProductRead.model_validate(p) for p in products]


@router.post("/products", status_code=201)
def create_product(product_in: ProductCreate, session: SessionDep, admin: AdminDep) -> ProductRead:
    """Create a product."""
    return ProductRead.model_validate(
        service.create_product(session, product_in=product_in, actor_id=admin.id)
    )


@router.get("/products/{product_id}")  # noqa: FAST003 - ProductDep reads it
def get_product(product: ProductDep, _: CurrentUserDep) -> ProductRead:
    """One product."""
    return ProductRead.model_validate(product)


@router.patch("/products/{product_id}")
def update_product(
    product_id: int, product_in: ProductUpdate, session: SessionDep, admin: AdminDep
) -> ProductRead:
    """Change a product."""
    product = service.update_product(session, product_id=product_id, product_in=product_in, actor_id=admin.id)
    return ProductRead.model_validate(product)


@router.delete("/products/{product_id}")
def delete_product(product_id: int, session: SessionDep, admin: AdminDep) -> ProductRead:
    """Deactivate a product (its history stays readable)."""
    return ProductRead.model_validate(
        service.deactivate_product(session, product_id=product_id, actor_id=admin.id)
    )


@router.get("/products/{product_id}/defect-types")
def list_defect_types(
    product_id: int, session: SessionDep, _: CurrentUserDep, include_inactive: bool = False
) -> list[DefectTypeRead]:
    """A product's defect types."""
    rows = service.list_defect_types(session, product_id=product_id, include_inactive=include_inactive)
    return [DefectTypeRead.model_validate(d) for d in rows]


@router.post("/products/{product_id}/defect-types", status_code=201)
def create_defect_type(
    product_id: int, defect_in: DefectTypeCreate, session: SessionDep, admin: AdminDep
) -> DefectTypeRead:
    """Add a defect type to a product."""
    row = service.create_defect_type(session, product_id=product_id, defect_in=defect_in, actor_id=admin.id)
    return DefectTypeRead.model_validate(row)


@router.get("/defect-types/{defect_type_id}")  # noqa: FAST003 - DefectTypeDep reads it
def get_defect_type(defect_type: DefectTypeDep, _: CurrentUserDep) -> DefectTypeRead:
    """One defect type."""
    return DefectTypeRead.model_validate(defect_type)


@router.patch("/defect-types/{defect_type_id}")
def update_defect_type(
    defect_type_id: int, defect_in: DefectTypeUpdate, session: SessionDep, admin: AdminDep
) -> DefectTypeRead:
    """Change a defect type."""
    row = service.update_defect_type(
        session, defect_type_id=defect_type_id, defect_in=defect_in, actor_id=admin.id
    )
    return DefectTypeRead.model_validate(row)


@router.delete("/defect-types/{defect_type_id}")
def delete_defect_type(defect_type_id: int, session: SessionDep, admin: AdminDep) -> DefectTypeRead:
    """Deactivate a defect type."""
    row = service.deactivate_defect_type(session, defect_type_id=defect_type_id, actor_id=admin.id)
    return DefectTypeRead.model_validate(row)


def image_read(image: object) -> ImageRead:
    """An image row with its URL."""
    read = ImageRead.model_validate(image)
    read.image_url = f"/api/v1/images/{read.id}/file"
    return read


@router.post("/products/{product_id}/images", status_code=201)
async def upload_images(
    product_id: int,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    services: ServicesDep,
    admin: AdminDep,
    kind: Annotated[Literal["normal", "defect"], Form()],
    files: Annotated[list[UploadFile], File()],
    defect_type_id: Annotated[int | None, Form()] = None,
    view: Annotated[str | None, Form(max_length=64)] = None,
) -> ImageUploadResult:
    """Register images (files or ZIP archives of images); refused files are listed with reasons."""
    limit = max(settings.max_upload_bytes, settings.max_zip_bytes)
    payload = [(upload.filename or "upload", await read_upload(upload, limit=limit)) for upload in files]

    def register() -> ImageUploadResult:
        outcome = service.upload_images(
            session,
            storage=storage,
            settings=settings,
            product_id=product_id,
            kind=kind,
            defect_type_id=defect_type_id,
            view=view or None,
            files=payload,
            actor_id=admin.id,
            on_change=image_change_hook(services),
        )
        return ImageUploadResult(
            created=[
                ImageCreated(
                    id=i.id, file_name=i.file_name, kind=i.kind, defect_type_id=i.defect_type_id, view=i.view
                )
                for i in outcome.created
            ],
            rejected=[ImageRejected(file_name=name, reason=reason) for name, reason in outcome.rejected],
        )

    return await run_in_threadpool(register)


@router.get("/products/{product_id}/images")
def list_images(
    product_id: int,
    session: SessionDep,
    _: CurrentUserDep,
    kind: Literal["normal", "defect"] | None = None,
    defect_type_id: int | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ImagePage:
    """A page of a product's images."""
    rows, total = service.list_images(
        session,
        product_id=product_id,
        kind=kind,
        defect_type_id=defect_type_id,
        page=page,
        page_size=page_size,
    )
    return ImagePage(items=[image_read(r) for r in rows], total=total)


@router.get("/images/{image_id}")
def get_image(image_id: int, session: SessionDep, _: CurrentUserDep) -> ImageRead:
    """One image's metadata."""
    return image_read(service.get_image(session, image_id=image_id))


@router.get("/images/{image_id}/file")
def get_image_file(
    image_id: int, session: SessionDep, storage: StorageDep, settings: SettingsDep, _: CurrentUserDep
) -> Response:
    """The image bytes, or a redirect to a short-lived URL."""
    image = service.get_image(session, image_id=image_id)
    return object_response(
        storage, settings, key=image.object_key, content_type=image.content_type, file_name=image.file_name
    )


@router.get("/images/{image_id}/thumbnail")
def get_image_thumbnail(
    image_id: int,
    session: SessionDep,
    storage: StorageDep,
    _: CurrentUserDep,
    size: Annotated[int, Query(ge=32, le=512)] = 256,
) -> Response:
    """A small JPEG of the image (cacheable: pages add the checksum to the URL)."""
    data = service.render_thumbnail(session, storage=storage, image_id=image_id, size=size)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@router.delete("/images/{image_id}", status_code=204)
def delete_image(
    image_id: int, session: SessionDep, storage: StorageDep, services: ServicesDep, admin: AdminDep
) -> Response:
    """Delete an image from the catalog, the object store and the galleries."""
    service.delete_image(
        session, storage=storage, image_id=image_id, actor_id=admin.id, on_change=image_change_hook(services)
    )
    return Response(status_code=204)


@router.get("/products/{product_id}/preprocessing")
def get_preprocessing(product_id: int, session: SessionDep, _: CurrentUserDep) -> PreprocessingRead:
    """A product's preprocessing switches."""
    return PreprocessingRead.model_validate(service.get_preprocessing(session, product_id=product_id))


@router.put("/products/{product_id}/preprocessing")
def put_preprocessing(
    product_id: int, settings_in: PreprocessingRead, session: SessionDep, admin: AdminDep
) -> PreprocessingRead:
    """Replace a product's preprocessing switches (galleries and memory banks become stale)."""
    row = service.set_preprocessing(
        session, product_id=product_id, settings_in=settings_in, actor_id=admin.id
    )
    return PreprocessingRead.model_validate(row)


@router.get("/settings/models/choices")
def get_model_choices(
    settings: SettingsDep, models: ModelsDep, _: AdminDep
) -> dict[str, list[ModelChoiceRead]]:
    """Every model choice per settings field, with whether this server can run it and why not."""
    return {
        field_name: [
            ModelChoiceRead(
                name=c.name,
                label=translate_reason(c.label),
                is_available=c.is_available,
                reason=translate_reason(c.reason),
            )
            for c in choices
        ]
        for field_name, choices in model_choices(settings, models.device).items()
    }


@router.get("/products/{product_id}/preprocessing/preview")
def preview_preprocessing(
    product_id: int,
    session: SessionDep,
    storage: StorageDep,
    _: AdminDep,
    options: Annotated[PreprocessingRead, Query()],
    image_id: int | None = None,
) -> Response:
    """A PNG of one of the product's images with the given switches applied (nothing is saved)."""
    png = service.render_preprocessing_preview(
        session, storage=storage, product_id=product_id, image_id=image_id, options=options
    )
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/settings/models")
def get_model_settings(session: SessionDep, _: CurrentUserDep) -> ModelSettingsRead:
    """Which embedder, anomaly backbone and generators are active."""
    return ModelSettingsRead.model_validate(service.get_model_settings(session))


@router.put("/settings/models")
def put_model_settings(
    settings_in: ModelSettingsUpdate,
    session: SessionDep,
    settings: SettingsDep,
    models: ModelsDep,
    admin: AdminDep,
) -> ModelSettingsRead:
    """Change the active models (only ones this server has, whether or not models are loaded)."""
    row = service.set_model_settings(
        session,
        settings_in=settings_in,
        available=available_choices(settings, models.device),
        actor_id=admin.id,
    )
    return ModelSettingsRead.model_validate(row)
