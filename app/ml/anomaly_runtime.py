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
    """The loaded product models, product id -> PatchCore; replaced whole by a build, never mutated.

    Args:
        models: Product id -> model.
        extractors: Backbone id -> shared feature extractor (reused by the next build).
    """

    def __init__(
        self,
        models: Mapping[int, PatchCore],
        extractors: Mapping[str, FeatureExtractor] | None = None,
        checksums: Mapping[int, str] | None = None,
    ) -> None:
        self._models = dict(models)
        self.extractors = dict(extractors or {})
        # product id -> checksum of the stored version loaded (a reload keeps models whose version stayed)
        self.checksums = dict(checksums or {})

    @classmethod
    def load(
        cls, folders: Mapping[int, Path], *, models_dir: Path, device: str = "cpu", runtime: str = AUTO
    ) -> tuple[AnomalyModels, list[str]]:
        """Load built artifacts (product id -> folder), sharing one extractor per backbone.

        Args:
            folders: Product id -> artifact folder (see app.ml.patchcore).
            models_dir: Where backbone weights live.
            device: "cpu" or "cuda".
            runtime: Inference runtime setting (a model runs on it only where its build's parity check
                passed on this device type; see `PatchCore.load`).

        Returns:
            The model set and one message per product that could not be loaded (left out of the set).
        """
        models: dict[int, PatchCore] = {}
        extractors: dict[str, FeatureExtractor] = {}
        errors: list[str] = []
        for product_id, path in folders.items():
            try:
                meta = json.loads((path / "patchcore.json").read_text(encoding="utf-8"))
                backbone = str(meta.get("backbone", DEFAULT_BACKBONE))
                if backbone not in extractors:
                    extractors[backbone] = FeatureExtractor.load(backbone, models_dir, device)
                models[product_id] = PatchCore.load(path, extractor=extractors[backbone], runtime=runtime)
            except (OSError, ValueError, ArtifactError, ModelNotAvailableError) as exc:
                logger.warning("anomaly model of product %s not loaded: %s", product_id, exc)
                errors.append(f"product {product_id}: {exc}")
        return cls(models, extractors), errors

    def get(self, product_id: int) -> PatchCore | None:
        """The product's model, or None."""
        return self._models.get(product_id)

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
        return AnomalyModels({**self._models, product_id: model}, extractors, checksums)

    def describe(self) -> str:
        """Short status for /readyz: models per inference runtime."""
        runtimes: dict[str, int] = {}
        for model in self._models.values():
            runtimes[model.runtime] = runtimes.get(model.runtime, 0) + 1
        return f"PatchCore x{len(self._models)}" + "".join(
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
