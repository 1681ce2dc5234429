"""Per-product PatchCore settings chosen at build time: tiling from the photos' sizes, backbone by validation.

``product_config`` derives the shape-aware part (working resolution, tile grid, grayscale) from the
product's normal images, and divides the coreset ratio by the tile count so that a tiled bank holds as many
patches as a one-tile bank would (nearest-neighbour search costs queries x bank: without it a 2x2-tiled
product paid 4x the queries against a 4x larger bank). ``select_backbone`` ("auto") fits one model per
candidate backbone on part of the normal images and scores each on the rest of the normals plus the defect
images it is given; the default backbone (EfficientNet-Lite0, the cheapest) is kept unless validation is
large enough to tell (``MIN_VALIDATION_IMAGES`` of each class) and another backbone beats it by
``BACKBONE_MARGIN``: on 8 + 8 validation images the search was a coin toss between backbones within noise of
each other (docs/benchmarks/anomaly_real.md). The caller must keep other images apart for reporting, or the
reported AUROC would be the maximum of several noisy estimates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from app.ml.anomaly_eval import image_auroc, paired_auroc_z
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

# Validation image AUROC another backbone needs above the default's to replace it, and the evidence that
# the lead is not chance: a one-sided paired DeLong test at 5 % (z >= 1.645). The image AUROC of 12 + 12
# validation images has a standard error of ~0.08 at AUROC 0.85; on ELPV a lead of 0.056 on 12 + 12 cells
# (Lite2 0.917 vs Lite0 0.861) turned into a loss on the test cells (0.801 vs 0.829): a margin alone on a
# small validation set is still a coin toss.
BACKBONE_MARGIN = 0.05
MIN_EVIDENCE_Z = 1.645
# Below this many validation normals or defects no search is run: the default backbone is kept (and the
# build does not pay for fitting every candidate).
MIN_VALIDATION_IMAGES = 10
# Reasons shown on the deploy screen (translation keys; parameters in BackboneChoice.params).
REASON_CHOSEN = "validation_margin"
# Artifacts built before the margin rule: the best validation AUROC, however small the lead.
REASON_BEST_OF_SEARCH = "validation_auroc"
REASON_NO_DEFECTS = "no_defects"
REASON_SINGLE = "single_candidate"
REASON_SMALL_VALIDATION = "default_small_validation"
REASON_WITHIN_MARGIN = "default_within_margin"


def product_config(
    base: PatchCoreConfig,
    images: Sequence[Image.Image],
    *,
    max_tiles: int = 4,
    max_upscale: float = 1.0,
    bank_per_tile: bool = True,
) -> PatchCoreConfig:
    """``base`` with the working resolution and tiling chosen from the product's normal images.

    Args:
        base: Backbone, coreset and other settings to keep.
        images: The product's normal images (their median size decides).
        max_tiles: Tile budget for large photos (see ``choose_tiling``).
        max_upscale: Largest enlargement of small photos.
        bank_per_tile: Divide ``base.coreset_ratio`` by the tile count, so the bank keeps the size a one-tile
            bank of the same photos would have (the ratio is then per one-tile photo). On DeepPCB (2x2
            tiles) this kept the image AUROC (0.703 vs 0.699 over two seeds) and cut the search cost 4x.

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
    shaped = replace(base, work_width=width, work_height=height, tile_overlap=overlap, grayscale=gray)
    cols, rows = shaped.tile_grid
    if bank_per_tile and cols * rows > 1:
        shaped = replace(shaped, coreset_ratio=base.coreset_ratio / (cols * rows))
    return shaped


@dataclass
class BackboneChoice:
    """Outcome of the "auto" backbone search.

    Args:
        backbone: The chosen backbone.
        reason: ``"validation_margin"`` (another backbone beat the default by the margin),
            ``"default_within_margin"`` (none did), ``"default_small_validation"`` (too few validation
            images to search), ``"no_defects"`` (nothing to validate on) or ``"single_candidate"``; the
            deploy screen shows ``anomaly_eval.backbone_reason.<reason>`` with ``params``.
        scores: Validation image AUROC per candidate backbone (None where it could not be computed).
        n_fit: Normal images each candidate's bank was built from.
        n_val_normal: Normal images scored for validation.
        n_val_defect: Defect images scored for validation.
        params: Parameters of the reason's text (margin, minimum validation size, counts).
    """

    backbone: str
    reason: str
    scores: dict[str, float | None] = field(default_factory=dict)
    n_fit: int = 0
    n_val_normal: int = 0
    n_val_defect: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "backbone": self.backbone,
            "reason": self.reason,
            "scores": self.scores,
            "n_fit": self.n_fit,
            "n_val_normal": self.n_val_normal,
            "n_val_defect": self.n_val_defect,
            "params": self.params,
        }


def keep_default_unless_better(
    scores: dict[str, float | None],
    *,
    default: str = DEFAULT_BACKBONE,
    margin: float = BACKBONE_MARGIN,
    evidence: dict[str, float] | None = None,
    min_z: float = MIN_EVIDENCE_Z,
) -> tuple[str, str]:
    """(backbone, reason) from validation AUROCs: the default unless another is clearly better.

    Clearly better: its AUROC beats the default's by ``margin`` and, where ``evidence`` gives the paired z
    of its lead over the default (``paired_auroc_z``), that z reaches ``min_z``. Among the backbones that
    qualify the best wins (ties: the earlier, cheaper candidate). Without a score for the default (not
    available, or AUROC undefined) the best scored candidate is taken.
    """
    base = scores.get(default)
    ranked = [(v, -i, n) for i, (n, v) in enumerate(scores.items()) if v is not None]
    if base is None:
        return (max(ranked)[2], REASON_CHOSEN) if ranked else (default, REASON_WITHIN_MARGIN)

    def clear(name: str, value: float) -> bool:
        # round: AUROCs are ratios of small integers; 0.80 + 0.05 must count as clearing 0.85.
        if name == default or value <= base or round(value - base, 9) < margin:
            return False
        z = None if evidence is None else evidence.get(name)
        return z is None or (not math.isnan(z) and z >= min_z)

    qualified = [r for r in ranked if clear(r[2], r[0])]
    if qualified:
        return max(qualified)[2], REASON_CHOSEN
    return default, REASON_WITHIN_MARGIN


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
    margin: float = BACKBONE_MARGIN,
    min_validation: int = MIN_VALIDATION_IMAGES,
    min_z: float = MIN_EVIDENCE_Z,
) -> BackboneChoice:
    """Keep the default backbone unless validation is large enough and another is clearly better on it.

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
        margin: Validation AUROC another backbone needs above the default's (``keep_default_unless_better``).
        min_z: Paired DeLong z its lead needs as well (0 or less: the margin alone decides).
        min_validation: Fewest validation normals and defects (each) for a search; below, the default stays.

    Returns:
        The choice with every candidate's validation AUROC (none when no search ran).
    """
    names = list(candidates) if candidates is not None else available_backbones(models_dir)
    if not names:
        names = [DEFAULT_BACKBONE]
    default = names[0] if DEFAULT_BACKBONE not in names else DEFAULT_BACKBONE
    if not defect_images or len(normal_images) < 3:
        return BackboneChoice(default, REASON_NO_DEFECTS)
    if len(names) == 1:
        return BackboneChoice(names[0], REASON_SINGLE)
    order = np.random.default_rng(config.seed).permutation(len(normal_images)).tolist()
    n_val = min(len(order) - 2, max(1, round(val_fraction * len(order))))
    if min(n_val, len(defect_images)) < min_validation:
        return BackboneChoice(
            default,
            REASON_SMALL_VALIDATION,
            n_fit=len(order) - n_val,
            n_val_normal=n_val,
            n_val_defect=len(defect_images),
            params={"normals": n_val, "defects": len(defect_images), "minimum": min_validation},
        )
    val_idx, fit_idx = order[:n_val], order[n_val:]
    fit = [normal_images[i] for i in fit_idx]
    val = [normal_images[i] for i in val_idx] + list(defect_images)
    labels = [False] * len(val_idx) + [True] * len(defect_images)
    cache = extractors if extractors is not None else {}
    scores: dict[str, float | None] = {}
    val_scores: dict[str, list[float]] = {}
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
        val_scores[name] = [o.score for o in model.detect_many(val)]
        value = image_auroc(labels, val_scores[name])
        scores[name] = float(value) if np.isfinite(value) else None
    evidence = None
    if default in val_scores and min_z > 0:
        evidence = {n: paired_auroc_z(labels, val_scores[default], v) for n, v in val_scores.items()}
    best, reason = keep_default_unless_better(
        scores, default=default, margin=margin, evidence=evidence, min_z=min_z
    )
    params = {
        "margin": margin,
        "normals": len(val_idx),
        "defects": len(defect_images),
        "default": default,
        # paired DeLong z of each candidate's lead over the default (shown beside the AUROCs)
        "z": {} if evidence is None else {n: round(z, 2) for n, z in evidence.items() if math.isfinite(z)},
    }
    return BackboneChoice(best, reason, scores, len(fit), len(val_idx), len(defect_images), params)
