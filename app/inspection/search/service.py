"""The search step: similar known defects, the verdict, registering the photo as a new defect."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.catalog.model_choices import image_change_hook
from app.core.errors import ConflictError, InvalidInputError, NotFoundError
from app.core.images import check_image
from app.core.inference import gated
from app.core.services import Services
from app.db.tables import DefectType, Inspection, ModelSetting, Product, ReferenceImage, User
from app.inspection import outcome as outcome_service
from app.inspection import service as inspection_service
from app.inspection.search.schemas import (
    GalleryStatus,
    NamedRef,
    RegisterPreview,
    RegisterRead,
    SearchMatch,
    SearchRead,
    VerdictRead,
)
from app.ml.anomaly_runtime import current_models, prepare
from app.ml.batching import UNBATCHED, ModelBatching
from app.ml.gallery import GalleryHit
from app.ml.identification import REGION, WHOLE, Identified, describe_region, model_fingerprint
from app.ml.preprocessing import PreprocessingOptions
from app.ml.search_runtime import SEARCH, SearchEngine
from app.ml.verdict import compute_verdict

# The verdict always votes over this many hits, whatever TOP-K the worker displays (calibration used 10).
VERDICT_K = 10


def _engine(services: Services) -> SearchEngine | None:
    return services.models.get(SEARCH)


def settings_mismatch(
    session: Session, *, engine: SearchEngine, product_ids: Sequence[int] | None = None
) -> bool:
    """True when the live index was built with another embedder or other preprocessing than configured.

    Cheap (no image listing), for the request path; `states` gives the full picture for admins.
    """
    if engine.embedder_name != catalog_service.configured_embedder(session):
        return True
    gallery = engine.gallery("defect")
    if gallery is None:
        return False
    scope = list(product_ids) if product_ids is not None else sorted(gallery.count_by_product())
    current = catalog_service.preprocessing_options(session, product_ids=scope)
    return any(gallery.preprocessing_keys.get(pid, current[pid].key()) != current[pid].key() for pid in scope)


def _named(row: Product | DefectType) -> NamedRef:
    return NamedRef(id=row.id, code=row.code, name=row.name)


def _ref(row: Product | DefectType | None) -> NamedRef | None:
    return None if row is None else _named(row)


def image_url(image_id: int) -> str:
    """The API URL of a catalog image's file."""
    return f"/api/v1/images/{image_id}/file"


def gallery_status(session: Session, *, services: Services) -> GalleryStatus:
    """Embedder, image counts and overall state of the search index (upload page)."""
    engine = _engine(services)
    if engine is None:
        return GalleryStatus(embedder=None, defect_images=0, normal_images=0, built_at=None, state="missing")
    defect, normal = engine.gallery("defect"), engine.gallery("normal")
    if engine.is_built:
        state = "stale" if settings_mismatch(session, engine=engine) else "current"
    else:
        state = "stale" if engine.note else "missing"
    return GalleryStatus(
        embedder=engine.embedder.embedder_id,
        defect_images=defect.count if defect else 0,
        normal_images=normal.count if normal else 0,
        built_at=engine.built_at,
        state=state,
    )


def batching(services: Services) -> ModelBatching:
    """The app's micro-batching of model calls (each call alone where the services have none)."""
    return services.batching or UNBATCHED


def _built_engine(services: Services) -> SearchEngine:
    engine = _engine(services)
    if engine is None or not engine.is_built:
        raise ConflictError("errors.search_index_missing")
    return engine


def _query_hits(
    session: Session,
    engine: SearchEngine,
    embed: Callable[[PreprocessingOptions], np.ndarray],
    *,
    k: int,
    product_id: int | None,
    vectors: dict[int, np.ndarray] | None = None,
) -> list[GalleryHit]:
    """Nearest defect images; products with different preprocessing get their own query embedding.

    `embed` gives the query photo's vector with given preprocessing; `vectors`, when given, receives the
    query embedding used for each product searched.
    """
    out = vectors if vectors is not None else {}
    gallery = engine.gallery("defect")
    assert gallery is not None  # noqa: S101 - callers check is_built
    in_gallery = sorted(gallery.count_by_product())
    if product_id is not None:
        product_ids = [product_id]
    else:
        # a deactivated product's images stay in the gallery until the next rebuild: never answer with them
        active = set(catalog_service.active_product_ids(session))
        product_ids = [pid for pid in in_gallery if pid in active]
        if not product_ids:
            raise ConflictError("errors.search_no_defect_images")
    current = catalog_service.preprocessing_options(session, product_ids=product_ids)
    groups: dict[str, tuple[PreprocessingOptions, list[int]]] = {}
    for pid in product_ids:
        options = engine.options_for("defect", pid, current[pid])
        groups.setdefault(options.key(), (options, []))[1].append(pid)
    if product_id is None and len(groups) == 1 and len(product_ids) == len(in_gallery):
        options = next(iter(groups.values()))[0]
        vector = embed(options)
        out.update(dict.fromkeys(product_ids, vector))
        return engine.search("defect", vector, k)
    hits: list[GalleryHit] = []
    for options, pids in groups.values():
        vector = embed(options)
        for pid in pids:
            out[pid] = vector
            hits.extend(engine.search("defect", vector, k, pid))
    hits.sort(key=lambda h: (-h.score, h.image_id))
    return hits[:k]


def _thresholds(
    session: Session, services: Services, engine: SearchEngine, product_id: int | None
) -> tuple[float, float, str]:
    """(min_score, min_margin, source): admin settings, else calibrated per product, else defaults."""
    setting = session.get(ModelSetting, 1)
    calibrated = engine.threshold_for(product_id)
    source = "default"
    min_score, min_margin = services.settings.search_min_score, services.settings.search_min_margin
    if calibrated is not None:
        min_score, min_margin, source = calibrated.min_score, calibrated.min_margin, "calibrated"
    if setting is not None and setting.search_min_score is not None:
        min_score, source = setting.search_min_score, "settings"
    if setting is not None and setting.search_min_margin is not None:
        min_margin, source = setting.search_min_margin, "settings"
    return float(min_score), float(min_margin), source


def _identify(
    session: Session,
    services: Services,
    engine: SearchEngine,
    image: Image.Image,
    product_id: int | None,
    vectors: dict[int, np.ndarray],
) -> Identified | None:
    """The product's identification answer, or None when it has no identification data (old build)."""
    if product_id is None or product_id not in vectors:
        return None
    found = engine.identification.get(product_id)
    if found is None or found.count == 0 or WHOLE not in found.calibrations:
        return None
    model = current_models(services.models).calibrated(product_id)
    if model is None or found.method_for(model_fingerprint(model)) != REGION:
        return found.identify(vectors[product_id])
    options = catalog_service.preprocessing_options(session, product_ids=[product_id])[product_id]
    region = describe_region(model, prepare(image, options))
    return found.identify(vectors[product_id], region, fingerprint=model_fingerprint(model))


def _matches(session: Session, hits: Sequence[GalleryHit]) -> list[SearchMatch]:
    rows = {
        r.id: r
        for r in session.scalars(
            select(ReferenceImage).where(ReferenceImage.id.in_([h.image_id for h in hits]))
        )
    }
    out = []
    for hit in hits:
        row = rows.get(hit.image_id)
        if row is None:  # deleted after the gallery was saved and the hook missed it: never show it
            continue
        out.append(
            SearchMatch(
                image_id=row.id,
                score=round(hit.score, 6),
                image_url=image_url(row.id),
                file_name=row.file_name,
                product=_named(row.product),
                defect_type=_ref(row.defect_type),
            )
        )
    return out


def _search_photo(
    session: Session,
    services: Services,
    engine: SearchEngine,
    photo: inspection_service.Photo,
    *,
    inspection_id: int,
    top_k: int,
    scope: int | None,
) -> SearchRead:
    """Search the defect gallery for one photo and decide its verdict (nothing is stored)."""
    started = time.perf_counter()
    image = inspection_service.photo_rgb(services, photo)
    vectors: dict[int, np.ndarray] = {}
    # Remembered by the photo's checksum: the anomaly step's reference lookup reuses the same vector.
    hits = _query_hits(
        session,
        engine,
        lambda options: batching(services).embed(engine, image, options, image_key=photo.checksum),
        k=max(top_k, VERDICT_K),
        product_id=scope,
        vectors=vectors,
    )
    raw = compute_verdict(hits[:VERDICT_K], min_score=-math.inf, min_margin=-math.inf)
    min_score, min_margin, source = _thresholds(session, services, engine, raw.product_id)
    found = _identify(session, services, engine, image, raw.product_id, vectors)
    confidence: float | None = None
    method = "whole"
    if found is not None:
        # The product's identification (region-aware when its anomaly model exists) names the defect type.
        raw = replace(
            raw, defect_type_id=found.defect_type_id, score=found.score, margin=found.margin, is_unknown=False
        )
        confidence, method = round(found.confidence, 4), found.method
        is_unknown = found.is_unknown
        if source == "settings":  # an admin's explicit thresholds still apply
            is_unknown = is_unknown or raw.score < min_score or raw.margin < min_margin
    else:
        is_unknown = raw.product_id is None or raw.score < min_score or raw.margin < min_margin
    product_row = session.get(Product, raw.product_id) if raw.product_id is not None else None
    defect_row = session.get(DefectType, raw.defect_type_id) if raw.defect_type_id is not None else None
    verdict = VerdictRead(
        product_id=raw.product_id,
        defect_type_id=raw.defect_type_id,
        score=round(raw.score, 6),
        margin=round(raw.margin, 6),
        is_unknown=is_unknown,
        product=_ref(product_row),
        defect_type=_ref(defect_row),
        min_score=round(min_score, 6),
        min_margin=round(min_margin, 6),
        threshold_source=source,
        confidence=confidence,
        method=method,
    )
    matches = _matches(session, hits[:top_k])
    is_stale = settings_mismatch(session, engine=engine, product_ids=None if scope is None else [scope])
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    result = SearchRead(
        inspection_id=inspection_id,
        matches=matches,
        verdict=verdict,
        chosen_image_id=None,
        top_k=top_k,
        product_id=scope,
        embedder=engine.embedder.embedder_id,
        is_stale=is_stale,
        elapsed_ms=elapsed_ms,
        next_product_id=scope if scope is not None else raw.product_id,
    )
    return result


@gated("search", lambda session, **kwargs: kwargs["services"])
def search_inspection(
    session: Session,
    *,
    services: Services,
    inspection_id: int,
    top_k: int,
    product_id: int | None,
    user: User,
) -> SearchRead:
    """Search the defect gallery for the inspection's photo, decide the verdict and store both; commits."""
    started = time.perf_counter()
    inspection = inspection_service.get_inspection(session, inspection_id=inspection_id)
    outcome_service.ensure_can_change(inspection, user)
    engine = _built_engine(services)
    gallery = engine.gallery("defect")
    assert gallery is not None  # noqa: S101 - _built_engine checked it
    if gallery.count == 0:
        raise ConflictError("errors.search_no_defect_images")
    scope = product_id if product_id is not None else inspection.product_id
    if scope is not None:
        product = catalog_service.get_product(session, product_id=scope)
        if not gallery.count_by_product().get(scope):
            raise ConflictError("errors.search_product_no_images", product=product.name)
    result = _search_photo(
        session, services, engine, inspection, inspection_id=inspection.id, top_k=top_k, scope=scope
    )
    # Several views: each view is searched too; the inspection's own answer is its first view's.
    for view in inspection.views:
        view.search_result = (
            result
            if view.position == 0
            else _search_photo(
                session, services, engine, view, inspection_id=inspection.id, top_k=top_k, scope=scope
            )
        ).model_dump(mode="json")
    verdict = result.verdict
    is_unknown = verdict.is_unknown
    raw_product_id, raw_defect_type_id = verdict.product_id, verdict.defect_type_id
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    result.elapsed_ms = elapsed_ms
    inspection.search_result = result.model_dump(mode="json")
    inspection.verdict_product_id = raw_product_id
    inspection.verdict_defect_type_id = raw_defect_type_id
    inspection.verdict_score = verdict.score
    inspection.is_unknown = is_unknown
    inspection.chosen_image_id = None
    outcome_service.advance_status(inspection, "searched")
    inspection.timings_ms = {**(inspection.timings_ms or {}), "search": elapsed_ms}
    # a pick among the old matches is gone with them; a registration stays the worker's answer
    outcome_service.refresh_outcome(
        inspection, clear_choice=outcome_service.has_worker_choice(inspection, "choose")
    )
    outcome_service.record_event(
        session,
        inspection=inspection,
        kind="search",
        user_id=user.id,
        data={
            "top_k": top_k,
            "product_id": scope,
            "verdict_defect_type_id": raw_defect_type_id,
            "is_unknown": is_unknown,
        },
    )
    session.commit()
    return result


def stored_search(inspection: Inspection) -> SearchRead | None:
    """The search result stored on the inspection, if the step ran."""
    return SearchRead.model_validate(inspection.search_result) if inspection.search_result else None


def choose_match(session: Session, *, inspection_id: int, image_id: int | None, user: User) -> SearchRead:
    """Make one of the stored matches the worker's TOP-1 (None: back to the best match); commits.

    A chosen match becomes the inspection's outcome (source "worker"); going back drops that choice.
    """
    inspection = inspection_service.get_inspection(session, inspection_id=inspection_id)
    outcome_service.ensure_can_change(inspection, user)
    result = stored_search(inspection)
    if result is None:
        raise ConflictError("errors.search_not_run")
    chosen = None
    if image_id is not None:
        chosen = next((m for m in result.matches if m.image_id == image_id), None)
        if chosen is None:
            raise NotFoundError("errors.search_match_not_found", id=image_id)
    result.chosen_image_id = image_id
    result.next_product_id = (
        chosen.product.id
        if chosen is not None
        else (result.product_id if result.product_id is not None else result.verdict.product_id)
    )
    inspection.search_result = result.model_dump(mode="json")
    inspection.chosen_image_id = image_id
    if chosen is not None:
        outcome_service.refresh_outcome(
            inspection,
            choice=outcome_service.worker_choice(
                user=user,
                product_id=chosen.product.id,
                defect_type_id=chosen.defect_type.id if chosen.defect_type else None,
                action="choose",
            ),
        )
    else:
        outcome_service.refresh_outcome(
            inspection, clear_choice=outcome_service.has_worker_choice(inspection, "choose")
        )
    outcome_service.record_event(
        session,
        inspection=inspection,
        kind="choose",
        user_id=user.id,
        data={
            "image_id": image_id,
            "defect_type_id": chosen.defect_type.id if chosen is not None and chosen.defect_type else None,
        },
    )
    session.commit()
    return result


def _registration_target(
    session: Session, *, product_id: int, defect_type_id: int
) -> tuple[Product, DefectType]:
    product = catalog_service.get_product(session, product_id=product_id)
    defect_type = catalog_service.get_defect_type(session, defect_type_id=defect_type_id)
    if defect_type.product_id != product.id:
        raise InvalidInputError("errors.defect_type_other_product")
    if not product.is_active:
        raise ConflictError("errors.product_inactive", code=product.code)
    if not defect_type.is_active:
        raise ConflictError("errors.search_defect_type_inactive", name=defect_type.name)
    return product, defect_type


def registration_preview(
    session: Session, *, inspection_id: int, product_id: int, defect_type_id: int
) -> RegisterPreview:
    """The catalog file name the photo would get if registered now."""
    inspection = inspection_service.get_inspection(session, inspection_id=inspection_id)
    product, defect_type = _registration_target(session, product_id=product_id, defect_type_id=defect_type_id)
    last = session.scalar(
        select(func.max(ReferenceImage.seq)).where(
            ReferenceImage.product_id == product.id,
            ReferenceImage.kind == "defect",
            ReferenceImage.defect_type_id == defect_type.id,
        )
    )
    extension = inspection.image_key.rsplit(".", 1)[-1]
    return RegisterPreview(file_name=f"{product.code}_{defect_type.code}_{(last or 0) + 1:03d}.{extension}")


def register_inspection(
    session: Session,
    *,
    services: Services,
    inspection_id: int,
    product_id: int,
    defect_type_id: int,
    user: User,
) -> RegisterRead:
    """Add the inspected photo to the catalog as a defect image and to the live defect gallery; commits.

    The registered type becomes the inspection's outcome (source "worker").
    """
    inspection = inspection_service.get_inspection(session, inspection_id=inspection_id)
    outcome_service.ensure_can_change(inspection, user)
    if inspection.registered_image_id is not None:
        raise ConflictError("errors.search_already_registered", id=inspection.registered_image_id)
    product, defect_type = _registration_target(session, product_id=product_id, defect_type_id=defect_type_id)
    data = inspection_service.load_image(services.storage, inspection)
    checked = check_image(
        data, catalog_service.image_limits(services.settings), name=inspection.original_name or "inspection"
    )
    row = catalog_service.add_image(
        session,
        storage=services.storage,
        product=product,
        defect_type=defect_type,
        image=checked,
        original_name=inspection.original_name,
        actor_id=user.id,
        source="inspection",
        source_inspection_id=inspection.id,
    )
    inspection.registered_image_id = row.id
    outcome_service.refresh_outcome(
        inspection,
        choice=outcome_service.worker_choice(
            user=user, product_id=product.id, defect_type_id=defect_type.id, action="register"
        ),
    )
    outcome_service.record_event(
        session,
        inspection=inspection,
        kind="register",
        user_id=user.id,
        data={"image_id": row.id, "product_id": product.id, "defect_type_id": defect_type.id},
    )
    session.commit()
    notify = image_change_hook(services)
    if notify is not None:
        notify([row], [])
    engine = _engine(services)
    gallery = engine.gallery("defect") if engine is not None else None
    return RegisterRead(
        image_id=row.id,
        file_name=row.file_name,
        image_url=image_url(row.id),
        product=_named(product),
        defect_type=_named(defect_type),
        is_searchable=gallery is not None and row.id in gallery,
    )


def nearest_normal_images(
    session: Session,
    *,
    services: Services,
    image: Image.Image,
    product_id: int,
    k: int = 1,
    image_key: str | None = None,
    options: PreprocessingOptions | None = None,
) -> list[int]:
    """Ids of the product's normal images most similar to `image`, best first ([] without a normal gallery).

    The anomaly step uses the first as the reference image it compares against. `image_key` (the photo's
    checksum) reuses the search step's vector when the normal gallery was built with the same preprocessing;
    `options` is the product's current preprocessing when the caller has read it already.
    """
    engine = _engine(services)
    if engine is None or engine.gallery("normal") is None or k < 1:
        return []
    current = options or catalog_service.preprocessing_options(session, product_ids=[product_id])[product_id]
    options = engine.options_for("normal", product_id, current)
    vector = batching(services).embed(engine, image, options, image_key=image_key)
    return [hit.image_id for hit in engine.search("normal", vector, k, product_id)]


def get_stored_search(session: Session, *, inspection_id: int) -> SearchRead:
    """The stored search result, or 409 when the step has not run."""
    result = stored_search(inspection_service.get_inspection(session, inspection_id=inspection_id))
    if result is None:
        raise ConflictError("errors.search_not_run")
    return result


@dataclass(frozen=True)
class SearchView:
    """What the search page shows: the TOP-1 (chosen or best), the other matches, the next step's URL."""

    top1: SearchMatch | None
    others: list[SearchMatch]
    next_url: str
    similarity_percent: int | None


def search_view(result: SearchRead) -> SearchView:
    """Arrange a stored result for the page (the worker's choice becomes the TOP-1)."""
    chosen = next((m for m in result.matches if m.image_id == result.chosen_image_id), None)
    top1 = chosen or (result.matches[0] if result.matches else None)
    others = [m for m in result.matches if top1 is None or m.image_id != top1.image_id]
    next_url = f"/inspect/{result.inspection_id}/anomaly"
    if result.next_product_id is not None:
        next_url += f"?product_id={result.next_product_id}"
    percent = None if top1 is None else max(0, min(100, round(top1.score * 100)))
    return SearchView(top1=top1, others=others, next_url=next_url, similarity_percent=percent)
