"""The `anomaly_model` deployment: startup loading, the rebuild job, and per-product artifact state.

Each active product gets a PatchCore memory bank built from its registered normal images and calibrated
on held-out normals (and its defect images, when there are some). The artifact (safetensors bank + JSON
config/calibration, see app.ml.patchcore) lives in `<artifacts>/anomaly/product-<id>/<version>/`; an
`Artifact` row records it with the evaluation the admin sees. Registry name "anomaly" holds one
`AnomalyModels` (product id -> PatchCore) that a finished build replaces whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.core.config import Settings
from app.core.i18n import translate
from app.core.services import Services
from app.core.storage import ObjectStorage
from app.db.base import utcnow
from app.db.tables import (
    Artifact,
    DeploymentJob,
    ModelSetting,
    Product,
    ReferenceImage,
)
from app.deployments.runner import JobContext
from app.deployments.status import ArtifactState
from app.ml.anomaly_calibration import train_and_score
from app.ml.anomaly_eval import evaluation_summary
from app.ml.anomaly_report import honest_evaluation
from app.ml.anomaly_select import BackboneChoice, product_config, select_backbone
from app.ml.errors import ArtifactError, JobCancelled, ModelNotAvailableError
from app.ml.patchcore import (
    AUTO_BACKBONE,
    BACKBONES,
    DEFAULT_BACKBONE,
    FeatureExtractor,
    PatchCore,
    PatchCoreConfig,
    available_backbones,
)
from app.ml.preprocessing import PreprocessingOptions, apply_preprocessing, decode_image

logger = logging.getLogger(__name__)

KIND = "anomaly_model"
# A product's memory bank for one view (several views per inspection); meta["view"] names the view.
VIEW_KIND = "anomaly_view"
VIEW_ARTIFACT_FOLDER = "anomaly-views"
AVAILABLE = True
REGISTRY_NAME = "anomaly"
ARTIFACT_FOLDER = "anomaly"
# Fewer normal images than this give no usable held-out statistics (one image held out of four).
MIN_NORMAL_IMAGES = 5
# Photos are shrunk to this longest side before preprocessing, at build time and check time alike.
MAX_SIDE = 1024
# Job parameters that may override PatchCoreConfig (tests and small machines use smaller values).
_CONFIG_PARAMS = ("image_size", "coreset_ratio", "max_bank", "num_neighbors", "batch_size")
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


class AnomalyModels:
    """The loaded product models, product id -> PatchCore; replaced whole by a build, never mutated.

    Args:
        models: Product id -> model.
        extractors: Backbone id -> shared feature extractor (reused by the next build).
    """

    def __init__(
        self,
        models: Mapping[int, PatchCore],
        extractors: Mapping[str, FeatureExtractor] | None = None,
        views: Mapping[tuple[int, str], PatchCore] | None = None,
    ) -> None:
        self._models = dict(models)
        self.extractors = dict(extractors or {})
        self._views = dict(views or {})

    def get(self, product_id: int) -> PatchCore | None:
        """The product's model, or None."""
        return self._models.get(product_id)

    def get_view(self, product_id: int, view: str) -> PatchCore | None:
        """The product's model for one view (a memory bank of that view's normal images), or None."""
        return self._views.get((product_id, view))

    def views_of(self, product_id: int) -> list[str]:
        """The views of a product that have their own model."""
        return sorted(v for pid, v in self._views if pid == product_id)

    def with_views(self, product_id: int, models: Mapping[str, PatchCore]) -> AnomalyModels:
        """A new set whose view models of `product_id` are exactly `models` (this one is left as it is)."""
        views = {k: m for k, m in self._views.items() if k[0] != product_id}
        views.update({(product_id, label): m for label, m in models.items()})
        extractors = {**self.extractors, **{m.extractor.backbone: m.extractor for m in models.values()}}
        return AnomalyModels(self._models, extractors, views)

    @property
    def product_ids(self) -> list[int]:
        """Products with a loaded model."""
        return sorted(self._models)

    def with_model(self, product_id: int, model: PatchCore) -> AnomalyModels:
        """A new set with `model` for `product_id` (this one is left as it is)."""
        extractors = {**self.extractors, model.extractor.backbone: model.extractor}
        return AnomalyModels({**self._models, product_id: model}, extractors, self._views)

    def describe(self) -> str:
        """Short status for /readyz."""
        views = f" (+{len(self._views)} per view)" if self._views else ""
        return f"PatchCore x{len(self._models)}{views}"


def engine_backbone(setting: str) -> str:
    """The engine's backbone id for a ModelSetting.anomaly_backbone value."""
    name = _SETTING_TO_BACKBONE.get(setting, setting)
    if name not in BACKBONES and name != AUTO_BACKBONE:
        raise ModelNotAvailableError(f"unknown anomaly backbone {setting!r}")
    return name


def setting_name(backbone: str) -> str:
    """The ModelSetting.anomaly_backbone value of an engine backbone id."""
    return next((k for k, v in _SETTING_TO_BACKBONE.items() if v == backbone), backbone)


def current_models(services: Services) -> AnomalyModels:
    """The live model set (empty when nothing is loaded)."""
    found = services.models.get(REGISTRY_NAME)
    return found if isinstance(found, AnomalyModels) else AnomalyModels({})


def normal_images(session: Session, product_id: int) -> list[ReferenceImage]:
    """The product's normal images, oldest first."""
    return list(
        session.scalars(
            select(ReferenceImage)
            .where(ReferenceImage.product_id == product_id, ReferenceImage.kind == "normal")
            .order_by(ReferenceImage.id)
        )
    )


def defect_images(session: Session, product_id: int) -> list[ReferenceImage]:
    """The product's defect images, oldest first."""
    return list(
        session.scalars(
            select(ReferenceImage)
            .where(ReferenceImage.product_id == product_id, ReferenceImage.kind == "defect")
            .order_by(ReferenceImage.id)
        )
    )


def normals_fingerprint(rows: Sequence[ReferenceImage]) -> str:
    """Hash of the normal image set (ids and content checksums); a change makes the model stale."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r.id):
        digest.update(f"{row.id}:{row.checksum}\n".encode())
    return digest.hexdigest()


def prepare(image: Image.Image, options: PreprocessingOptions) -> Image.Image:
    """The image as the product model sees it (RGB, shrunk to MAX_SIDE, preprocessed)."""
    return apply_preprocessing(image, options, max_side=MAX_SIDE)


def load_prepared(storage: ObjectStorage, row: ReferenceImage, options: PreprocessingOptions) -> Image.Image:
    """A registered image read from storage and prepared for the product model."""
    return prepare(decode_image(storage.get(row.object_key)), options)


def demo_masks(settings: Settings, product_code: str) -> dict[str, Path]:
    """Ground-truth masks by image file name for a product loaded from the demo data (else empty)."""
    found: dict[str, Path] = {}
    for manifest_path in sorted((settings.data_path / "demo").glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for item in manifest.get("products", []):
            if item.get("code") != product_code:
                continue
            for entry in item.get("defect_images", []):
                mask = manifest_path.parent / entry["mask_path"]
                if mask.is_file():
                    found[Path(entry["path"]).name] = mask
    return found


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A 0/255 mask file as a bool array of `shape` (H, W), resized with nearest neighbour."""
    with Image.open(path) as opened:
        mask = opened.convert("L")
        if mask.size != (shape[1], shape[0]):
            mask = mask.resize((shape[1], shape[0]), Image.Resampling.NEAREST)
        return np.asarray(mask) > 127


def artifact_dir(settings: Settings, artifact: Artifact) -> Path:
    """Folder of an artifact row's files."""
    return settings.artifacts_path / artifact.path


def current_artifacts(session: Session) -> dict[int, Artifact]:
    """The current anomaly artifact per product id."""
    rows = session.scalars(select(Artifact).where(Artifact.kind == KIND, Artifact.is_current.is_(True)))
    return {row.product_id: row for row in rows if row.product_id is not None}


def current_view_artifacts(session: Session) -> dict[tuple[int, str], Artifact]:
    """The current per-view anomaly artifact per (product id, view)."""
    rows = session.scalars(select(Artifact).where(Artifact.kind == VIEW_KIND, Artifact.is_current.is_(True)))
    return {
        (row.product_id, str((row.meta or {}).get("view"))): row
        for row in rows
        if row.product_id is not None and (row.meta or {}).get("view")
    }


def _publish_backbones(services: Services) -> None:
    """Tell the model-settings API which anomaly backbones this server can use."""
    choices = dict(services.models.get("catalog.available_choices") or {})
    choices["anomaly_backbone"] = {
        setting_name(b) for b in available_backbones(services.settings.models_path)
    } | {AUTO_BACKBONE}
    services.models.swap("catalog.available_choices", choices)


def load(services: Services) -> None:
    """Load the built artifacts into services.models at startup (no embedding or training work)."""
    _publish_backbones(services)
    with services.session_factory() as session:
        active = {p.id for p in catalog_service.list_products(session)}
        paths: list[tuple[tuple[int, str | None], Path]] = [
            ((pid, None), artifact_dir(services.settings, a))
            for pid, a in current_artifacts(session).items()
            if pid in active
        ]
        paths += [
            (key, artifact_dir(services.settings, a))
            for key, a in current_view_artifacts(session).items()
            if key[0] in active
        ]
    models: dict[int, PatchCore] = {}
    view_models: dict[tuple[int, str], PatchCore] = {}
    extractors: dict[str, FeatureExtractor] = {}
    errors: list[str] = []
    for (product_id, view), path in paths:
        try:
            meta = json.loads((path / "patchcore.json").read_text(encoding="utf-8"))
            backbone = str(meta.get("backbone", DEFAULT_BACKBONE))
            if backbone not in extractors:
                extractors[backbone] = FeatureExtractor.load(
                    backbone, services.settings.models_path, services.models.device
                )
            model = PatchCore.load(path, extractor=extractors[backbone])
            if view is None:
                models[product_id] = model
            else:
                view_models[(product_id, view)] = model
        except (OSError, ValueError, ArtifactError, ModelNotAvailableError) as exc:
            logger.warning("anomaly model of product %s (view %s) not loaded: %s", product_id, view, exc)
            errors.append(f"product {product_id}{f' view {view}' if view else ''}: {exc}")
    services.models.swap(REGISTRY_NAME, AnomalyModels(models, extractors, view_models))
    if errors:
        services.models.set_error(REGISTRY_NAME, "; ".join(errors))


@dataclass
class BuildOutcome:
    """One product's finished build."""

    product_id: int
    artifact_id: int
    version: str
    meta: dict[str, Any]


def train_config(backbone: str, params: Mapping[str, Any]) -> PatchCoreConfig:
    """PatchCore settings for a build: the defaults with the job's overrides."""
    overrides = {k: params[k] for k in _CONFIG_PARAMS if k in params}
    return PatchCoreConfig(backbone=backbone, **overrides)


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
        product = catalog_service.get_product(session, product_id)
        code = product.code if view is None else f"{product.code}/{view}"
        all_normals = normal_images(session, product_id)
        by_view = catalog_service.images_by_view(session, product_id=product_id, kind="normal")
        if view is None:
            unlabelled = by_view.get(None, [])
            pooled = len(unlabelled) < MIN_NORMAL_IMAGES and len(unlabelled) < len(all_normals)
            normals = all_normals if pooled else unlabelled
            defects = defect_images(session, product_id)
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
        options = catalog_service.preprocessing_options(session, [product_id])[product_id]
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
        images.append(load_prepared(storage, row, options))
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
    evaluation["backbone_selected_here"] = choice is not None and choice.reason == "validation_auroc"
    version = utcnow().strftime("%Y%m%dT%H%M%S") + (f"-j{job_id}" if job_id is not None else "")
    if view is None:
        relative = f"{ARTIFACT_FOLDER}/product-{product_id}/{version}"
    else:
        relative = f"{VIEW_ARTIFACT_FOLDER}/product-{product_id}/{view}/{version}"
    target = settings.artifacts_path / relative
    result.model.save(target)
    meta: dict[str, Any] = {
        "calibration": result.calibration.to_dict(),
        "evaluation": evaluation,
        "backbone": AUTO_BACKBONE if auto_backbone else setting_name(config.backbone),
        "engine_backbone": setting_name(config.backbone),
        "backbone_choice": None if choice is None else choice.to_dict(),
        "tiling": config.tiling_summary(),
        "bank_size": result.model.bank_size,
        "n_train": result.n_train,
        "image_size": config.image_size,
        "build_seconds": round(build_seconds, 2),
        "normals_fingerprint": fingerprint,
        "preprocessing_key": options.key(),
        "view": view,
        # the view-less bank: "unlabelled" normal images, or "all" views pooled when those are too few
        "normals_scope": "view" if view is not None else ("all" if pooled else "unlabelled"),
        "n_normals": len(normals),
    }
    kind = KIND if view is None else VIEW_KIND
    try:
        with services.session_factory() as session:
            for old in session.scalars(
                select(Artifact).where(
                    Artifact.kind == kind, Artifact.product_id == product_id, Artifact.is_current.is_(True)
                )
            ):
                if (old.meta or {}).get("view") == view:
                    old.is_current = False
            artifact = Artifact(
                kind=kind,
                product_id=product_id,
                version=version,
                path=relative,
                is_current=True,
                meta=meta,
                job_id=job_id,
            )
            session.add(artifact)
            session.commit()
            artifact_id = artifact.id
    except Exception:
        shutil.rmtree(target, ignore_errors=True)
        raise
    report(1.0, f"{code}: done")
    return BuildOutcome(product_id, artifact_id, version, meta), result.model


def _remove_old_versions(settings: Settings, product_id: int, keep: str) -> None:
    # Requests in flight hold the old model in memory, so its files can go once the new one is live.
    folder = settings.artifacts_path / ARTIFACT_FOLDER / f"product-{product_id}"
    for path in folder.iterdir() if folder.is_dir() else []:
        if path.is_dir() and path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def install(services: Services, product_id: int, model: PatchCore) -> None:
    """Swap a new model set with `model` for `product_id` into the registry."""
    with _SWAP_LOCK:
        services.models.swap(REGISTRY_NAME, current_models(services).with_model(product_id, model))


def install_views(services: Services, product_id: int, models: Mapping[str, PatchCore]) -> None:
    """Swap a new model set whose per-view models of `product_id` are exactly `models` into the registry."""
    with _SWAP_LOCK:
        services.models.swap(REGISTRY_NAME, current_models(services).with_views(product_id, models))


def _retire_views(services: Services, product_id: int, *, keep: Mapping[str, object]) -> None:
    """Per-view artifacts of the product other than those just built stop being current; old files go."""
    with services.session_factory() as session:
        for row in session.scalars(
            select(Artifact).where(
                Artifact.kind == VIEW_KIND, Artifact.product_id == product_id, Artifact.is_current.is_(True)
            )
        ):
            if row.id not in keep.values():
                row.is_current = False
        session.commit()
        keep_paths = {
            services.settings.artifacts_path / row.path
            for row in session.scalars(
                select(Artifact).where(
                    Artifact.kind == VIEW_KIND,
                    Artifact.product_id == product_id,
                    Artifact.is_current.is_(True),
                )
            )
        }
    folder = services.settings.artifacts_path / VIEW_ARTIFACT_FOLDER / f"product-{product_id}"
    for view_dir in folder.iterdir() if folder.is_dir() else []:
        for path in view_dir.iterdir() if view_dir.is_dir() else []:
            if path.is_dir() and path not in keep_paths:
                shutil.rmtree(path, ignore_errors=True)


def _scaled_progress(ctx: JobContext, lo: float, hi: float) -> Callable[[float, str], None]:
    def report(fraction: float, stage: str) -> None:
        ctx.progress(lo + (hi - lo) * fraction, stage)

    return report


def run(ctx: JobContext) -> dict[str, object] | None:
    """The job: rebuild for ctx.product_id (or all products), report progress, swap into the registry."""
    services: Services = ctx.services
    with ctx.session_factory() as session:
        if ctx.product_id is not None:
            products = [catalog_service.get_product(session, ctx.product_id)]
        else:
            products = catalog_service.list_products(session)
        targets = [(p.id, p.code) for p in products]
        backbone = engine_backbone(catalog_service.get_model_settings(session).anomaly_backbone)
    auto = backbone == AUTO_BACKBONE
    config = train_config(DEFAULT_BACKBONE if auto else backbone, ctx.params)
    extractors = dict(current_models(services).extractors)
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
            view_built: dict[str, object] = {}
            for j, label in enumerate(own_views):
                ctx.log(f"{code}: building the anomaly model of view {label}")
                start = lo + step * (1 + j)
                view_outcome, view_models[label] = build_product(
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
                view_built[label] = view_outcome.artifact_id
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
        install(services, product_id, model)
        _retire_views(services, product_id, keep=view_built)
        install_views(services, product_id, view_models)
        _remove_old_versions(services.settings, product_id, outcome.version)
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
                "views": view_built,
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
    preprocessing = catalog_service.preprocessing_options(session, [p.id for p in products])
    artifacts = current_artifacts(session)
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
    loaded = current_models(services)
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
        normals = normal_images(session, product.id)
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


# --- `defectlens evaluate anomaly` ----------------------------------------------------------------------

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _demo_holdout(settings: Settings, product_code: str) -> tuple[list[Path], list[Path]]:
    """Held-out demo (normal, defect) image files of a product: never registered, never in the bank."""
    normals: list[Path] = []
    defects: list[Path] = []
    for manifest_path in sorted((settings.data_path / "demo").glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for item in manifest.get("products", []):
            if item.get("code") != product_code:
                continue
            root = manifest_path.parent
            normals += [
                root / e["path"]
                for e in item.get("normal_images", [])
                if isinstance(e, dict) and e.get("holdout")
            ]
            defects += [root / e["path"] for e in item.get("defect_images", []) if e.get("holdout")]
    return normals, defects


def _image_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def _mask_for(name: str, masks_dir: Path | None, demo: Mapping[str, Path]) -> Path | None:
    if masks_dir is not None:
        stem = Path(name).stem
        for candidate in sorted(masks_dir.glob(f"{stem}.*")):
            if candidate.suffix.lower() in _IMAGE_SUFFIXES:
                return candidate
    return demo.get(name)


def evaluate_product(
    services: Services,
    product_code: str,
    *,
    masks_dir: Path | None = None,
    normals_dir: Path | None = None,
    defects_dir: Path | None = None,
) -> dict[str, Any]:
    """Score a product's built model on its defect images and on normal images outside the bank.

    Defect images: the registered ones, the demo's held-out ones and `defects_dir`. Normal images: the
    demo's held-out ones and `normals_dir` (registered normals are in the bank and would score ~0).
    Masks: `masks_dir/<image stem>.*`, else the demo's masks. Returns `evaluation_summary` plus
    "product", "version" and "built" (the evaluation stored at build time).

    Raises:
        NotFoundError: Unknown product code.
        ConflictError: The product has no built model.
    """
    from app.core.errors import ConflictError, NotFoundError

    settings = services.settings
    with services.session_factory() as session:
        product = catalog_service.get_product_by_code(session, product_code)
        if product is None:
            raise NotFoundError("errors.product_not_found", id=product_code)
        artifact = current_artifacts(session).get(product.id)
        if artifact is None:
            raise ConflictError("errors.anomaly_model_missing", product=product.name, code=product.code)
        options = catalog_service.preprocessing_options(session, [product.id])[product.id]
        registered = defect_images(session, product.id)
        session.expunge_all()
    model = PatchCore.load(
        artifact_dir(settings, artifact), models_dir=settings.models_path, device=services.models.device
    )
    if model.calibration is None:
        raise ConflictError("errors.anomaly_model_missing", product=product.name, code=product.code)
    demo_normals, demo_defects = _demo_holdout(settings, product_code)
    demo_mask_files = demo_masks(settings, product_code)

    def prepared_file(path: Path) -> Image.Image:
        return prepare(decode_image(path.read_bytes()), options)

    normal_pictures = [prepared_file(p) for p in [*demo_normals, *_image_files(normals_dir)]]
    defect_named: list[tuple[str, Image.Image]] = [
        (row.original_name, load_prepared(services.storage, row, options)) for row in registered
    ]
    defect_named += [(p.name, prepared_file(p)) for p in [*demo_defects, *_image_files(defects_dir)]]
    normal_out = model.detect_many(normal_pictures)
    defect_out = model.detect_many([im for _, im in defect_named])
    masks: list[np.ndarray | None] = []
    for (name, _), out in zip(defect_named, defect_out, strict=True):
        mask_path = _mask_for(name, masks_dir, demo_mask_files)
        masks.append(read_mask(mask_path, out.anomaly_map.shape) if mask_path is not None else None)
    summary = evaluation_summary(
        [o.score for o in normal_out],
        [o.score for o in defect_out],
        model.calibration.threshold,
        normal_maps=[o.anomaly_map for o in normal_out],
        defect_maps=[o.anomaly_map for o in defect_out],
        defect_masks=masks,
    )
    return {
        **summary,
        "product": product_code,
        "version": artifact.version,
        "n_masks": sum(m is not None for m in masks),
        "built": (artifact.meta or {}).get("evaluation"),
    }
