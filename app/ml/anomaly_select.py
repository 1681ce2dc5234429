"""Per-product PatchCore settings chosen at build time: tiling from the photos' sizes, backbone by validation.

``product_config`` derives the shape-aware part (working resolution, tile grid, grayscale) from the
product's normal images. ``select_backbone`` ("auto") fits one model per candidate backbone on part of the
normal images and keeps the one with the best image AUROC on the rest of the normals plus the defect images
it is given; the caller must keep other images apart for reporting, or the reported AUROC would be the
maximum of several noisy estimates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from app.ml.anomaly_eval import image_auroc
from app.ml.errors import JobCancelled, ModelNotAvailableError
from app.ml.patchcore import (
    DEFAULT_BACKBONE,
    CancelFn,
    FeatureExtractor,
    PatchCore,
    PatchCoreConfig,
    available_backbones,
    choose_tiling,
    is_grayscale,
)

logger = logging.getLogger(__name__)


def product_config(
    base: PatchCoreConfig, images: Sequence[Image.Image], *, max_tiles: int = 4, max_upscale: float = 1.0
) -> PatchCoreConfig:
    """``base`` with the working resolution and tiling chosen from the product's normal images.

    Args:
        base: Backbone, coreset and other settings to keep.
        images: The product's normal images (their median size decides).
        max_tiles: Tile budget for large photos (see ``choose_tiling``).
        max_upscale: Largest enlargement of small photos.

    Returns:
        The config the product's bank is built with; grayscale when every normal image is.
    """
    gray = bool(images) and all(is_grayscale(im) for im in images)
    if base.image_size % 16 or not images:  # tiles need a side that is a multiple of 16
        return replace(base, grayscale=gray)
    # The overlap must stay below half a tile (small test tiles get less, down to none).
    overlap = min(base.tile_overlap, (base.image_size // 2 - 1) // 16 * 16)
    width, height = choose_tiling(
        [im.size for im in images],
        image_size=base.image_size,
        tile_overlap=overlap,
        max_tiles=max_tiles,
        max_upscale=max_upscale,
    )
    return replace(base, work_width=width, work_height=height, tile_overlap=overlap, grayscale=gray)


@dataclass
class BackboneChoice:
    """Outcome of the "auto" backbone search.

    Args:
        backbone: The chosen backbone.
        reason: ``"validation_auroc"``, ``"no_defects"`` (nothing to validate on: default backbone) or
            ``"single_candidate"``.
        scores: Validation image AUROC per candidate backbone (None where it could not be computed).
        n_fit: Normal images each candidate's bank was built from.
        n_val_normal: Normal images scored for validation.
        n_val_defect: Defect images scored for validation.
    """

    backbone: str
    reason: str
    scores: dict[str, float | None] = field(default_factory=dict)
    n_fit: int = 0
    n_val_normal: int = 0
    n_val_defect: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "backbone": self.backbone,
            "reason": self.reason,
            "scores": self.scores,
            "n_fit": self.n_fit,
            "n_val_normal": self.n_val_normal,
            "n_val_defect": self.n_val_defect,
        }


def select_backbone(
    normal_images: Sequence[Image.Image],
    defect_images: Sequence[Image.Image],
    config: PatchCoreConfig,
    *,
    candidates: Sequence[str] | None = None,
    models_dir: Path | None = None,
    device: str | torch.device | None = None,
    extractors: dict[str, FeatureExtractor] | None = None,
    val_fraction: float = 0.3,
    should_cancel: CancelFn | None = None,
) -> BackboneChoice:
    """Pick the backbone with the best validation image AUROC (ties: the earlier, cheaper candidate).

    Args:
        normal_images: Normal images available for the search (split into fit and validation parts).
        defect_images: Defect images for validation (none: the default backbone is kept).
        config: Settings shared by all candidates (tiling, coreset ...); ``backbone`` is replaced.
        candidates: Backbones to try (default: every backbone available offline).
        models_dir: Model folder for torchvision backbones.
        device: Torch device.
        extractors: Already loaded extractors to reuse; new ones are added to it.
        val_fraction: Share of the normal images held out for validation.
        should_cancel: Polled between candidates.

    Returns:
        The choice with every candidate's validation AUROC.
    """
    names = list(candidates) if candidates is not None else available_backbones(models_dir)
    if not names:
        names = [DEFAULT_BACKBONE]
    if not defect_images or len(normal_images) < 3:
        return BackboneChoice(names[0] if DEFAULT_BACKBONE not in names else DEFAULT_BACKBONE, "no_defects")
    if len(names) == 1:
        return BackboneChoice(names[0], "single_candidate")
    order = np.random.default_rng(config.seed).permutation(len(normal_images)).tolist()
    n_val = min(len(order) - 2, max(1, round(val_fraction * len(order))))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    fit = [normal_images[i] for i in fit_idx]
    val = [normal_images[i] for i in val_idx] + list(defect_images)
    labels = [False] * len(val_idx) + [True] * len(defect_images)
    cache = extractors if extractors is not None else {}
    scores: dict[str, float | None] = {}
    for name in names:
        if should_cancel is not None and should_cancel():
            raise JobCancelled("backbone search cancelled")
        try:
            if name not in cache:
                cache[name] = FeatureExtractor.load(name, models_dir, device)
            model = PatchCore.fit(fit, replace(config, backbone=name), extractor=cache[name])
        except ModelNotAvailableError:
            logger.warning("backbone %s is not available; skipped in the search", name)
            scores[name] = None
            continue
        value = image_auroc(labels, [o.score for o in model.detect_many(val)])
        scores[name] = float(value) if np.isfinite(value) else None
    ranked = [(v, -i, n) for i, (n, v) in enumerate(scores.items()) if v is not None]
    best = max(ranked)[2] if ranked else DEFAULT_BACKBONE
    return BackboneChoice(best, "validation_auroc", scores, len(fit), len(val_idx), len(defect_images))
