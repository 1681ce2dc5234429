"""The anomaly step: check an inspection photo against its product's PatchCore model."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from PIL import Image
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.core.errors import ConflictError, ValidationFailedError
from app.core.i18n import translate
from app.core.inference import gated
from app.core.services import Services
from app.db.tables import Inspection, InspectionView, Product, ReferenceImage, User
from app.inspection import outcome as outcome_service
from app.inspection import service as inspection_service
from app.inspection import views as views_service
from app.inspection.anomaly import pictures
from app.inspection.anomaly.schemas import AnomalyRead, ReferenceImageRead, RegionRead
from app.inspection.search.service import batching, nearest_normal_images
from app.ml import anomaly_viz
from app.ml.anomaly_runtime import current_models, prepare
from app.ml.patchcore import PatchCore
from app.ml.preprocessing import PreprocessingOptions

logger = logging.getLogger(__name__)

FILES = pictures.PICTURES
# Regions smaller than this share of the photo are noise, whatever the photo's resolution.
_MIN_REGION_SHARE = 0.0005
# Normal images offered as alternative references on the page.
PICKER_SIZE = 24
# A single-view answer is stored as before this round: without the several-view fields.
_SINGLE_VIEW_EXTRAS = {"view", "bank", "is_fallback", "views", "combination"}


def resolve_product_id(inspection: Inspection, product_id: int | None) -> int:
    """The product to check against: the one asked for, else the search verdict's, else the upload's."""
    chosen = product_id or inspection.verdict_product_id or inspection.product_id
    if chosen is None:
        raise ValidationFailedError("errors.anomaly_product_required")
    return chosen


def _chosen_reference(
    session: Session, *, product_id: int, reference_image_id: int | None
) -> ReferenceImage | None:
    """The reference image the worker chose (404 for a wrong id, 422 for another product's or a defect)."""
    if reference_image_id is None:
        return None
    row = catalog_service.get_image(session, image_id=reference_image_id)
    if row.product_id != product_id or row.kind != "normal":
        raise ValidationFailedError("errors.anomaly_reference_not_normal", id=reference_image_id)
    return row


def _nearest_reference(
    session: Session,
    services: Services,
    *,
    image: Image.Image,
    image_key: str,
    product_id: int,
    options: PreprocessingOptions,
    view: str | None = None,
) -> ReferenceImage | None:
    # A view compares with a normal image of the same view when the product has some.
    of_view = (
        catalog_service.images_by_view(session, product_id=product_id, kind="normal").get(view, [])
        if view
        else []
    )
    for image_id in nearest_normal_images(
        session,
        services=services,
        image=image,
        product_id=product_id,
        k=8 if of_view else 1,
        image_key=image_key,
        options=options,
    ):
        candidate = session.get(ReferenceImage, image_id)
        if candidate is not None and candidate.product_id == product_id and candidate.kind == "normal":
            if of_view and candidate.view != view:
                continue
            return candidate
    if of_view:
        return of_view[0]
    normals = catalog_service.normal_images(session, product_id=product_id)
    return normals[0] if normals else None


@dataclass
class _Checked:
    """One photo's check before it is recorded: its answer and how to draw its pictures (map stored)."""

    photo: inspection_service.Photo
    result: AnomalyRead
    render: dict[str, Any]


def _check_photo(
    session: Session,
    services: Services,
    *,
    photo: inspection_service.Photo,
    size: tuple[int, int],
    model: PatchCore,
    product_id: int,
    reference_image_id: int | None,
    url: Callable[[str], str],
    view: str | None = None,
    bank: str | None = None,
) -> _Checked:
    """Score one photo and store its map (the caller forgets the map if the check is not recorded)."""
    started = time.perf_counter()
    calibration = model.calibration
    assert calibration is not None  # noqa: S101 - callers check it
    chosen = _chosen_reference(session, product_id=product_id, reference_image_id=reference_image_id)
    image = inspection_service.photo_rgb(services, photo)
    options = catalog_service.preprocessing_options(session, product_ids=[product_id])[product_id]
    output = batching(services).detect(model, prepare(image, options))
    amap = output.anomaly_map
    reference = chosen or _nearest_reference(
        session,
        services,
        image=image,
        image_key=photo.checksum,
        product_id=product_id,
        options=options,
        view=view,
    )
    height, width = amap.shape
    min_area = max(16, round(_MIN_REGION_SHARE * width * height))
    found = anomaly_viz.regions(amap, calibration.pixel_threshold, min_area=min_area)
    # The map is at the prepared size; boxes are reported in the original photo's pixels (a large photo
    # is decoded reduced, so its stored size is the reference).
    sx, sy = size[0] / width, size[1] / height
    regions = [
        RegionRead(
            x=round(r.x * sx),
            y=round(r.y * sy),
            width=round(r.width * sx),
            height=round(r.height * sy),
            score=r.score,
        )
        for r in found
    ]
    # Only the map is kept now; the pictures are drawn when someone looks at them (pictures.py).
    token = pictures.store_map(services, photo, amap)
    render = pictures.render_info(
        token=token,
        shape=(height, width),
        pixel_threshold=calibration.pixel_threshold,
        min_area=min_area,
        reference_image_id=reference.id if reference is not None else None,
        options=options,
    )
    result = AnomalyRead(
        product_id=product_id,
        score=output.score,
        threshold=calibration.threshold,
        is_anomaly=output.score > calibration.threshold,
        regions=regions,
        reference_image=(
            ReferenceImageRead(id=reference.id, image_url=f"/api/v1/images/{reference.id}/file")
            if reference is not None
            else None
        ),
        heatmap_url=url("heatmap.png"),
        mask_url=url("mask.png"),
        overlay_url=url("overlay.png"),
        comparison_url=url("comparison.png"),
        pixel_threshold=calibration.pixel_threshold,
        image_width=size[0],
        image_height=size[1],
        elapsed_ms=round((time.perf_counter() - started) * 1000.0, 1),
        view=view,
        bank=bank,
        is_fallback=bank == "product",
    )
    return _Checked(photo, result, render)


@contextmanager
def _recording(session: Session, services: Services, checked: list[_Checked]) -> Iterator[None]:
    """Record the check in the block and commit it; on any failure nothing is kept (the new maps are
    deleted, a previous result keeps its own files)."""
    try:
        yield
        session.commit()
    except BaseException:
        session.rollback()
        for done in checked:
            pictures.forget(services, done.photo, done.render)
        raise


def _view_models(
    services: Services, product: Product, views: list[InspectionView]
) -> list[tuple[InspectionView, PatchCore, str]]:
    """Each view's model: the product's bank for that view, else its view-less bank (409 when neither)."""
    models = current_models(services.models)
    fallback = models.get(product.id)
    out = []
    for view in views:
        model, bank = models.get_view(product.id, view.view), "view"
        if model is None or model.calibration is None:
            model, bank = fallback, "product"
        if model is None or model.calibration is None:
            raise ConflictError("errors.anomaly_model_missing", product=product.name, code=product.code)
        out.append((view, model, bank))
    return out


def _check_views(
    session: Session,
    services: Services,
    *,
    inspection: Inspection,
    product: Product,
    reference_image_id: int | None,
    user: User,
    started: float,
) -> AnomalyRead:
    """Check every view, combine by the product's rule, store each view's answer and the combined one."""
    plan = _view_models(services, product, list(inspection.views))
    reference_row = (
        catalog_service.get_image(session, image_id=reference_image_id) if reference_image_id else None
    )
    # A chosen reference serves the view it shows (or the first view when it has no view label).
    reference_view = (reference_row.view or inspection.views[0].view) if reference_row is not None else None
    checked: list[_Checked] = []
    with _recording(session, services, checked):
        for view, model, bank in plan:
            checked.append(
                _check_photo(
                    session,
                    services,
                    photo=view,
                    size=(view.width, view.height),
                    model=model,
                    product_id=product.id,
                    reference_image_id=reference_image_id if view.view == reference_view else None,
                    url=partial(inspection_service.view_file_url, inspection.id, view.view),
                    view=view.view,
                    bank=bank,
                )
            )
        combined = views_service.combine(
            [
                views_service.ViewAnswer(
                    view=c.result.view or "",
                    score=c.result.score,
                    threshold=c.result.threshold,
                    is_anomaly=c.result.is_anomaly,
                    regions=[r.model_dump() for r in c.result.regions],
                )
                for c in checked
            ],
            product.view_rule or views_service.DEFAULT_RULE,
        )
        deciding = next(c for c in checked if c.result.view == combined.deciding.view)
        elapsed_ms = round((time.perf_counter() - started) * 1000.0, 1)
        result = deciding.result.model_copy(
            update={
                "elapsed_ms": elapsed_ms,
                "views": [c.result.model_dump(mode="json") for c in checked],
                "combination": combined.to_dict(),
            }
        )
        is_first_check = inspection.anomaly_result is None
        previous = [(view, (view.anomaly_result or {}).get("render")) for view, _m, _b in plan]
        for (view, _m, _b), done in zip(plan, checked, strict=True):
            view.anomaly_result = {**done.result.model_dump(mode="json"), "render": done.render}
            view.anomaly_score = done.result.score
            view.is_anomaly = done.result.is_anomaly
        # The combined answer is the deciding view's, with that view's pictures (no render of its own).
        inspection.anomaly_result = result.model_dump(mode="json")
        inspection.anomaly_score = result.score
        inspection.is_anomaly = combined.is_anomaly
        _record_check(
            session,
            inspection=inspection,
            user_id=user.id,
            elapsed_ms=elapsed_ms,
            event={
                "is_rerun": not is_first_check,
                "product_id": product.id,
                "reference_image_id": reference_image_id,
                "score": round(result.score, 6),
                "threshold": round(result.threshold, 6),
                "is_anomaly": combined.is_anomaly,
                "rule": combined.rule,
                "deciding_view": combined.deciding.view,
                "anomalous_views": combined.anomalous,
            },
        )
    for view, render in previous:
        pictures.forget(services, view, render)
    return result


@gated("anomaly", lambda session, services, **kwargs: services)
def check_inspection(
    session: Session,
    *,
    services: Services,
    inspection_id: int,
    product_id: int | None,
    reference_image_id: int | None,
    user: User,
) -> AnomalyRead:
    """Score the photo and store the result with its anomaly map (pictures are drawn when viewed); commits.

    A several-view inspection checks every view (with the product's bank for that view, else its view-less
    bank) and combines them by the product's rule; the answer is the deciding view's, with `views` and
    `combination` added.
    """
    started = time.perf_counter()
    inspection = inspection_service.get_inspection(session, inspection_id=inspection_id)
    outcome_service.ensure_can_change(inspection, user)
    pid = resolve_product_id(inspection, product_id)
    product = catalog_service.get_product(session, product_id=pid)
    if inspection.views:
        return _check_views(
            session,
            services,
            inspection=inspection,
            product=product,
            reference_image_id=reference_image_id,
            user=user,
            started=started,
        )
    model = current_models(services.models).get(pid)
    if model is None or model.calibration is None:
        raise ConflictError("errors.anomaly_model_missing", product=product.name, code=product.code)
    checked = _check_photo(
        session,
        services,
        photo=inspection,
        size=(inspection.width, inspection.height),
        model=model,
        product_id=pid,
        reference_image_id=reference_image_id,
        url=partial(inspection_service.file_url, inspection),
    )
    with _recording(session, services, [checked]):
        render = checked.render
        elapsed_ms = round((time.perf_counter() - started) * 1000.0, 1)
        result = checked.result.model_copy(update={"elapsed_ms": elapsed_ms})
        is_first_check = inspection.anomaly_result is None
        previous_render = (inspection.anomaly_result or {}).get("render")
        inspection.anomaly_result = {
            **result.model_dump(mode="json", exclude=_SINGLE_VIEW_EXTRAS),
            "render": render,
        }
        inspection.anomaly_score = result.score
        inspection.is_anomaly = result.is_anomaly
        _record_check(
            session,
            inspection=inspection,
            user_id=user.id,
            elapsed_ms=elapsed_ms,
            event={
                "is_rerun": not is_first_check,
                "product_id": pid,
                "reference_image_id": render["reference_image_id"],
                "score": round(result.score, 6),
                "threshold": round(result.threshold, 6),
                "is_anomaly": result.is_anomaly,
            },
        )
    pictures.forget(services, inspection, previous_render)
    return result


def _record_check(
    session: Session, *, inspection: Inspection, user_id: int, elapsed_ms: float, event: dict[str, Any]
) -> None:
    """What every finished check records besides its result: status, timing, outcome and the history event."""
    outcome_service.advance_status(inspection, "anomaly_checked")
    inspection.timings_ms = {**(inspection.timings_ms or {}), "anomaly": elapsed_ms}
    outcome_service.refresh_outcome(inspection)
    outcome_service.record_event(session, inspection=inspection, kind="anomaly", user_id=user_id, data=event)


@dataclass
class AnomalyPage:
    """What the anomaly page shows: the stored result if the check ran (a GET never runs it again)."""

    inspection: Inspection
    image_url: str
    products: list[Product]
    product_id: int | None
    normal_images: list[ReferenceImage]
    has_model: bool
    stored: dict[str, Any] | None = None
    can_change: bool = False
    model_missing: str = ""


def page_context(
    session: Session, *, services: Services, inspection_id: int, product_id: int | None, user: User
) -> AnomalyPage:
    """The inspection, the product to check against (query, stored result, verdict, upload), its normals."""
    inspection = inspection_service.get_inspection(session, inspection_id=inspection_id)
    products = catalog_service.list_products(session)
    stored = inspection.anomaly_result
    stored_product = stored.get("product_id") if stored else None
    chosen = product_id or stored_product or inspection.verdict_product_id or inspection.product_id
    if chosen is not None and chosen not in {p.id for p in products}:
        # 404 for a wrong id; an inactive product named by the verdict stays selectable.
        products = [*products, catalog_service.get_product(session, product_id=chosen)]
    normals = (
        catalog_service.normal_images(session, product_id=chosen)[:PICKER_SIZE] if chosen is not None else []
    )
    loaded = current_models(services.models)
    has_model = chosen is not None and (
        loaded.get(chosen) is not None or (bool(inspection.views) and bool(loaded.views_of(chosen)))
    )
    missing = ""
    if chosen is not None and not has_model:
        product = catalog_service.get_product(session, product_id=chosen)
        missing = translate("errors.anomaly_model_missing", product=product.name, code=product.code)
    return AnomalyPage(
        inspection=inspection,
        image_url=inspection_service.image_url(inspection),
        products=products,
        product_id=chosen,
        normal_images=normals,
        has_model=has_model,
        # a result for another product than the one now selected is not shown as this product's
        stored=stored if stored and (product_id is None or stored_product == product_id) else None,
        can_change=outcome_service.can_change(inspection, user),
        model_missing=missing,
    )
