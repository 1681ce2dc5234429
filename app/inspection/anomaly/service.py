"""The anomaly step: check an inspection photo against its product's PatchCore model."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.core.errors import ConflictError, ValidationFailedError
from app.core.i18n import translate
from app.core.inference import gated
from app.core.services import Services
from app.db.tables import Inspection, Product, ReferenceImage, User
from app.inspection import outcome as outcome_service
from app.inspection import service as inspection_service
from app.inspection.anomaly import pictures
from app.inspection.anomaly.schemas import AnomalyRead, ReferenceImageRead, RegionRead
from app.inspection.search.service import batching, nearest_normal_images
from app.ml import anomaly_viz
from app.ml.anomaly_runtime import current_models, prepare

logger = logging.getLogger(__name__)

FILES = pictures.PICTURES
# Regions smaller than this share of the photo are noise, whatever the photo's resolution.
_MIN_REGION_SHARE = 0.0005
# Normal images offered as alternative references on the page.
PICKER_SIZE = 24


def resolve_product_id(inspection: Inspection, product_id: int | None) -> int:
    """The product to check against: the one asked for, else the search verdict's, else the upload's."""
    chosen = product_id or inspection.verdict_product_id or inspection.product_id
    if chosen is None:
        raise ValidationFailedError("errors.anomaly_product_required")
    return chosen


def _reference_image(
    session: Session,
    services: Services,
    *,
    image: Image.Image,
    image_key: str,
    product_id: int,
    reference_image_id: int | None,
) -> ReferenceImage | None:
    if reference_image_id is not None:
        row = catalog_service.get_image(session, image_id=reference_image_id)  # 404 for a wrong id
        if row.product_id != product_id or row.kind != "normal":
            raise ValidationFailedError("errors.anomaly_reference_not_normal", id=reference_image_id)
        return row
    for image_id in nearest_normal_images(
        session, services=services, image=image, product_id=product_id, k=1, image_key=image_key
    ):
        candidate = session.get(ReferenceImage, image_id)
        if candidate is not None and candidate.product_id == product_id and candidate.kind == "normal":
            return candidate
    normals = catalog_service.normal_images(session, product_id=product_id)
    return normals[0] if normals else None


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
    """Score the photo and store the result with its anomaly map (pictures are drawn when viewed); commits."""
    started = time.perf_counter()
    inspection = inspection_service.get_inspection(session, inspection_id=inspection_id)
    outcome_service.ensure_can_change(inspection, user)
    pid = resolve_product_id(inspection, product_id)
    product = catalog_service.get_product(session, product_id=pid)
    model = current_models(services.models).get(pid)
    if model is None or model.calibration is None:
        raise ConflictError("errors.anomaly_model_missing", product=product.name, code=product.code)
    storage = services.storage
    photo = inspection_service.load_rgb(storage, inspection, max_side=services.settings.max_decode_side)
    reference = _reference_image(
        session,
        services,
        image=photo,
        image_key=inspection.checksum,
        product_id=pid,
        reference_image_id=reference_image_id,
    )
    options = catalog_service.preprocessing_options(session, product_ids=[pid])[pid]
    prepared = prepare(photo, options)
    output = batching(services).detect(model, prepared)
    calibration = model.calibration
    amap = output.anomaly_map
    height, width = amap.shape
    min_area = max(16, round(_MIN_REGION_SHARE * width * height))
    found = anomaly_viz.regions(amap, calibration.pixel_threshold, min_area=min_area)
    # The map is at the prepared size; boxes are reported in the original photo's pixels (a large photo
    # is decoded reduced, so its stored size is the reference).
    sx, sy = inspection.width / width, inspection.height / height
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
    is_first_check = inspection.anomaly_result is None
    previous_render = (inspection.anomaly_result or {}).get("render")
    # Only the map is kept now; the pictures are drawn when someone looks at them (pictures.py).
    token = pictures.store_map(services, inspection, amap)
    render = pictures.render_info(
        token=token,
        shape=(height, width),
        pixel_threshold=calibration.pixel_threshold,
        min_area=min_area,
        reference_image_id=reference.id if reference is not None else None,
        options=options,
    )
    elapsed_ms = round((time.perf_counter() - started) * 1000.0, 1)
    result = AnomalyRead(
        product_id=pid,
        score=output.score,
        threshold=calibration.threshold,
        is_anomaly=output.score > calibration.threshold,
        regions=regions,
        reference_image=(
            ReferenceImageRead(id=reference.id, image_url=f"/api/v1/images/{reference.id}/file")
            if reference is not None
            else None
        ),
        heatmap_url=inspection_service.file_url(inspection, "heatmap.png"),
        mask_url=inspection_service.file_url(inspection, "mask.png"),
        overlay_url=inspection_service.file_url(inspection, "overlay.png"),
        comparison_url=inspection_service.file_url(inspection, "comparison.png"),
        pixel_threshold=calibration.pixel_threshold,
        image_width=inspection.width,
        image_height=inspection.height,
        elapsed_ms=elapsed_ms,
    )
    inspection.anomaly_result = {**result.model_dump(mode="json"), "render": render}
    inspection.anomaly_score = result.score
    inspection.is_anomaly = result.is_anomaly
    outcome_service.advance_status(inspection, "anomaly_checked")
    inspection.timings_ms = {**(inspection.timings_ms or {}), "anomaly": elapsed_ms}
    outcome_service.refresh_outcome(inspection)
    outcome_service.record_event(
        session,
        inspection=inspection,
        kind="anomaly",
        user_id=user.id,
        data={
            "is_rerun": not is_first_check,
            "product_id": pid,
            "reference_image_id": reference.id if reference is not None else None,
            "score": round(result.score, 6),
            "threshold": round(result.threshold, 6),
            "is_anomaly": result.is_anomaly,
        },
    )
    try:
        session.commit()
    except Exception:
        session.rollback()
        # The new map is never referenced; the previous result (if any) keeps its own files.
        pictures.forget(services, inspection, render)
        raise
    pictures.forget(services, inspection, previous_render)
    return result


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
    has_model = chosen is not None and current_models(services.models).get(chosen) is not None
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
