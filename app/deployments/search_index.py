"""The `search_index` deployment: startup loading, the rebuild job, incremental updates, artifact state.

The engine (`app.ml.search_runtime.SearchEngine`) lives in the model registry under `search_runtime.SEARCH`.
Startup loads the embedder chosen in model settings and the current gallery version from the object storage
(`app.core.artifact_store`: fetched into the local cache, checksums verified, no embedding work), then applies
the change log past the version's `change_id`. The job rebuilds the defect and normal galleries of one
product or all products in batches, publishes them as a new immutable version and swaps the new engine
in; searches in flight keep the engine object they took. Registering or deleting one catalog image
updates this server's galleries at once through the catalog's image-change hooks and appends a
change log row (with the vector) that every other server applies within a poll (`sync_changes`).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.catalog.model_choices import subscribe_image_changes
from app.core import artifact_store, changelog
from app.core.artifacts import ArtifactState, record_current_artifact
from app.core.changelog import Change, ChangeCursor
from app.core.images import open_rgb
from app.core.jobs import JobCancelled, JobContext, JobResult
from app.core.services import Services
from app.db.tables import Artifact, DefectType, DeploymentJob, Product, ReferenceImage
from app.demo.manifest import demo_masks
from app.ml.anomaly_eval import read_mask
from app.ml.anomaly_runtime import current_models, prepare
from app.ml.embedders import EFFICIENTNET_NAME, ImageEmbedder, load_embedder
from app.ml.errors import ModelNotAvailableError
from app.ml.gallery import VectorGallery, build_gallery
from app.ml.identification import (
    ProductIdentification,
    build_product_identification,
    describe_region,
    model_fingerprint,
)
from app.ml.milvus_gallery import MilvusConfig, MilvusGallery, drop_saved_collection
from app.ml.milvus_regions import MilvusRegionStore, build_store, drop_saved_store
from app.ml.patchcore import PatchCore
from app.ml.preprocessing import PreprocessingOptions
from app.ml.search_runtime import (
    GALLERY_KINDS,
    META_FILE,
    SEARCH,
    GalleryKind,
    SearchEngine,
    new_built_at,
    new_generation_name,
    preprocess,
)
from app.ml.vector_backend import VectorBackend
from app.ml.verdict import (
    DEFAULT_MIN_MARGIN,
    DEFAULT_MIN_SCORE,
    MIN_CALIBRATION_IMAGES,
    Thresholds,
    calibrate_thresholds,
)

logger = logging.getLogger(__name__)

KIND = "search_index"
AVAILABLE = True
BATCH_SIZE = 16
# One gallery version holds every product (storage key artifacts/search_index/all/<generation>).
SCOPE = "all"
# Loading a version and applying the change log never run at once (the watcher thread, startup, a job).
_SYNC_LOCK = threading.RLock()


@dataclass(frozen=True)
class CatalogImage:
    """What a gallery needs to know about one catalog image."""

    id: int
    product_id: int
    kind: GalleryKind
    defect_type_id: int | None
    object_key: str
    original_name: str = ""


def index_root(services: Services) -> Path:
    """Where search generations live (models/artifacts/search)."""
    return services.settings.artifacts_path / "search"


def vector_backend(services: Services) -> VectorBackend:
    """The configured vector store (VECTOR_BACKEND): FAISS files or Milvus collections."""
    settings = services.settings
    if settings.vector_backend != "milvus":
        return VectorBackend("faiss")
    config = MilvusConfig(
        uri=settings.milvus_uri,
        token=settings.milvus_token.get_secret_value(),
        prefix=settings.milvus_collection_prefix,
        timeout_s=settings.milvus_timeout_s,
    )
    return VectorBackend("milvus", config)


def catalog_images(session: Session, product_ids: Sequence[int]) -> list[CatalogImage]:
    """The images that belong in the galleries: active products, active (or no) defect types."""
    query = (
        select(ReferenceImage)
        .outerjoin(DefectType, ReferenceImage.defect_type_id == DefectType.id)
        .where(ReferenceImage.product_id.in_(list(product_ids)))
        .where((ReferenceImage.defect_type_id.is_(None)) | (DefectType.is_active.is_(True)))
        .order_by(ReferenceImage.id)
    )
    return [_catalog_image(r) for r in session.scalars(query)]


def _catalog_image(row: ReferenceImage) -> CatalogImage:
    return CatalogImage(
        row.id,
        row.product_id,
        "defect" if row.kind == "defect" else "normal",
        row.defect_type_id,
        row.object_key,
        row.original_name or "",
    )


def _load_embedder(services: Services, name: str) -> tuple[ImageEmbedder, str, str]:
    """(embedder, name it was loaded by, note); falls back to the packaged embedder if `name` cannot load."""
    settings = services.settings
    try:
        return (
            load_embedder(
                name,
                models_dir=settings.models_path,
                device=services.models.device,
                clip_arch=settings.clip_arch,
                runtime=settings.inference_runtime,
            ),
            name,
            "",
        )
    except ModelNotAvailableError as exc:
        if name == EFFICIENTNET_NAME:
            raise
        logger.warning("embedder %s is not available (%s); using %s", name, exc, EFFICIENTNET_NAME)
        fallback = load_embedder(
            EFFICIENTNET_NAME, models_dir=settings.models_path, runtime=settings.inference_runtime
        )
        return fallback, EFFICIENTNET_NAME, str(exc)


# --- startup -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Current:
    path: str
    checksum: str
    change_id: int


def _current_version(session: Session) -> _Current | None:
    row = session.scalar(
        select(Artifact)
        .where(Artifact.kind == KIND, Artifact.is_current.is_(True))
        .order_by(Artifact.id.desc())
    )
    if row is None:
        return None
    return _Current(row.path, row.checksum, int((row.meta or {}).get("change_id") or 0))


def load(services: Services) -> None:
    """Load the configured embedder and the current gallery version into services.models (no embedding).

    Reloading (another process recorded a newer version) keeps the loaded embedder when it is the
    configured one, and the live engine until the new one is ready.
    """
    faiss.omp_set_num_threads(1)  # one thread on the request path: OpenMP only adds latency to one query
    with services.session_factory() as session:
        name = catalog_service.configured_embedder(session)
        current = _current_version(session)
    old: SearchEngine | None = services.models.get(SEARCH)
    if old is not None and old.embedder_name == name:
        embedder, loaded_name, note = old.embedder, old.embedder_name, old.note
    else:
        embedder, loaded_name, note = _load_embedder(services, name)
    stored = current is not None and artifact_store.is_stored(current.path, current.checksum)
    backend = vector_backend(services)
    if (
        stored
        and current is not None
        and old is not None
        and old.embedder_name == name
        and old.generation == current.path.rsplit("/", 1)[-1]
    ):
        sync_changes(services)  # the version this server built or loaded already: nothing to fetch
        return
    if stored and current is not None:
        directory = artifact_store.fetch(services.storage, services.settings, current.path, current.checksum)
        engine = SearchEngine.load_dir(directory, embedder, loaded_name, backend=backend)
        engine.changes = ChangeCursor(position=current.change_id)
    else:  # nothing built yet, or a gallery built before versions were stored (galleries updated in place)
        engine = SearchEngine.load(index_root(services), embedder, loaded_name, backend=backend)
        engine.changes = ChangeCursor(position=0)
    if note:
        engine.note = note
    with _SYNC_LOCK:
        catch_up(services, engine)
        services.models.swap(SEARCH, engine)
    install_hook(services)
    if engine.generation is not None:
        keep = {engine.generation} | ({old.generation} if old is not None and old.generation else set())
        artifact_store.prune_cache(services.settings, KIND, SCOPE, keep)
    logger.info("search engine loaded: %s", engine.describe())


def sync_changes(services: Services) -> int:
    """Apply the log rows the live engine has not seen yet (the watcher calls this); returns rows applied."""
    engine: SearchEngine | None = services.models.get(SEARCH)
    if engine is None:
        return 0
    with _SYNC_LOCK:
        return catch_up(services, engine)


def catch_up(services: Services, engine: SearchEngine) -> int:
    """Apply every change log row past the engine's cursor, in order; returns how many changed the engine."""
    with _SYNC_LOCK:
        if engine.changes is None:
            with services.session_factory() as session:
                engine.changes = ChangeCursor(position=changelog.last_id(session))
            return 0
        applied = 0
        while True:
            with services.session_factory() as session:
                changes = engine.changes.poll(session)
            if not changes:
                return applied
            applied += apply_logged_changes(services, engine, changes)
            if len(changes) < changelog.BATCH:
                return applied


def install_hook(services: Services) -> None:
    """Subscribe the live galleries to catalog image changes (once per app)."""
    if KIND in services.image_hooks:
        return

    def on_images_changed(added: Sequence[ReferenceImage], removed: Sequence[ReferenceImage]) -> None:
        try:
            apply_image_changes(services, added=added, removed=removed)
        except Exception:  # the catalog change is committed; the admin sees "stale" and can rebuild
            logger.exception("updating the search galleries after a catalog change failed")

    subscribe_image_changes(services, owner=KIND, hook=on_images_changed)


# --- incremental updates -----------------------------------------------------------------------------


def _embed_into(
    services: Services,
    engine: SearchEngine,
    images: Sequence[CatalogImage],
    current: dict[int, PreprocessingOptions],
) -> dict[int, dict[str, Any]]:
    """Embed images into the engine's galleries; returns per image id what the change log carries."""
    logged: dict[int, dict[str, Any]] = {}
    for kind in GALLERY_KINDS:
        batch = [img for img in images if img.kind == kind]
        if not batch or engine.gallery(kind) is None:
            continue
        options = [engine.options_for(kind, img.product_id, current[img.product_id]) for img in batch]
        pictures = [
            open_rgb(services.storage.get(img.object_key), max_side=services.settings.max_decode_side)
            for img in batch
        ]
        vectors = engine.embed(pictures, options)
        engine.add(
            kind,
            ids=[img.id for img in batch],
            vectors=vectors,
            product_ids=[img.product_id for img in batch],
            labels=[img.defect_type_id if kind == "defect" else None for img in batch],
            preprocessing_keys={img.product_id: opt.key() for img, opt in zip(batch, options, strict=True)},
        )
        for img, opt, vector in zip(batch, options, vectors, strict=True):
            logged[img.id] = {
                "embedder_id": engine.embedder.embedder_id,
                "preprocessing_key": opt.key(),
                "vector": changelog.encode_vector(vector),
            }
    return logged


def apply_image_changes(
    services: Services, *, added: Sequence[ReferenceImage], removed: Sequence[ReferenceImage]
) -> int:
    """Embed added images into, and drop removed ones from, the live galleries; returns images embedded.

    One embedding per added image, never a rebuild; the change log gets one row per image (with its
    vector, so other servers do not embed it again), also when no gallery is built here or embedding
    failed (another server then embeds the image itself). Nothing is embedded while no gallery is built
    (the rebuild job will include the images).
    """
    engine: SearchEngine | None = services.models.get(SEARCH)
    images = [_catalog_image(r) for r in added]
    logged: dict[int, dict[str, Any]] = {}
    try:
        if engine is None or not engine.is_built:
            return 0
        if removed:
            engine.remove([r.id for r in removed])
        if images:
            with services.session_factory() as session:
                current = catalog_service.preprocessing_options(
                    session, product_ids=sorted({i.product_id for i in images})
                )
            logged = _embed_into(services, engine, images, current)
            regions = _identify_into(services, engine, [i for i in images if i.kind == "defect"], current)
            for image_id, extra in regions.items():
                logged.setdefault(image_id, {}).update(extra)
        return len(images)
    finally:
        _log_image_changes(services, images, removed, logged)


def _log_image_changes(
    services: Services,
    images: Sequence[CatalogImage],
    removed: Sequence[ReferenceImage],
    logged: dict[int, dict[str, Any]],
) -> None:
    with services.session_factory() as session:
        for img in images:
            payload = {"kind": img.kind, "defect_type_id": img.defect_type_id, **logged.get(img.id, {})}
            changelog.record(
                session, changelog.IMAGE_ADDED, product_id=img.product_id, entity_id=img.id, payload=payload
            )
        for row in removed:
            changelog.record(session, changelog.IMAGE_REMOVED, product_id=row.product_id, entity_id=row.id)
        session.commit()


def apply_logged_changes(services: Services, engine: SearchEngine, changes: Sequence[Change]) -> int:
    """Apply change log rows to `engine` in order (O(1) each); returns how many changed it.

    Idempotent: an image already in its gallery is not added again, one already gone not removed. An added
    image that no longer exists is skipped (its removal is in the log too). A row without a usable vector
    (the writer had no gallery, or another embedder) is embedded here.
    """
    if not engine.is_built:
        return 0
    added_ids = changelog.ids_of(changes, changelog.IMAGE_ADDED)
    with services.session_factory() as session:
        rows = (
            {r.id: r for r in session.scalars(select(ReferenceImage).where(ReferenceImage.id.in_(added_ids)))}
            if added_ids
            else {}
        )
        to_embed = []
        for change in changes:
            if change.kind != changelog.IMAGE_ADDED or change.entity_id not in rows:
                continue
            image = _catalog_image(rows[change.entity_id])
            gallery = engine.gallery(image.kind)
            if gallery is None or image.id in gallery:
                continue
            vector = changelog.decode_vector(change.payload.get("vector"))
            if vector is None or change.payload.get("embedder_id") != engine.embedder.embedder_id:
                to_embed.append(image)
        current = (
            catalog_service.preprocessing_options(
                session, product_ids=sorted({i.product_id for i in to_embed})
            )
            if to_embed
            else {}
        )
    applied = 0
    embed_ids = {i.id for i in to_embed}
    for change in changes:
        if change.kind == changelog.IMAGE_REMOVED and change.entity_id is not None:
            applied += 1 if engine.remove([change.entity_id]) else 0
        elif (
            change.kind == changelog.IMAGE_ADDED
            and change.entity_id in rows
            and change.entity_id not in embed_ids
        ):
            applied += _add_logged(engine, _catalog_image(rows[change.entity_id]), change.payload)
    if to_embed:
        _embed_into(services, engine, to_embed, current)
        _identify_into(services, engine, [i for i in to_embed if i.kind == "defect"], current)
        applied += len(to_embed)
    return applied


def _add_logged(engine: SearchEngine, image: CatalogImage, payload: dict[str, Any]) -> int:
    gallery = engine.gallery(image.kind)
    vector = changelog.decode_vector(payload.get("vector"))
    if gallery is None or vector is None or image.id in gallery:
        return 0
    key = str(payload.get("preprocessing_key") or "")
    engine.add(
        image.kind,
        ids=[image.id],
        vectors=vector[None, :],
        product_ids=[image.product_id],
        labels=[image.defect_type_id if image.kind == "defect" else None],
        preprocessing_keys={image.product_id: key} if key else {},
    )
    found = engine.identification.get(image.product_id) if image.kind == "defect" else None
    if found is not None and image.id not in found.image_ids:
        region = changelog.decode_vector(payload.get("region"))
        if region is not None and payload.get("fingerprint") != found.fingerprint:
            region = None
        found.add(image.id, image.defect_type_id, gallery.get_vectors([image.id])[0], region)
    return 1


def reconcile(
    services: Services,
    engine: SearchEngine,
    product_ids: Sequence[int],
    *,
    exclude: frozenset[int] = frozenset(),
) -> tuple[int, int]:
    """Bring the engine's galleries in line with the catalog for these products; (added, removed).

    Images in `exclude` (unreadable during the build) are not retried.
    """
    with services.session_factory() as session:
        images = catalog_images(session, product_ids)
        current = catalog_service.preprocessing_options(session, product_ids=product_ids)
    wanted = {img.id for img in images}
    removed = 0
    missing: list[CatalogImage] = []
    for kind in GALLERY_KINDS:
        gallery = engine.gallery(kind)
        if gallery is None:
            continue
        scope = {h.image_id for pid in product_ids for h in gallery.rows(pid)}
        gone = sorted(scope - wanted)
        removed += gallery.remove(gone)
        for found in engine.identification.values():
            found.remove(gone)
        missing.extend(
            img for img in images if img.kind == kind and img.id not in gallery and img.id not in exclude
        )
    if missing:
        _embed_into(services, engine, missing, current)
        _identify_into(services, engine, [i for i in missing if i.kind == "defect"], current)
    return len(missing), removed


# --- identification ----------------------------------------------------------------------------------


def _region_of(
    services: Services,
    model: PatchCore,
    image: CatalogImage,
    options: PreprocessingOptions,
    masks: dict[str, Path],
) -> tuple[np.ndarray, np.ndarray]:
    """A gallery image's region descriptors: (as registered, as a query would be described).

    As registered: from its uploaded (demo) mask if it has one, else from its anomaly map; as a query:
    always from its anomaly map (the leave-one-out calibration holds images out in that form).
    """
    picture = prepare(open_rgb(services.storage.get(image.object_key)), options)
    by_map = describe_region(model, picture)
    mask_path = masks.get(image.original_name)
    if mask_path is None:
        return by_map, by_map
    mask = read_mask(mask_path, (picture.height, picture.width))
    return describe_region(model, picture, mask), by_map


def build_identification(
    ctx: JobContext,
    gallery: VectorGallery,
    product_id: int,
    options: PreprocessingOptions,
    images: Sequence[CatalogImage],
) -> ProductIdentification | None:
    """Describe a product's defect images and calibrate identification by leave-one-out (None: no images).

    Region descriptors need the product's anomaly model; without one (or when an image cannot be
    described) the product is identified by the whole image only.
    """
    rows = [i for i in images if i.product_id == product_id and i.kind == "defect" and i.id in gallery]
    if not rows:
        return None
    services = ctx.services
    whole = gallery.get_vectors([r.id for r in rows])
    with ctx.session_factory() as session:
        product = session.get(Product, product_id)
        code = product.code if product is not None else ""
        names = {
            d.id: d.name
            for d in session.scalars(select(DefectType).where(DefectType.product_id == product_id))
        }
    model = current_models(services.models).calibrated(product_id)
    region: np.ndarray | None = None
    region_query: np.ndarray | None = None
    if model is not None:
        masks = demo_masks(services.settings, code)
        try:
            pairs = []
            for row in rows:
                ctx.check_cancelled()
                pairs.append(_region_of(services, model, row, options, masks))
            region = np.stack([p[0] for p in pairs])
            region_query = np.stack([p[1] for p in pairs])
        except JobCancelled:
            raise
        except Exception as exc:  # one unreadable image: this product is matched on whole images only
            ctx.log(f"product {product_id}: region descriptors failed ({type(exc).__name__}: {exc})")
    found = build_product_identification(
        product_id,
        [r.id for r in rows],
        [r.defect_type_id for r in rows],
        whole,
        region,
        region_query=region_query,
        fingerprint=model_fingerprint(model) if model is not None and region is not None else "",
        type_names=names,
    )
    report = found.report
    ctx.log(
        f"product {product_id}: identification by {report['method']} (alpha {report['alpha']}), "
        f"leave-one-out top-1 {report['top1']}, unknown {report['unknown_rate']} "
        f"over {report['images']} images"
    )
    return found


def _identify_into(
    services: Services,
    engine: SearchEngine,
    images: Sequence[CatalogImage],
    current: dict[int, PreprocessingOptions],
) -> dict[int, dict[str, Any]]:
    """Add new defect images to their product's identification data (one description each, no rebuild).

    Products built without identification data get it at the next build; so does the leave-one-out report.
    Returns the region descriptors computed, per image id, for the change log.
    """
    gallery = engine.gallery("defect")
    logged: dict[int, dict[str, Any]] = {}
    if gallery is None:
        return logged
    for image in images:
        found = engine.identification.get(image.product_id)
        if found is None or image.id not in gallery:
            continue
        region = None
        model = current_models(services.models).calibrated(image.product_id)
        if found.region is not None and model is not None and model_fingerprint(model) == found.fingerprint:
            region = _region_of(services, model, image, current[image.product_id], {})[0]
            logged[image.id] = {"region": changelog.encode_vector(region), "fingerprint": found.fingerprint}
        found.add(image.id, image.defect_type_id, gallery.get_vectors([image.id])[0], region)
    return logged


# --- the job -----------------------------------------------------------------------------------------


def _items(
    ctx: JobContext, images: Sequence[CatalogImage], skipped: list[int]
) -> Iterator[tuple[int, int, int | None, Image.Image]]:
    for img in images:
        try:
            picture = open_rgb(
                ctx.services.storage.get(img.object_key), max_side=ctx.services.settings.max_decode_side
            )
        except Exception as exc:  # one lost or broken object must not sink the whole rebuild
            skipped.append(img.id)
            ctx.log(f"skipped image {img.id} ({img.object_key}): {type(exc).__name__}: {exc}")
            continue
        yield img.id, img.product_id, img.defect_type_id, picture


def run(ctx: JobContext) -> JobResult | None:
    """Rebuild the galleries for ctx.product_id (or all products) and swap them into the running server."""
    services = ctx.services
    faiss.omp_set_num_threads(1)  # the engine this job installs serves requests (see `load`)
    with ctx.session_factory() as session:
        name = catalog_service.configured_embedder(session)
        all_products = catalog_service.active_product_ids(session)
        if ctx.product_id is not None and ctx.product_id not in all_products:
            all_products = [*all_products, ctx.product_id]
        current = catalog_service.preprocessing_options(session, product_ids=all_products)
    old = services.models.get(SEARCH)
    ctx.progress(0.01, "search.stages.loading_embedder")
    if old is not None and old.embedder_name == name:
        embedder, loaded_name = old.embedder, old.embedder_name
    else:
        embedder, loaded_name, _note = _load_embedder(services, name)
        ctx.log(f"loaded embedder {embedder.embedder_id}")
    compatible = old is not None and old.is_built and old.embedder.embedder_id == embedder.embedder_id
    if ctx.product_id is not None and compatible:
        scope = [ctx.product_id]
    else:
        scope = all_products
        if ctx.product_id is not None:
            ctx.log("no compatible index to update one product in: rebuilding every product")
    with ctx.session_factory() as session:
        # The version holds every change logged up to here; later ones are applied from the log when a server
        # loads it (idempotent: what the build already has is skipped). Read before anything is listed or
        # copied, so a change to another product made while this build runs is never lost.
        change_id = changelog.last_id(session)
        images = catalog_images(session, scope)
    keys = {pid: current[pid].key() for pid in scope}
    total = max(1, len(images))
    done_before = 0
    galleries: dict[str, VectorGallery] = {}
    backend = vector_backend(services)
    skipped: list[int] = []
    regions: MilvusRegionStore | None = None
    key: str | None = None
    published: artifact_store.Published | None = None
    try:
        for kind in GALLERY_KINDS:
            subset = [img for img in images if img.kind == kind]
            ctx.log(f"embedding {len(subset)} {kind} images of {len(scope)} product(s)")
            stage = f"search.stages.{kind}"
            ctx.progress(0.02 + 0.9 * done_before / total, stage)
            offset = done_before

            def report(done: int, _total: int, offset: int = offset, stage: str = stage) -> None:
                ctx.progress(0.02 + 0.9 * (offset + done) / total, stage)

            gallery = build_gallery(
                _items(ctx, subset, skipped),
                embedder,
                lambda pid, image: preprocess(image, current[pid]),
                kind=kind,
                batch_size=BATCH_SIZE,
                progress=report,
                should_cancel=ctx.should_cancel,
                total=len(subset),
                preprocessing_keys=keys,
                factory=backend.empty,
            )
            done_before += len(subset)
            if compatible and old is not None and ctx.product_id is not None:
                _copy_other_products(old, gallery, kind, keep_out=set(scope))
            galleries[kind] = gallery
        ctx.progress(0.9, "identification.stage")
        # Copies: attaching them to this build's collection must not move the serving engine's products.
        identification = {
            pid: found.copy()
            for pid, found in (old.identification.items() if compatible and old is not None else ())
            if pid not in scope
        }
        reports: dict[str, Any] = {}
        for pid in scope:
            found = build_identification(ctx, galleries["defect"], pid, current[pid], images)
            if found is not None:
                identification[pid] = found
                reports[str(pid)] = found.report
        if backend.milvus is not None:
            # Identification searches Milvus too: a new collection per version, like the galleries.
            regions = build_store(backend.milvus, identification.values(), whole_dim=galleries["defect"].dim)
        ctx.progress(0.93, "search.stages.calibrating")
        thresholds: dict[int, Thresholds] = dict(old.thresholds) if compatible and old is not None else {}
        uncalibrated = Thresholds(DEFAULT_MIN_SCORE, DEFAULT_MIN_MARGIN)
        for pid in scope:
            thresholds.pop(pid, None)
            if galleries["defect"].count_by_product().get(pid, 0) >= MIN_CALIBRATION_IMAGES:
                calibrated = calibrate_thresholds(galleries["defect"], pid)
                # calibrate_thresholds answers its defaults when no class has two images: not a calibration
                if calibrated != uncalibrated:
                    thresholds[pid] = calibrated
                    score, margin = calibrated
                    ctx.log(f"product {pid}: calibrated min_score={score:.3f} min_margin={margin:.3f}")
        engine = SearchEngine(
            embedder=embedder,
            embedder_name=loaded_name,
            galleries=galleries,
            thresholds=thresholds,
            built_at=new_built_at(),
            identification=identification,
            regions=regions,
        )
        ctx.progress(0.96, "search.stages.saving")
        ctx.check_cancelled()
        # Images registered while we were embedding went to the old engine: add them to the new one too.
        added, removed = reconcile(services, engine, scope, exclude=frozenset(skipped))
        if added or removed:
            ctx.log(f"caught up with catalog changes made during the build: +{added} / -{removed}")
        ctx.check_cancelled()
        generation = new_generation_name() + (f"-j{ctx.job_id}" if ctx.job_id is not None else "")
        key = artifact_store.version_key(KIND, SCOPE, generation)
        directory = artifact_store.local_dir(services.settings, key)
        engine.save_to(directory)
        for found in engine.identification.values():
            if found.store is not None:
                found.release_arrays()  # saved; from now on the rows are served from Milvus alone
        engine.generation = generation
        published = artifact_store.publish(services.storage, directory, key)
        ctx.log(f"stored version {key} ({published.files} files, {published.size} bytes)")
        engine.changes = ChangeCursor(position=change_id)
        result = {
            "generation": generation,
            "embedder": embedder.embedder_id,
            "defect_images": galleries["defect"].count,
            "normal_images": galleries["normal"].count,
            "products": len(scope),
            "skipped_images": skipped,
            "identification": reports,
        }
        previous = _record_artifact(ctx, generation, result, published, change_id)
    except BaseException:
        # Nothing was recorded: no server will ever load what this build made, so it goes now (a cancelled
        # or failed build left its Milvus collections behind before, where no prune could find them).
        _discard_unrecorded(services, galleries.values(), regions, key, published)
        raise
    with _SYNC_LOCK:
        catch_up(services, engine)
        services.models.swap(SEARCH, engine)
    install_hook(services)
    _release_collections(services, {generation, *previous})
    artifact_store.prune(services.storage, services.settings, KIND, SCOPE, {generation, *previous})
    _trim_change_log(ctx, previous)
    ctx.log(engine.describe())
    return result


def _discard_unrecorded(
    services: Services,
    galleries: Iterable[VectorGallery],
    regions: MilvusRegionStore | None,
    key: str | None,
    published: artifact_store.Published | None,
) -> None:
    """Drop what a build made before it failed or was cancelled: Milvus collections and stored objects."""
    for gallery in galleries:
        try:
            gallery.discard()
        except Exception:
            logger.warning("could not drop the gallery of a failed build", exc_info=True)
    if regions is not None:
        try:
            regions.drop()
        except Exception:
            logger.warning("could not drop the region collection of a failed build", exc_info=True)
    if published is not None:
        artifact_store.discard(services.storage, published.key)
    if key is not None:
        shutil.rmtree(artifact_store.local_dir(services.settings, key), ignore_errors=True)


def _release_collections(services: Services, keep: set[str]) -> None:
    """Drop the Milvus collections of the versions `artifact_store.prune` is about to delete.

    Same rule as the prune (only versions older than every kept one), read from each version's stored
    gallery.json, so a collection another worker is filling right now is never touched.
    """
    backend = vector_backend(services)
    if backend.milvus is None or not keep:
        return
    prefix = f"{artifact_store.PREFIX}/{KIND}/{SCOPE}/"
    for object_key in list(services.storage.list(prefix)):
        version, _, rest = object_key[len(prefix) :].partition("/")
        if rest not in {META_FILE, *(f"{kind}/gallery.json" for kind in GALLERY_KINDS)}:
            continue
        if not version or version in keep or version >= min(keep):
            continue
        try:
            drop = drop_saved_store if rest == META_FILE else drop_saved_collection
            drop(backend.milvus, services.storage.get(object_key))
        except Exception:  # a leftover collection costs memory in Milvus, not correctness
            logger.warning("could not drop the Milvus collection of %s", object_key, exc_info=True)


def _copy_other_products(
    old: SearchEngine, gallery: VectorGallery, kind: GalleryKind, *, keep_out: set[int]
) -> None:
    source = old.gallery(kind)
    if source is None:
        return
    rows = [r for r in source.rows() if r.product_id not in keep_out]
    if rows:
        gallery.add(
            [r.image_id for r in rows],
            source.get_vectors([r.image_id for r in rows]),
            [r.product_id for r in rows],
            [r.label for r in rows],
        )
    for pid, key in source.preprocessing_keys.items():
        if pid not in keep_out:
            gallery.set_preprocessing_key(pid, key)


def _record_artifact(
    ctx: JobContext,
    generation: str,
    result: dict[str, Any],
    published: artifact_store.Published,
    change_id: int,
) -> list[str]:
    """Make the stored version current; returns the versions it replaced."""
    with ctx.session_factory() as session:
        previous = list(
            session.scalars(
                select(Artifact.version).where(Artifact.kind == KIND, Artifact.is_current.is_(True))
            )
        )
        record_current_artifact(
            session,
            kind=KIND,
            product_id=ctx.product_id,
            version=generation,
            path=published.key,
            checksum=published.checksum,
            meta={**result, "change_id": change_id},
            job_id=ctx.job_id,
        )
        session.commit()
    return previous


def _trim_change_log(ctx: JobContext, replaced: Sequence[str]) -> None:
    """Delete the log rows every version still in use already holds (those up to the replaced one's
    `change_id`): a server still on the replaced version needs only the rows after it."""
    with ctx.session_factory() as session:
        ids = [
            int((meta or {}).get("change_id") or 0)
            for meta in session.scalars(
                select(Artifact.meta).where(Artifact.kind == KIND, Artifact.version.in_(list(replaced)))
            )
        ]
        if ids and min(ids) > 0:
            changelog.trim(session, min(ids))
            session.commit()


# --- state for the admin -----------------------------------------------------------------------------


def states(session: Session, services: Services) -> list[ArtifactState]:
    """Per active product: current, stale (and why), missing, building or failed."""
    engine = services.models.get(SEARCH)
    product_ids = catalog_service.active_product_ids(session)
    if not product_ids:
        return []
    configured = catalog_service.configured_embedder(session)
    current = catalog_service.preprocessing_options(session, product_ids=product_ids)
    images = catalog_images(session, product_ids)
    active_jobs = list(
        session.scalars(
            select(DeploymentJob).where(
                DeploymentJob.kind == KIND, DeploymentJob.status.in_(("queued", "running"))
            )
        )
    )
    last_job = session.scalar(
        select(DeploymentJob).where(DeploymentJob.kind == KIND).order_by(DeploymentJob.id.desc())
    )
    out: list[ArtifactState] = []
    for pid in product_ids:
        state = _product_state(pid, engine, configured, current[pid], images, active_jobs, last_job)
        _check_vector_backend(state, engine, services.settings.vector_backend)
        out.append(state)
    return out


def _check_vector_backend(state: ArtifactState, engine: SearchEngine | None, configured: str) -> None:
    """A gallery kept in another vector store than VECTOR_BACKEND serves until the next rebuild moves it."""
    if engine is None or not engine.is_built or state.state in ("building", "missing", "failed"):
        return
    built = "milvus" if any(isinstance(g, MilvusGallery) for g in engine.galleries.values()) else "faiss"
    if built != configured:
        state.state = "stale"
        state.reasons.append("milvus.stale.backend_changed")
        state.params.update(built_store=built, configured_store=configured)


def _product_state(
    pid: int,
    engine: SearchEngine | None,
    configured: str,
    options: PreprocessingOptions,
    images: Sequence[CatalogImage],
    active_jobs: Sequence[DeploymentJob],
    last_job: DeploymentJob | None,
) -> ArtifactState:
    state = ArtifactState(kind=KIND, product_id=pid, state="current")
    if engine is not None:
        state.detail["embedder"] = engine.embedder.embedder_id
        threshold = engine.threshold_for(pid)
        if threshold is not None:
            state.detail["min_score"] = round(threshold.min_score, 4)
            state.detail["min_margin"] = round(threshold.min_margin, 4)
        found = engine.identification.get(pid)
        if found is not None and found.report:
            # leave-one-out over the images registered at the last build (later ones count after the next)
            state.detail["identification"] = found.report
    if any(j.product_id in (None, pid) for j in active_jobs):
        state.state = "building"
        return state
    if engine is None or not engine.is_built:
        if engine is not None and engine.note and engine.built_at:
            state.state = "stale"
            state.reasons.append("search.stale.embedder_changed")
            state.params.update(built=engine.note, configured=configured)
        else:
            state.state = "missing"
            state.reasons.append("search.stale.never_built")
        if last_job is not None and last_job.status == "failed":
            state.state = "failed"
            state.params["error"] = last_job.error
        return state
    state.built_at = _parse_time(engine.built_at)
    state.version = engine.generation
    if engine.embedder_name != configured:
        state.reasons.append("search.stale.embedder_changed")
        state.params.update(built=engine.embedder_name, configured=configured)
    for kind in GALLERY_KINDS:
        gallery = engine.gallery(kind)
        assert gallery is not None  # noqa: S101 - is_built checked above
        have = {h.image_id for h in gallery.rows(pid)}
        want = {img.id for img in images if img.product_id == pid and img.kind == kind}
        state.detail[f"{kind}_images"] = len(have)
        if have != want:
            state.reasons.append("search.stale.images_changed")
            state.params["added"] = state.params.get("added", 0) + len(want - have)
            state.params["removed"] = state.params.get("removed", 0) + len(have - want)
        built_key = gallery.preprocessing_keys.get(pid)
        if have and built_key is not None and built_key != options.key():
            state.reasons.append("search.stale.preprocessing_changed")
    state.reasons = list(dict.fromkeys(state.reasons))
    if state.reasons:
        state.state = "stale"
    return state


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
