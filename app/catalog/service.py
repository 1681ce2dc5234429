"""Catalog logic: products, defect types, reference images, preprocessing and model settings."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.catalog.schemas import (
    DefectTypeCreate,
    DefectTypeUpdate,
    ModelSettingsUpdate,
    PreprocessingRead,
    ProductCreate,
    ProductUpdate,
)
from app.core import changelog
from app.core.archives import ArchiveLimits, is_zip, iter_zip_images
from app.core.audit import record_audit
from app.core.config import Settings
from app.core.errors import ConflictError, DomainError, InvalidInputError, NotFoundError
from app.core.i18n import translate
from app.core.images import CheckedImage, ImageLimits, check_image
from app.core.storage import ObjectStorage
from app.db.tables import (
    DefectType,
    Manual,
    ModelSetting,
    PreprocessingSetting,
    Product,
    ReferenceImage,
)
from app.inspection import views as views_service
from app.ml.preprocessing import PreprocessingOptions, apply_preprocessing

logger = logging.getLogger(__name__)

# Previews are drawn at screen size: the steps are cheap there and the look is the same.
PREVIEW_MAX_SIDE = 640

# Called after images are committed (added ids, removed ids) so galleries can follow at once.
ImageChangeHook = Callable[[Sequence[ReferenceImage], Sequence[ReferenceImage]], None]


# --- Products ---------------------------------------------------------------------------------------


def list_products(session: Session, *, include_inactive: bool = False) -> list[Product]:
    """Products by code."""
    query = select(Product).order_by(Product.code)
    if not include_inactive:
        query = query.where(Product.is_active.is_(True))
    return list(session.scalars(query))


def active_product_ids(session: Session) -> list[int]:
    """Ids of the active products."""
    return list(session.scalars(select(Product.id).where(Product.is_active.is_(True)).order_by(Product.id)))


def get_product(session: Session, *, product_id: int) -> Product:
    """A product or NotFoundError."""
    product = session.get(Product, product_id)
    if product is None:
        raise NotFoundError("errors.product_not_found", id=product_id)
    return product


def get_product_by_code(session: Session, *, code: str) -> Product | None:
    """A product by its code, if any."""
    return session.scalar(select(Product).where(Product.code == code))


def create_product(session: Session, *, product_in: ProductCreate, actor_id: int | None) -> Product:
    """Create a product with default preprocessing; the code must be new."""
    if get_product_by_code(session, code=product_in.code) is not None:
        raise ConflictError("errors.product_code_taken", code=product_in.code)
    product = Product(
        code=product_in.code,
        name=product_in.name,
        description=product_in.description,
        view_rule=product_in.view_rule,
        views=views_service.normalise_product_views(product_in.views),
    )
    session.add(product)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise ConflictError("errors.product_code_taken", code=product_in.code) from exc
    session.add(PreprocessingSetting(product_id=product.id))
    record_audit(
        session,
        user_id=actor_id,
        action="create",
        entity="product",
        entity_id=product.id,
        detail={"code": product.code},
    )
    session.commit()
    return product


def update_product(
    session: Session, *, product_id: int, product_in: ProductUpdate, actor_id: int | None
) -> Product:
    """Rename, describe, deactivate or reactivate a product."""
    product = get_product(session, product_id=product_id)
    changes = product_in.model_dump(exclude_unset=True, exclude_none=True)
    if "views" in changes:
        changes["views"] = views_service.normalise_product_views(changes["views"])
    for key, value in changes.items():
        setattr(product, key, value)
    record_audit(
        session, user_id=actor_id, action="update", entity="product", entity_id=product.id, detail=changes
    )
    session.commit()
    return product


def deactivate_product(session: Session, *, product_id: int, actor_id: int | None) -> Product:
    """Soft-delete: the product disappears from choices but its history stays readable."""
    product = get_product(session, product_id=product_id)
    product.is_active = False
    record_audit(session, user_id=actor_id, action="deactivate", entity="product", entity_id=product.id)
    session.commit()
    return product


# --- Defect types -----------------------------------------------------------------------------------


def list_defect_types(
    session: Session, *, product_id: int, include_inactive: bool = False
) -> list[DefectType]:
    """A product's defect types by code."""
    get_product(session, product_id=product_id)
    query = select(DefectType).where(DefectType.product_id == product_id).order_by(DefectType.code)
    if not include_inactive:
        query = query.where(DefectType.is_active.is_(True))
    return list(session.scalars(query))


def get_defect_type(session: Session, *, defect_type_id: int) -> DefectType:
    """A defect type or NotFoundError."""
    defect_type = session.get(DefectType, defect_type_id)
    if defect_type is None:
        raise NotFoundError("errors.defect_type_not_found", id=defect_type_id)
    return defect_type


def create_defect_type(
    session: Session, *, product_id: int, defect_in: DefectTypeCreate, actor_id: int | None
) -> DefectType:
    """Add a defect type to a product; its code is unique within the product."""
    get_product(session, product_id=product_id)
    exists = session.scalar(
        select(DefectType).where(DefectType.product_id == product_id, DefectType.code == defect_in.code)
    )
    if exists is not None:
        raise ConflictError("errors.defect_code_taken", code=defect_in.code)
    defect_type = DefectType(product_id=product_id, **defect_in.model_dump())
    session.add(defect_type)
    session.flush()
    record_audit(
        session,
        user_id=actor_id,
        action="create",
        entity="defect_type",
        entity_id=defect_type.id,
        detail={"code": defect_type.code, "product_id": product_id},
    )
    session.commit()
    return defect_type


def update_defect_type(
    session: Session, *, defect_type_id: int, defect_in: DefectTypeUpdate, actor_id: int | None
) -> DefectType:
    """Rename, describe, deactivate or reactivate a defect type."""
    defect_type = get_defect_type(session, defect_type_id=defect_type_id)
    changes = defect_in.model_dump(exclude_unset=True, exclude_none=True)
    for key, value in changes.items():
        setattr(defect_type, key, value)
    record_audit(
        session,
        user_id=actor_id,
        action="update",
        entity="defect_type",
        entity_id=defect_type.id,
        detail=changes,
    )
    session.commit()
    return defect_type


def deactivate_defect_type(session: Session, *, defect_type_id: int, actor_id: int | None) -> DefectType:
    """Soft-delete a defect type (past inspections keep their labels)."""
    defect_type = get_defect_type(session, defect_type_id=defect_type_id)
    defect_type.is_active = False
    record_audit(
        session, user_id=actor_id, action="deactivate", entity="defect_type", entity_id=defect_type.id
    )
    session.commit()
    return defect_type


# --- Reference images -------------------------------------------------------------------------------


@dataclass
class UploadOutcome:
    """Images created and files refused (reasons already translated)."""

    created: list[ReferenceImage] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def image_limits(settings: Settings) -> ImageLimits:
    """The image limits from settings."""
    return ImageLimits(
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        max_aspect_ratio=settings.max_image_aspect_ratio,
        min_side=settings.min_image_side,
    )


def _checked_uploads(
    files: Sequence[tuple[str, bytes]], settings: Settings
) -> Iterator[tuple[str, CheckedImage | None, str]]:
    """Each file (each image of a ZIP, one at a time) checked: (name, image, "") or (label, None, reason)."""
    limits = image_limits(settings)
    archive_limits = ArchiveLimits(
        max_entries=settings.max_zip_entries,
        max_total_bytes=settings.max_zip_uncompressed_bytes,
        max_entry_bytes=settings.max_upload_bytes,
    )
    for name, data in files:
        if not is_zip(data):
            try:
                yield name, check_image(data, limits, name=name), ""
            except DomainError as exc:
                yield name, None, translate(exc.message_key, **exc.params)
            continue
        if len(data) > settings.max_zip_bytes:
            yield name, None, translate("errors.zip_too_large", limit_mb=settings.max_zip_bytes // 2**20)
            continue
        entries = iter_zip_images(data, archive_limits)
        while True:
            try:
                entry = next(entries)
            except StopIteration:
                break
            except DomainError as exc:  # the archive as a whole (a bomb, unreadable): the rest is refused
                yield name, None, translate(exc.message_key, **exc.params)
                break
            label = f"{name}:{entry.name}"
            if entry.data is None:
                yield label, None, translate(entry.reason or "errors.bad_request", name=entry.name)
                continue
            try:
                yield entry.name, check_image(entry.data, limits, name=entry.name), ""
            except DomainError as exc:
                yield label, None, translate(exc.message_key, **exc.params)


def image_object_key(product: Product, defect_type: DefectType | None, file_name: str) -> str:
    """Where an image lives in the object store."""
    if defect_type is None:
        return f"images/normal/{product.id}/{file_name}"
    return f"images/defect/{product.id}_{defect_type.id}/{file_name}"


def _next_seq(session: Session, product_id: int, kind: str, defect_type_id: int | None) -> int:
    query = select(func.max(ReferenceImage.seq)).where(
        ReferenceImage.product_id == product_id, ReferenceImage.kind == kind
    )
    query = query.where(
        ReferenceImage.defect_type_id == defect_type_id
        if defect_type_id
        else ReferenceImage.defect_type_id.is_(None)
    )
    return (session.scalar(query) or 0) + 1


def _refuse_second_registration(session: Session, inspection_id: int) -> None:
    """409 when the inspection's photo is already in the catalog (the unique constraint said so)."""
    existing = session.scalar(
        select(ReferenceImage.id).where(ReferenceImage.source_inspection_id == inspection_id)
    )
    if existing is not None:
        raise ConflictError("errors.search_already_registered", id=existing)


def add_image(
    session: Session,
    *,
    storage: ObjectStorage,
    product: Product,
    defect_type: DefectType | None,
    image: CheckedImage,
    original_name: str,
    actor_id: int | None,
    source: str = "upload",
    source_inspection_id: int | None = None,
    view: str | None = None,
) -> ReferenceImage:
    """Store one checked image and its row; commits. Never leaves an orphan object or a dangling row.

    The row is flushed first (its unique file name claims the sequence number, so two uploads can never
    write the same key), then the object is written, then the transaction commits; if the commit fails
    the object is removed again.
    """
    kind = "defect" if defect_type is not None else "normal"
    middle = defect_type.code if defect_type is not None else "ok"
    for _attempt in range(5):
        seq = _next_seq(session, product.id, kind, defect_type.id if defect_type else None)
        file_name = f"{product.code}_{middle}_{seq:03d}.{image.extension}"
        row = ReferenceImage(
            product_id=product.id,
            defect_type_id=defect_type.id if defect_type else None,
            kind=kind,
            seq=seq,
            file_name=file_name,
            original_name=original_name[:255],
            object_key=image_object_key(product, defect_type, file_name),
            content_type=image.content_type,
            size_bytes=len(image.data),
            width=image.width,
            height=image.height,
            checksum=image.checksum,
            source=source,
            source_inspection_id=source_inspection_id,
            view=view,
            created_by=actor_id,
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            if source_inspection_id is not None:
                _refuse_second_registration(session, source_inspection_id)
            continue
        break
    else:
        raise ConflictError("errors.busy_try_again")
    try:
        storage.put(row.object_key, image.data, image.content_type)
    except Exception:
        session.rollback()  # the flushed row must not outlive a failed write
        raise
    try:
        record_audit(
            session,
            user_id=actor_id,
            action="create",
            entity="image",
            entity_id=row.id,
            detail={"file_name": row.file_name, "kind": kind},
        )
        session.commit()
    except Exception:
        session.rollback()
        storage.delete(row.object_key)
        raise
    return row


def upload_images(
    session: Session,
    *,
    storage: ObjectStorage,
    settings: Settings,
    product_id: int,
    kind: str,
    defect_type_id: int | None,
    files: Sequence[tuple[str, bytes]],
    actor_id: int | None,
    on_change: ImageChangeHook | None = None,
    view: str | None = None,
) -> UploadOutcome:
    """Register normal or defect images (files or ZIP archives); each file is accepted or refused whole.

    `view` labels them as photos of one view (several views per inspection: a memory bank per view).
    """
    product = get_product(session, product_id=product_id)
    if not product.is_active:
        raise ConflictError("errors.product_inactive", code=product.code)
    if view is not None:
        view = views_service.check_label(view.strip().lower(), product)
    defect_type: DefectType | None = None
    if kind == "defect":
        if defect_type_id is None:
            raise InvalidInputError("errors.defect_type_required")
        defect_type = get_defect_type(session, defect_type_id=defect_type_id)
        if defect_type.product_id != product.id:
            raise InvalidInputError("errors.defect_type_other_product")
    elif kind != "normal":
        raise InvalidInputError("errors.bad_image_kind")
    if not files:
        raise InvalidInputError("errors.no_files")
    outcome = UploadOutcome()
    # One image at a time: checked, stored, committed. Whatever happens later (a refused entry, a
    # failure), every image already stored is handed to the live gallery, never left unsearchable.
    try:
        for name, image, reason in _checked_uploads(files, settings):
            if image is None:
                outcome.rejected.append((name, reason))
                continue
            outcome.created.append(
                add_image(
                    session,
                    storage=storage,
                    product=product,
                    defect_type=defect_type,
                    image=image,
                    original_name=name,
                    actor_id=actor_id,
                    view=view,
                )
            )
    finally:
        if on_change is not None and outcome.created:
            on_change(outcome.created, [])
    return outcome


def list_images(
    session: Session,
    *,
    product_id: int,
    kind: str | None,
    defect_type_id: int | None,
    page: int,
    page_size: int,
) -> tuple[list[ReferenceImage], int]:
    """A page of a product's images, newest first."""
    get_product(session, product_id=product_id)
    query = select(ReferenceImage).where(ReferenceImage.product_id == product_id)
    if kind:
        query = query.where(ReferenceImage.kind == kind)
    if defect_type_id is not None:
        query = query.where(ReferenceImage.defect_type_id == defect_type_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(ReferenceImage.id.desc()).offset((page - 1) * page_size).limit(page_size)
    )
    return list(rows), total


def images_by_view(session: Session, *, product_id: int, kind: str) -> dict[str | None, list[ReferenceImage]]:
    """The product's images of one kind by view label (None: images without a view), oldest first."""
    out: dict[str | None, list[ReferenceImage]] = {}
    for row in session.scalars(
        select(ReferenceImage)
        .where(ReferenceImage.product_id == product_id, ReferenceImage.kind == kind)
        .order_by(ReferenceImage.id)
    ):
        out.setdefault(row.view, []).append(row)
    return out


def normal_images(session: Session, *, product_id: int) -> list[ReferenceImage]:
    """The product's normal images, oldest first."""
    return _images_of_kind(session, product_id, "normal")


def defect_images(session: Session, *, product_id: int) -> list[ReferenceImage]:
    """The product's defect images, oldest first."""
    return _images_of_kind(session, product_id, "defect")


def _images_of_kind(session: Session, product_id: int, kind: str) -> list[ReferenceImage]:
    return list(
        session.scalars(
            select(ReferenceImage)
            .where(ReferenceImage.product_id == product_id, ReferenceImage.kind == kind)
            .order_by(ReferenceImage.id)
        )
    )


def get_image(session: Session, *, image_id: int) -> ReferenceImage:
    """An image row or NotFoundError."""
    image = session.get(ReferenceImage, image_id)
    if image is None:
        raise NotFoundError("errors.image_not_found", id=image_id)
    return image


def delete_image(
    session: Session,
    *,
    storage: ObjectStorage,
    image_id: int,
    actor_id: int | None,
    on_change: ImageChangeHook | None = None,
) -> None:
    """Delete the row, then the object (a failed object delete leaves a logged orphan, not a dangling row)."""
    image = get_image(session, image_id=image_id)
    key = image.object_key
    session.delete(image)
    record_audit(
        session,
        user_id=actor_id,
        action="delete",
        entity="image",
        entity_id=image_id,
        detail={"file_name": image.file_name},
    )
    session.commit()
    try:
        storage.delete(key)
    except Exception:
        logger.exception("could not delete object of image %s; it is now an orphan", image_id)
    if on_change is not None:
        on_change([], [image])


def count_images(session: Session) -> dict[tuple[int, str], int]:
    """Image counts per (product id, kind)."""
    rows = session.execute(
        select(ReferenceImage.product_id, ReferenceImage.kind, func.count()).group_by(
            ReferenceImage.product_id, ReferenceImage.kind
        )
    )
    return {(pid, kind): n for pid, kind, n in rows}


# --- Preprocessing and model settings ---------------------------------------------------------------


def get_preprocessing(session: Session, *, product_id: int) -> PreprocessingSetting:
    """A product's preprocessing (created with defaults if missing)."""
    get_product(session, product_id=product_id)
    row = session.get(PreprocessingSetting, product_id)
    if row is None:
        row = PreprocessingSetting(product_id=product_id)
        session.add(row)
        session.flush()
    return row


def preprocessing_options(session: Session, *, product_ids: Sequence[int]) -> dict[int, PreprocessingOptions]:
    """The preprocessing search and anomaly apply per product (all off without a row); reads only."""
    rows = {
        r.product_id: r
        for r in session.scalars(
            select(PreprocessingSetting).where(PreprocessingSetting.product_id.in_(list(product_ids)))
        )
    }
    out: dict[int, PreprocessingOptions] = {}
    for pid in product_ids:
        row = rows.get(pid)
        out[pid] = (
            PreprocessingOptions(
                grayscale=row.grayscale,
                contrast=row.contrast,
                equalize=row.equalize,
                smooth=row.smooth,
                normalize=row.normalize,
            )
            if row is not None
            else PreprocessingOptions()
        )
    return out


def set_preprocessing(
    session: Session, *, product_id: int, settings_in: PreprocessingRead, actor_id: int | None
) -> PreprocessingSetting:
    """Replace a product's preprocessing switches."""
    row = get_preprocessing(session, product_id=product_id)
    for key, value in settings_in.model_dump().items():
        setattr(row, key, value)
    record_audit(
        session,
        user_id=actor_id,
        action="update",
        entity="preprocessing",
        entity_id=product_id,
        detail=settings_in.model_dump(),
    )
    changelog.record(session, changelog.PREPROCESSING_CHANGED, product_id=product_id)
    session.commit()
    return row


def configured_embedder(session: Session) -> str:
    """The image embedder chosen in model settings (the default when the row does not exist yet)."""
    from app.ml.embedders import EFFICIENTNET_NAME  # torch: only when asked

    row = session.get(ModelSetting, 1)  # read only: never create the row from a read
    return row.embedder if row is not None and row.embedder else EFFICIENTNET_NAME


def get_model_settings(session: Session) -> ModelSetting:
    """The single model-settings row (created with defaults if missing)."""
    row = session.get(ModelSetting, 1)
    if row is None:
        row = ModelSetting(id=1, allowed_generators=["extractive"])
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            # Two first requests at once (two servers, two watched photos): the other one created it.
            session.rollback()
            existing = session.get(ModelSetting, 1)
            if existing is None:
                raise
            row = existing
    return row


def set_model_settings(
    session: Session,
    *,
    settings_in: ModelSettingsUpdate,
    available: dict[str, set[str]],
    actor_id: int | None,
) -> ModelSetting:
    """Change the active models; each choice must be one this server offers (`available` by field)."""
    row = get_model_settings(session)
    changes = settings_in.model_dump(exclude_unset=True)
    for key in ("embedder", "anomaly_backbone", "default_generator"):
        value = changes.get(key)
        if value is not None and key in available and value not in available[key]:
            raise InvalidInputError("errors.model_not_available", name=value)
    for name in changes.get("allowed_generators") or []:
        if "default_generator" in available and name not in available["default_generator"]:
            raise InvalidInputError("errors.model_not_available", name=name)
    for key, value in changes.items():
        if value is not None or key.startswith("search_"):
            setattr(row, key, value)
    record_audit(
        session, user_id=actor_id, action="update", entity="model_settings", entity_id=1, detail=changes
    )
    changelog.record(session, changelog.MODEL_SETTINGS_CHANGED, payload=dict(changes))
    session.commit()
    return row


# --- Admin screens: overviews and the preprocessing preview ------------------------------------------


@dataclass(frozen=True)
class ProductOverview:
    """A product with what is registered for it (the products screen, the dashboard)."""

    product: Product
    normal_images: int
    defect_images: int
    defect_types: int
    manuals: int
    manuals_indexed: int


def product_overviews(session: Session, *, include_inactive: bool = True) -> list[ProductOverview]:
    """Products (inactive ones too by default) with image, active defect-type and manual counts."""
    images = count_images(session)
    defect_types: dict[int, int] = dict(
        session.execute(
            select(DefectType.product_id, func.count())
            .where(DefectType.is_active.is_(True))
            .group_by(DefectType.product_id)
        ).all()
    )
    manuals: dict[int, list[int]] = {}
    for pid, status, count in session.execute(
        select(Manual.product_id, Manual.status, func.count()).group_by(Manual.product_id, Manual.status)
    ):
        totals = manuals.setdefault(pid, [0, 0])
        totals[0] += count
        if status == "indexed":
            totals[1] += count
    return [
        ProductOverview(
            product=p,
            normal_images=images.get((p.id, "normal"), 0),
            defect_images=images.get((p.id, "defect"), 0),
            defect_types=defect_types.get(p.id, 0),
            manuals=manuals.get(p.id, [0, 0])[0],
            manuals_indexed=manuals.get(p.id, [0, 0])[1],
        )
        for p in list_products(session, include_inactive=include_inactive)
    ]


def defect_type_overviews(session: Session, *, product_id: int | None) -> list[tuple[DefectType, int]]:
    """Defect types (inactive too) of one product or all, each with its image count."""
    counts: dict[int | None, int] = dict(
        session.execute(
            select(ReferenceImage.defect_type_id, func.count())
            .where(ReferenceImage.defect_type_id.is_not(None))
            .group_by(ReferenceImage.defect_type_id)
        ).all()
    )
    query = select(DefectType).join(Product).order_by(Product.code, DefectType.code)
    if product_id is not None:
        get_product(session, product_id=product_id)
        query = query.where(DefectType.product_id == product_id)
    return [(d, counts.get(d.id, 0)) for d in session.scalars(query).unique()]


def preprocessing_overview(session: Session) -> list[tuple[Product, PreprocessingRead]]:
    """Every active product with its preprocessing switches (defaults when none are stored)."""
    stored = {row.product_id: row for row in session.scalars(select(PreprocessingSetting))}
    return [
        (p, PreprocessingRead.model_validate(stored[p.id]) if p.id in stored else PreprocessingRead())
        for p in list_products(session)
    ]


def preview_source_image(session: Session, *, product_id: int, image_id: int | None) -> ReferenceImage:
    """The image a preview is drawn from: the one asked for (of this product) or the product's newest."""
    get_product(session, product_id=product_id)
    if image_id is not None:
        chosen = get_image(session, image_id=image_id)
        if chosen.product_id != product_id:
            raise InvalidInputError("errors.admin_image_other_product")
        return chosen
    image = session.scalar(
        select(ReferenceImage)
        .where(ReferenceImage.product_id == product_id)
        .order_by((ReferenceImage.kind == "normal").desc(), ReferenceImage.id.desc())
        .limit(1)
    )
    if image is None:
        raise NotFoundError("errors.admin_no_preview_image")
    return image


def render_preprocessing_preview(
    session: Session,
    *,
    storage: ObjectStorage,
    product_id: int,
    image_id: int | None,
    options: PreprocessingRead,
    max_side: int = PREVIEW_MAX_SIDE,
) -> bytes:
    """A PNG of one product image after `options`, drawn by the function search and anomaly use too."""
    image = preview_source_image(session, product_id=product_id, image_id=image_id)
    with Image.open(io.BytesIO(storage.get(image.object_key))) as source:
        source.load()
        if max(source.size) > max_side:
            source.thumbnail((max_side, max_side))
        out = apply_preprocessing(source, PreprocessingOptions(**options.model_dump()))
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return buffer.getvalue()


def render_thumbnail(session: Session, *, storage: ObjectStorage, image_id: int, size: int) -> bytes:
    """A small JPEG of a registered image for grids (camera photos are far too big to show 24 at once)."""
    image = get_image(session, image_id=image_id)
    with Image.open(io.BytesIO(storage.get(image.object_key))) as source:
        source.draft("RGB", (size, size))  # JPEG decoders can skip most of the work at reduced scale
        source.thumbnail((size, size))
        out = source.convert("RGB")
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=82)
    return buffer.getvalue()
