"""The live anomaly models: one calibrated PatchCore per product, and how a photo is prepared for them.

The twin of `search_runtime`: what a request needs at run time (the loaded model set, the working size,
preparing an image) lives here; building and recording artifacts is `app.deployments.anomaly_model`'s.
The registry holds one `AnomalyModels` under `ANOMALY`, which a finished build replaces whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from app.core.storage import ObjectStorage
from app.ml.errors import ArtifactError, ModelNotAvailableError
from app.ml.inference_runtime import AUTO
from app.ml.patchcore import DEFAULT_BACKBONE, FeatureExtractor, PatchCore
from app.ml.preprocessing import PreprocessingOptions, apply_preprocessing, decode_image
from app.ml.registry import ModelRegistry, RegistryKey

logger = logging.getLogger(__name__)

# Photos are shrunk to this longest side before preprocessing, at build time and check time alike.
MAX_SIDE = 1024


class AnomalyModels:
    """The loaded product models, product id -> PatchCore, and per-view models; replaced whole, never mutated.

    Args:
        models: Product id -> model (the product's view-less bank).
        extractors: Backbone id -> shared feature extractor (reused by the next build).
        views: (product id, view label) -> model (a bank of that view's normal images).
    """

    def __init__(
        self,
        models: Mapping[int, PatchCore],
        extractors: Mapping[str, FeatureExtractor] | None = None,
        checksums: Mapping[int, str] | None = None,
        *,
        views: Mapping[tuple[int, str], PatchCore] | None = None,
    ) -> None:
        self._models = dict(models)
        self.extractors = dict(extractors or {})
        # product id -> checksum of the stored version loaded (a reload keeps models whose version stayed)
        self.checksums = dict(checksums or {})
        self._views = dict(views or {})

    @classmethod
    def load(
        cls,
        folders: Mapping[int, Path],
        *,
        models_dir: Path,
        device: str = "cpu",
        runtime: str = AUTO,
        view_folders: Mapping[tuple[int, str], Path] | None = None,
    ) -> tuple[AnomalyModels, list[str]]:
        """Load built artifacts (product id -> folder), sharing one extractor per backbone.

        Args:
            folders: Product id -> artifact folder (see app.ml.patchcore).
            models_dir: Where backbone weights live.
            device: "cpu" or "cuda".
            runtime: Inference runtime setting (a model runs on it only where its build's parity check
                passed on this device type; see `PatchCore.load`).
            view_folders: (product id, view) -> artifact folder of that view's bank.

        Returns:
            The model set and one message per product that could not be loaded (left out of the set).
        """
        models: dict[int, PatchCore] = {}
        views: dict[tuple[int, str], PatchCore] = {}
        extractors: dict[str, FeatureExtractor] = {}
        errors: list[str] = []
        entries: list[tuple[int, str | None, Path]] = [(pid, None, path) for pid, path in folders.items()]
        entries += [(pid, view, path) for (pid, view), path in (view_folders or {}).items()]
        for product_id, view, path in entries:
            try:
                meta = json.loads((path / "patchcore.json").read_text(encoding="utf-8"))
                backbone = str(meta.get("backbone", DEFAULT_BACKBONE))
                if backbone not in extractors:
                    extractors[backbone] = FeatureExtractor.load(backbone, models_dir, device)
                model = PatchCore.load(path, extractor=extractors[backbone], runtime=runtime)
                if view is None:
                    models[product_id] = model
                else:
                    views[(product_id, view)] = model
            except (OSError, ValueError, ArtifactError, ModelNotAvailableError) as exc:
                logger.warning("anomaly model of product %s (view %s) not loaded: %s", product_id, view, exc)
                errors.append(f"product {product_id}{f' view {view}' if view else ''}: {exc}")
        return cls(models, extractors, views=views), errors

    def get(self, product_id: int) -> PatchCore | None:
        """The product's model, or None."""
        return self._models.get(product_id)

    def get_view(self, product_id: int, view: str) -> PatchCore | None:
        """The product's model for one view (a memory bank of that view's normal images), or None."""
        return self._views.get((product_id, view))

    @property
    def views(self) -> dict[tuple[int, str], PatchCore]:
        """Every per-view model, (product id, view) -> model."""
        return dict(self._views)

    def views_of(self, product_id: int) -> list[str]:
        """The views of a product that have their own model."""
        return sorted(v for pid, v in self._views if pid == product_id)

    def with_views(self, product_id: int, models: Mapping[str, PatchCore]) -> AnomalyModels:
        """A new set whose view models of `product_id` are exactly `models` (this one is left as it is)."""
        views = {k: m for k, m in self._views.items() if k[0] != product_id}
        views.update({(product_id, label): m for label, m in models.items()})
        extractors = {**self.extractors, **{m.extractor.backbone: m.extractor for m in models.values()}}
        return AnomalyModels(self._models, extractors, self.checksums, views=views)

    def calibrated(self, product_id: int) -> PatchCore | None:
        """The product's model if it has a calibration (what a check and region identification need)."""
        model = self._models.get(product_id)
        return model if model is not None and model.calibration is not None else None

    @property
    def product_ids(self) -> list[int]:
        """Products with a loaded model."""
        return sorted(self._models)

    def with_model(self, product_id: int, model: PatchCore, checksum: str = "") -> AnomalyModels:
        """A new set with `model` for `product_id` (this one is left as it is)."""
        extractors = {**self.extractors, model.extractor.backbone: model.extractor}
        checksums = {**self.checksums, product_id: checksum}
        return AnomalyModels({**self._models, product_id: model}, extractors, checksums, views=self._views)

    def describe(self) -> str:
        """Short status for /readyz: models per inference runtime, and the per-view banks."""
        runtimes: dict[str, int] = {}
        for model in [*self._models.values(), *self._views.values()]:
            runtimes[model.runtime] = runtimes.get(model.runtime, 0) + 1
        views = f" (+{len(self._views)} per view)" if self._views else ""
        return f"PatchCore x{len(self._models)}{views}" + "".join(
            f", {n} on {name}" for name, n in sorted(runtimes.items())
        )


ANOMALY = RegistryKey[AnomalyModels]("anomaly")


def current_models(models: ModelRegistry) -> AnomalyModels:
    """The live model set (empty when nothing is loaded)."""
    return models.get(ANOMALY) or AnomalyModels({})


def prepare(image: Image.Image, options: PreprocessingOptions) -> Image.Image:
    """The image as the product model sees it (RGB, shrunk to MAX_SIDE, preprocessed)."""
    return apply_preprocessing(image, options, max_side=MAX_SIDE)


def load_prepared(storage: ObjectStorage, object_key: str, options: PreprocessingOptions) -> Image.Image:
    """A stored image (e.g. a registered normal image) read and prepared for the product model."""
    return prepare(decode_image(storage.get(object_key)), options)
