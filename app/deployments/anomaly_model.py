"""The `anomaly_model` deployment: startup loading, the rebuild job, and per-product artifact state.

Each active product gets a PatchCore memory bank built from its registered normal images and calibrated
on held-out normals (and its defect images, when there are some). The artifact (safetensors bank + JSON
config/calibration, see app.ml.patchcore) is one immutable version in the object storage under
`artifacts/anomaly_model/product-<id>/<version>/` (app.core.artifact_store: checksummed, fetched into the
local cache by every process that loads it); an `Artifact` row records its key, checksum and the evaluation
the admin sees. The served side (the model set under
`anomaly_runtime.ANOMALY`, preparing photos) is `app.ml.anomaly_runtime`; `defectlens evaluate anomaly`
is `app.deployments.anomaly_evaluate`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.core import artifact_store
from app.core.artifacts import ArtifactState, current_artifacts, record_current_artifact
from app.core.i18n import translate
from app.core.jobs import JobCancelled, JobContext, JobParams, JobResult
from app.core.services import Services
from app.db.base import utcnow
from app.db.tables import Artifact, DeploymentJob, ModelSetting, Product, ReferenceImage
from app.demo.manifest import demo_masks
from app.ml.anomaly_calibration import train_and_score
from app.ml.anomaly_eval import read_mask
from app.ml.anomaly_report import honest_evaluation
from app.ml.anomaly_runtime import ANOMALY, AnomalyModels, current_models, load_prepared
from app.ml.anomaly_select import REASON_CHOSEN, BackboneChoice, product_config, select_backbone
from app.ml.errors import ArtifactError, ModelNotAvailableError
from app.ml.patchcore import (
    AUTO_BACKBONE,
    BACKBONES,
    DEFAULT_BACKBONE,
    PARITY_IMAGES,
    FeatureExtractor,
    PatchCore,
    PatchCoreConfig,
)

logger = logging.getLogger(__name__)

KIND = "anomaly_model"
# A product's memory bank for one view (several views per inspection); meta["view"] names the view. Not a job
# kind of its own: the anomaly_model job builds these beside the product's bank, stored under their own scope.
VIEW_KIND = "anomaly_view"
AVAILABLE = True
ARTIFACT_FOLDER = "anomaly"
# Fewer normal images than this give no usable held-out statistics (one image held out of four).
MIN_NORMAL_IMAGES = 5
_SWAP_LOCK = threading.Lock()
# ModelSetting.anomaly_backbone names <-> engine backbone ids.
_SETTING_TO_BACKBONE = {
    "efficientnet-lite0": DEFAULT_BACKBONE,
    "efficientnet-lite1": "efficientnet_lite1",
    "efficientnet-lite2": "efficientnet_lite2",
    "resnet18": "resnet18",
    "wide-resnet50-2": "wide_resnet50_2",
    AUTO_BACKBONE: AUTO_BACKBONE,
}


def engine_backbone(setting: str) -> str:
    """The engine's backbone id for a ModelSetting.anomaly_backbone value."""
    name = _SETTING_TO_BACKBONE.get(setting, setting)
    if name not in BACKBONES and name != AUTO_BACKBONE:
        raise ModelNotAvailableError(f"unknown anomaly backbone {setting!r}")
    return name


def setting_name(backbone: str) -> str:
    """The ModelSetting.anomaly_backbone value of an engine backbone id."""
    return next((k for k, v in _SETTING_TO_BACKBONE.items() if v == backbone), backbone)


def normals_fingerprint(rows: Sequence[ReferenceImage]) -> str:
    """Hash of the normal image set (ids and content checksums); a change makes the model stale."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r.id):
        digest.update(f"{row.id}:{row.checksum}\n".encode())
    return digest.hexdigest()


def artifact_dir(services: Services, artifact: Artifact) -> Path:
    """Local folder of an artifact row's files: the stored version fetched into the cache (checksums
    verified), or for a row written before versions were stored, its folder under the artifacts path.

    Raises:
        ArtifactError: The stored version is missing or does not match its checksum.
    """
    if artifact_store.is_stored(artifact.path, artifact.checksum):
        return artifact_store.fetch(services.storage, services.settings, artifact.path, artifact.checksum)
    return services.settings.artifacts_path / artifact.path


def scope_of(product_id: int) -> str:
    """The storage scope of a product's memory banks."""
    return f"product-{product_id}"


def view_scope_of(product_id: int, view: str) -> str:
    """The storage scope of a product's memory banks of one view."""
    return f"product-{product_id}-view-{view}"


def current_view_artifacts(session: Session) -> dict[tuple[int, str], Artifact]:
    """The current per-view anomaly artifact per (product id, view)."""
    rows = session.scalars(select(Artifact).where(Artifact.kind == VIEW_KIND, Artifact.is_current.is_(True)))
    return {
        (row.product_id, str((row.meta or {}).get("view"))): row
        for row in rows
        if row.product_id is not None and (row.meta or {}).get("view")
    }


def _record_view_artifact(
    session: Session,
    *,
    product_id: int,
    view: str,
    version: str,
    path: str,
    checksum: str,
    meta: dict[str, Any],
    job_id: int | None,
) -> Artifact:
    """Make a view's new bank its current artifact (the product's other views keep theirs); caller commits.

    `record_current_artifact` retires every current row of a kind per product, which would retire the other
    views' banks too, so the per-view rows are written here, matched by `meta["view"]`.
    """
    for old in session.scalars(
        select(Artifact).where(
            Artifact.kind == VIEW_KIND, Artifact.product_id == product_id, Artifact.is_current.is_(True)
        )
    ):
        if (old.meta or {}).get("view") == view:
            old.is_current = False
    row = Artifact(
        kind=VIEW_KIND,
        product_id=product_id,
        version=version,
        path=path,
        checksum=checksum,
        is_current=True,
        meta=meta,
        job_id=job_id,
    )
    session.add(row)
    return row


def _view_folders(services: Services, active: set[int]) -> tuple[dict[tuple[int, str], Path], list[str]]:
    """The current per-view banks fetched into the local cache (reloaded whenever the models are)."""
    with services.session_factory() as session:
        rows = [(key, a) for key, a in current_view_artifacts(session).items() if key[0] in active]
        session.expunge_all()
    folders: dict[tuple[int, str], Path] = {}
    errors: list[str] = []
    for key, row in rows:
        try:
            folders[key] = artifact_dir(services, row)
        except ArtifactError as exc:
            logger.warning("anomaly model of product %s view %s not loaded: %s", key[0], key[1], exc)
            errors.append(f"product {key[0]} view {key[1]}: {exc}")
    return folders, errors


def load(services: Services) -> None:
    """Load the current versions into services.models (no training); at start and when one changes.

    A model whose version is already loaded is kept as it is; the others are fetched from the object
    storage into the local cache (checksums verified) and loaded.
    """
    with services.session_factory() as session:
        active = {p.id for p in catalog_service.list_products(session)}
        rows = [a for pid, a in current_artifacts(session, KIND).items() if pid in active]
        session.expunge_all()
    loaded = current_models(services.models)
    kept: dict[int, PatchCore] = {}
    checksums: dict[int, str] = {}
    folders: dict[int, Path] = {}
    errors: list[str] = []
    for row in rows:
        product_id = int(row.product_id or 0)
        model = loaded.get(product_id)
        if model is not None and row.checksum and loaded.checksums.get(product_id) == row.checksum:
            kept[product_id], checksums[product_id] = model, row.checksum  # same version: no reload
            continue
        try:
            folders[product_id] = artifact_dir(services, row)
            checksums[product_id] = row.checksum
        except ArtifactError as exc:
            logger.warning("anomaly model of product %s not loaded: %s", product_id, exc)
            errors.append(f"product {product_id}: {exc}")
            continue
        if artifact_store.is_stored(row.path, row.checksum):
            artifact_store.prune_cache(services.settings, KIND, scope_of(product_id), {row.version})
    view_folders, view_errors = _view_folders(services, active)
    errors += view_errors
    fresh, load_errors = AnomalyModels.load(
        folders,
        models_dir=services.settings.models_path,
        device=services.models.device,
        runtime=services.settings.inference_runtime,
        view_folders=view_folders,
    )
    models = {pid: m for pid in fresh.product_ids if (m := fresh.get(pid)) is not None}
    with _SWAP_LOCK:
        services.models.swap(
            ANOMALY,
            AnomalyModels(
                {**kept, **models},
                {**loaded.extractors, **fresh.extractors},
                {pid: c for pid, c in checksums.items() if pid in kept or pid in models},
                views=fresh.views,
            ),
        )
    if errors or load_errors:
        services.models.set_error(ANOMALY, "; ".join([*errors, *load_errors]))


@dataclass
class BuildOutcome:
    """One product's finished build."""

    product_id: int
    artifact_id: int
    version: str
    meta: dict[str, Any]
    checksum: str = ""
    replaced: tuple[str, ...] = ()


def train_config(backbone: str, params: JobParams) -> PatchCoreConfig:
    """PatchCore settings for a build: the defaults with the job's overrides (tests use smaller ones)."""
    config = PatchCoreConfig(backbone=backbone)

    def number(name: str, default: float) -> float:
        value = params.get(name)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else default

    return replace(
        config,
        image_size=int(number("image_size", config.image_size)),
        coreset_ratio=float(number("coreset_ratio", config.coreset_ratio)),
        max_bank=int(number("max_bank", config.max_bank)),
        num_neighbors=int(number("num_neighbors", config.num_neighbors)),
        batch_size=int(number("batch_size", config.batch_size)),
        ivf_lists=int(number("ivf_lists", config.ivf_lists)),
        ivf_probe=int(number("ivf_probe", config.ivf_probe)),
    )


def build_product(
    services: Services,
    product_id: int,
    *,
    config: PatchCoreConfig,
    extractor: FeatureExtractor | None = None,
    job_id: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    auto_backbone: bool = False,
    extractors: dict[str, FeatureExtractor] | None = None,
    view: str | None = None,
) -> tuple[BuildOutcome, PatchCore]:
    """Train, calibrate, evaluate and save one product's model and record its Artifact row (commits).

    The working resolution and tiling come from the product's normal images (``product_config``); with
    ``auto_backbone`` the backbone is the available one with the best validation AUROC on this product.
    With ``view`` the bank holds that view's normal images only (calibrated on that view's defects); the
    product's view-less bank holds its normal images without a view label, or all of its normal images
    when those are fewer than MIN_NORMAL_IMAGES (so a view without a bank of its own has a fallback).

    Raises:
        ValueError: Too few normal images (the message is translated).
        JobCancelled: Cancelled.
    """
    settings, storage = services.settings, services.storage

    def report(fraction: float, stage: str) -> None:
        if progress is not None:
            progress(fraction, stage)

    with services.session_factory() as session:
        product = catalog_service.get_product(session, product_id=product_id)
        code = product.code if view is None else f"{product.code}/{view}"
        all_normals = catalog_service.normal_images(session, product_id=product_id)
        by_view = catalog_service.images_by_view(session, product_id=product_id, kind="normal")
        if view is None:
            unlabelled = by_view.get(None, [])
            pooled = len(unlabelled) < MIN_NORMAL_IMAGES and len(unlabelled) < len(all_normals)
            normals = all_normals if pooled else unlabelled
            defects = catalog_service.defect_images(session, product_id=product_id)
            # every normal image counts: a change to any view's images makes the product's models stale
            fingerprint = normals_fingerprint(all_normals)
        else:
            pooled = False
            normals = by_view.get(view, [])
            defects = catalog_service.images_by_view(session, product_id=product_id, kind="defect").get(
                view, []
            )
            fingerprint = normals_fingerprint(normals)
        defect_type_names = [row.defect_type.name if row.defect_type else None for row in defects]
        options = catalog_service.preprocessing_options(session, product_ids=[product_id])[product_id]
        session.expunge_all()
    if len(normals) < MIN_NORMAL_IMAGES:
        raise ValueError(
            translate(
                "errors.anomaly_too_few_normals", code=code, count=len(normals), minimum=MIN_NORMAL_IMAGES
            )
        )
    rows = [*normals, *defects]
    images: list[Image.Image] = []
    for i, row in enumerate(rows):
        if should_cancel is not None and should_cancel():
            raise JobCancelled()
        images.append(load_prepared(storage, row.object_key, options))
        report(0.15 * (i + 1) / len(rows), f"{code}: images {i + 1}/{len(rows)}")
    normal_imgs, defect_imgs = images[: len(normals)], images[len(normals) :]
    started = time.perf_counter()
    config = product_config(config, normal_imgs)
    cache = extractors if extractors is not None else {}
    if extractor is not None:
        cache.setdefault(extractor.backbone, extractor)
    choice: BackboneChoice | None = None
    if auto_backbone:
        report(0.15, f"{code}: choosing the backbone")
        choice = select_backbone(
            normal_imgs,
            defect_imgs,
            config,
            models_dir=settings.models_path,
            device=services.models.device,
            extractors=cache,
            should_cancel=should_cancel,
            margin=settings.anomaly_backbone_margin,
            min_validation=settings.anomaly_backbone_min_validation,
            min_z=settings.anomaly_backbone_min_z,
        )
        config = replace(config, backbone=choice.backbone)
    extractor = cache.get(config.backbone)
    if extractor is None:
        extractor = FeatureExtractor.load(config.backbone, settings.models_path, services.models.device)
        cache[config.backbone] = extractor
    result = train_and_score(
        normal_imgs,
        defect_imgs,
        config,
        progress=lambda f, msg: report(0.15 + 0.8 * f, f"{code}: {msg}"),
        should_cancel=should_cancel,
        extractor=extractor,
        preprocessing_key=options.key(),
        criterion="youden",
    )
    build_seconds = time.perf_counter() - started
    # Parity on the product's own photos, defect photos first (normal ones are in the bank); the
    # threshold was calibrated on PyTorch scores and stays valid because no verdict may change.
    report(0.96, f"{code}: checking inference runtimes")
    runtime_choice = result.model.select_runtime(
        [*defect_imgs, *normal_imgs][:PARITY_IMAGES], settings.inference_runtime
    )
    masks_by_name = demo_masks(settings, code)
    defect_masks = [
        read_mask(masks_by_name[row.original_name], out.anomaly_map.shape)
        if row.original_name in masks_by_name
        else None
        for row, out in zip(defects, result.defect_outputs, strict=True)
    ]
    evaluation = honest_evaluation(
        [o.score for o in result.normal_outputs],
        [o.score for o in result.defect_outputs],
        result.calibration.threshold,
        defect_types=defect_type_names,
        normal_maps=[o.anomaly_map for o in result.normal_outputs],
        defect_maps=[o.anomaly_map for o in result.defect_outputs],
        defect_masks=defect_masks,
        seed=config.seed,
    )
    # The search validated on these same held-out images: their AUROC is then the best of several.
    evaluation["backbone_selected_here"] = choice is not None and choice.reason == REASON_CHOSEN
    version = utcnow().strftime("%Y%m%dT%H%M%S") + (f"-j{job_id}" if job_id is not None else "")
    scope = scope_of(product_id) if view is None else view_scope_of(product_id, view)
    key = artifact_store.version_key(KIND, scope, version)
    target = artifact_store.local_dir(settings, key)
    shutil.rmtree(target, ignore_errors=True)  # a retried job (same version name) starts clean
    result.model.save(target)
    try:
        published = artifact_store.publish(services.storage, target, key)
    except Exception:
        shutil.rmtree(target, ignore_errors=True)
        raise
    meta: dict[str, Any] = {
        "calibration": result.calibration.to_dict(),
        "evaluation": evaluation,
        "backbone": AUTO_BACKBONE if auto_backbone else setting_name(config.backbone),
        "engine_backbone": setting_name(config.backbone),
        "backbone_choice": None if choice is None else choice.to_dict(),
        # product_config divided the coreset ratio by the tile count (the bank of a one-tile model)
        "tiling": {**config.tiling_summary(), "bank_per_tile": True},
        "bank_size": result.model.bank_size,
        "n_train": result.n_train,
        "image_size": config.image_size,
        "build_seconds": round(build_seconds, 2),
        "runtime": runtime_choice.to_dict(),
        "normals_fingerprint": fingerprint,
        "preprocessing_key": options.key(),
        "view": view,
        # the view-less bank: "unlabelled" normal images, or "all" views pooled when those are too few
        "normals_scope": "view" if view is not None else ("all" if pooled else "unlabelled"),
        "n_normals": len(normals),
    }
    try:
        with services.session_factory() as session:
            if view is None:
                replaced = [
                    a.version for a in current_artifacts(session, KIND).values() if a.product_id == product_id
                ]
                artifact = record_current_artifact(
                    session,
                    kind=KIND,
                    product_id=product_id,
                    version=version,
                    path=key,
                    checksum=published.checksum,
                    meta=meta,
                    job_id=job_id,
                )
            else:
                old = current_view_artifacts(session).get((product_id, view))
                replaced = [old.version] if old is not None else []
                artifact = _record_view_artifact(
                    session,
                    product_id=product_id,
                    view=view,
                    version=version,
                    path=key,
                    checksum=published.checksum,
                    meta=meta,
                    job_id=job_id,
                )
            session.commit()
            assert artifact is not None  # noqa: S101 - a version was given
            artifact_id = artifact.id
    except Exception:
        shutil.rmtree(target, ignore_errors=True)
        raise
    report(1.0, f"{code}: done")
    outcome = BuildOutcome(
        product_id, artifact_id, version, meta, checksum=published.checksum, replaced=tuple(replaced)
    )
    return outcome, result.model


def _remove_old_versions(services: Services, outcome: BuildOutcome) -> None:
    """Delete the product's versions older than the one just replaced (storage and cache).

    Requests in flight hold the old model in memory; the version just replaced stays a while longer for
    servers that are still fetching it. Folders of the layout before versions were stored go too.
    """
    keep = {outcome.version, *outcome.replaced}
    artifact_store.prune(services.storage, services.settings, KIND, scope_of(outcome.product_id), keep)
    legacy = services.settings.artifacts_path / ARTIFACT_FOLDER / f"product-{outcome.product_id}"
    shutil.rmtree(legacy, ignore_errors=True)


def install(services: Services, product_id: int, model: PatchCore, checksum: str = "") -> None:
    """Swap a new model set with `model` for `product_id` into the registry."""
    with _SWAP_LOCK:
        current = current_models(services.models)
        services.models.swap(ANOMALY, current.with_model(product_id, model, checksum))


def install_views(services: Services, product_id: int, models: Mapping[str, PatchCore]) -> None:
    """Swap a new model set whose per-view models of `product_id` are exactly `models` into the registry."""
    with _SWAP_LOCK:
        services.models.swap(ANOMALY, current_models(services.models).with_views(product_id, models))


def _retire_views(services: Services, product_id: int, *, built: Mapping[str, BuildOutcome]) -> None:
    """Per-view banks of the product not built this time stop being current; old versions of the built go."""
    with services.session_factory() as session:
        for (pid, view), row in current_view_artifacts(session).items():
            if pid == product_id and view not in built:
                row.is_current = False
        session.commit()
    for view, outcome in built.items():
        keep = {outcome.version, *outcome.replaced}
        artifact_store.prune(services.storage, services.settings, KIND, view_scope_of(product_id, view), keep)


def _scaled_progress(ctx: JobContext, lo: float, hi: float) -> Callable[[float, str], None]:
    def report(fraction: float, stage: str) -> None:
        ctx.progress(lo + (hi - lo) * fraction, stage)

    return report


def run(ctx: JobContext) -> JobResult | None:
    """The job: rebuild for ctx.product_id (or all products), report progress, swap into the registry."""
    services = ctx.services
    with ctx.session_factory() as session:
        if ctx.product_id is not None:
            products = [catalog_service.get_product(session, product_id=ctx.product_id)]
        else:
            products = catalog_service.list_products(session)
        targets = [(p.id, p.code) for p in products]
        backbone = engine_backbone(catalog_service.get_model_settings(session).anomaly_backbone)
    auto = backbone == AUTO_BACKBONE
    config = train_config(DEFAULT_BACKBONE if auto else backbone, ctx.params)
    extractors = dict(current_models(services.models).extractors)
    extractor = extractors.get(config.backbone)
    built: list[dict[str, object]] = []
    failed: dict[str, str] = {}
    for i, (product_id, code) in enumerate(targets):
        lo, hi = i / max(1, len(targets)), (i + 1) / max(1, len(targets))
        with ctx.session_factory() as session:
            view_counts = {
                label: len(rows)
                for label, rows in catalog_service.images_by_view(
                    session, product_id=product_id, kind="normal"
                ).items()
                if label is not None
            }
        own_views = sorted(label for label, n in view_counts.items() if n >= MIN_NORMAL_IMAGES)
        step = (hi - lo) / (1 + len(own_views))
        ctx.log(f"{code}: building the anomaly model")
        try:
            outcome, model = build_product(
                services,
                product_id,
                config=config,
                extractor=extractor,
                job_id=ctx.job_id,
                progress=_scaled_progress(ctx, lo, lo + step),
                should_cancel=ctx.should_cancel,
                auto_backbone=auto,
                extractors=extractors,
            )
            view_models: dict[str, PatchCore] = {}
            view_built: dict[str, BuildOutcome] = {}
            for j, label in enumerate(own_views):
                ctx.log(f"{code}: building the anomaly model of view {label}")
                start = lo + step * (1 + j)
                view_built[label], view_models[label] = build_product(
                    services,
                    product_id,
                    config=config,
                    extractor=extractors.get(config.backbone, extractor),
                    job_id=ctx.job_id,
                    progress=_scaled_progress(ctx, start, start + step),
                    should_cancel=ctx.should_cancel,
                    auto_backbone=auto,
                    extractors=extractors,
                    view=label,
                )
        except JobCancelled:
            raise
        except Exception as exc:  # one product's failure must not stop the others
            if len(targets) == 1:
                raise
            logger.exception("anomaly model of %s failed", code)
            failed[str(product_id)] = str(exc)
            ctx.log(f"{code}: failed: {exc}")
            continue
        extractor = extractors.get(config.backbone)
        runtime = outcome.meta["runtime"]
        for check in runtime["checks"]:
            if check["reason"]:
                ctx.log(f"{code}: {translate(check['reason'], **check['params'])}")
        chosen = translate("runtime.log.chosen", runtime=runtime["runtime"], precision=runtime["precision"])
        ctx.log(f"{code}: {chosen}")
        install(services, product_id, model, outcome.checksum)
        _retire_views(services, product_id, built=view_built)
        install_views(services, product_id, view_models)
        _remove_old_versions(services, outcome)
        evaluation = outcome.meta["evaluation"]
        fallback = sorted(set(view_counts) - set(own_views))
        ctx.log(
            f"{code}: bank {outcome.meta['bank_size']} patches, threshold "
            f"{outcome.meta['calibration']['threshold']:.4f}, image AUROC {evaluation['image_auroc']}"
            + (f"; views with their own bank: {', '.join(own_views)}" if own_views else "")
            + (
                f"; views checked with the product bank (too few normals): {', '.join(fallback)}"
                if fallback
                else ""
            )
        )
        built.append(
            {
                "product_id": product_id,
                "artifact_id": outcome.artifact_id,
                "version": outcome.version,
                "views": {label: o.artifact_id for label, o in view_built.items()},
                "fallback_views": fallback,
            }
        )
    if targets and not built:
        raise RuntimeError("; ".join(failed.values()))
    return {"built": built, "failed": failed}


def _covers(job: DeploymentJob, product_id: int) -> bool:
    return job.product_id is None or job.product_id == product_id


def _failure(job: DeploymentJob, product_id: int) -> str | None:
    if job.status == "failed":
        return job.error or "failed"
    failed = (job.result or {}).get("failed") or {}
    message = failed.get(str(product_id)) if isinstance(failed, dict) else None
    return str(message) if message else None


def states(session: Session, services: Services) -> list[ArtifactState]:
    """Per active product: current, stale (and why), missing, building or failed."""
    products: list[Product] = catalog_service.list_products(session)
    preprocessing = catalog_service.preprocessing_options(session, product_ids=[p.id for p in products])
    artifacts = current_artifacts(session, KIND)
    view_artifacts = current_view_artifacts(session)
    jobs = list(
        session.scalars(
            select(DeploymentJob)
            .where(DeploymentJob.kind == KIND)
            .order_by(DeploymentJob.id.desc())
            .limit(200)
        )
    )
    settings_row = session.get(ModelSetting, 1)  # read only: never create the row from a status read
    model_setting = settings_row.anomaly_backbone if settings_row else setting_name(DEFAULT_BACKBONE)
    loaded = current_models(services.models)
    out: list[ArtifactState] = []
    for product in products:
        art = artifacts.get(product.id)
        base: dict[str, Any] = {
            "kind": KIND,
            "product_id": product.id,
            "built_at": art.created_at if art else None,
            "version": art.version if art else None,
            "detail": dict(art.meta) if art else {},
        }
        # several views per inspection: the product's banks of its own views, beside the view-less one
        base["detail"]["view_banks"] = [
            {
                "view": view,
                "bank_size": (a.meta or {}).get("bank_size"),
                "n_normals": (a.meta or {}).get("n_normals"),
            }
            for (pid, view), a in sorted(view_artifacts.items())
            if pid == product.id
        ]
        mine = [j for j in jobs if _covers(j, product.id)]
        if any(j.status in ("queued", "running") for j in mine):
            out.append(ArtifactState(state="building", **base))
            continue
        finished = next((j for j in mine if j.status in ("succeeded", "failed")), None)
        error = _failure(finished, product.id) if finished is not None else None
        newer = finished is not None and (
            art is None or (finished.finished_at is not None and finished.finished_at > art.created_at)
        )
        if error is not None and newer:
            out.append(
                ArtifactState(
                    state="failed", reasons=["anomaly.state.failed"], params={"error": error}, **base
                )
            )
            continue
        normals = catalog_service.normal_images(session, product_id=product.id)
        if art is None:
            reasons = ["anomaly.state.never_built"]
            params: dict[str, Any] = {"count": len(normals), "minimum": MIN_NORMAL_IMAGES}
            if len(normals) < MIN_NORMAL_IMAGES:
                reasons.append("anomaly.state.too_few_normals")
            out.append(ArtifactState(state="missing", reasons=reasons, params=params, **base))
            continue
        meta = art.meta or {}
        reasons = []
        if meta.get("normals_fingerprint") != normals_fingerprint(normals):
            reasons.append("anomaly.state.normals_changed")
        if meta.get("preprocessing_key") != preprocessing[product.id].key():
            reasons.append("anomaly.state.preprocessing_changed")
        if meta.get("backbone") != model_setting:
            reasons.append("anomaly.state.backbone_changed")
        if loaded.get(product.id) is None:
            reasons.append("anomaly.state.not_loaded")
        out.append(ArtifactState(state="stale" if reasons else "current", reasons=reasons, **base))
    return out
