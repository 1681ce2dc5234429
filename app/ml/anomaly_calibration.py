"""Per-product PatchCore thresholds from held-out normal images (and defect images when there are some).

Procedure (``train_and_score``):

1. Shuffle the normal images (seeded) and hold out ``holdout_fraction`` of them (at least one).
2. Build a PatchCore bank from the rest and score the held-out normals and every defect image. Held-out
   images matter: a bank image scores near zero against itself, so scoring training images would give a
   threshold far too low.
3. Image threshold:
   * normals only (``method="normal_stats"``): ``max(mean + k_std * std, max)`` of the held-out normal
     scores, i.e. k standard deviations above the mean and never below a held-out normal;
   * with defect images (``method="f1"``): the cut maximising F1 over held-out normals + defects (widest
     gap among equally good cuts, see ``anomaly_eval.best_f1_threshold``); or (``method="youden"``) the
     cut maximising Youden's J = TPR - FPR, which the deployment job uses: F1 ignores true negatives, so
     with a few held-out normals and many defect images it puts the cut below the normal scores.
   The pixel threshold (for masks and regions) is chosen the same way from the per-image maxima of the
   smoothed anomaly maps, since smoothing lowers map peaks below the image score of thin defects.
4. With ``refit_on_all=True`` (default) the final bank is rebuilt from ALL normal images and keeps the
   thresholds found above. A bank built from more normal images covers normal variation at least as well,
   so normal scores can only drop (fewer false alarms than calibrated) while a defect's distance to the
   nearest normal patch barely changes; the thresholds are therefore slightly conservative, not
   incomparable. Set ``refit_on_all=False`` to keep the exact model the statistics describe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.ml.anomaly_eval import best_f1_threshold, best_youden_threshold, f1_at_threshold
from app.ml.errors import JobCancelled
from app.ml.patchcore import (
    AnomalyOutput,
    CancelFn,
    FeatureExtractor,
    PatchCore,
    PatchCoreConfig,
    ProgressFn,
)
from app.ml.patchcore import Calibration as Calibration

__all__ = [
    "Calibration",
    "TrainResult",
    "calibrate",
    "split_normals",
    "train_and_score",
]


def split_normals(n: int, holdout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(bank indices, held-out indices) of ``n`` normal images; at least one in each part."""
    if n < 2:
        raise ValueError("calibration needs at least 2 normal images (one for the bank, one held out)")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in (0, 1)")
    n_hold = min(n - 1, max(1, round(holdout_fraction * n)))
    order = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(order[n_hold:]), sorted(order[:n_hold])


def _normal_rule(values: np.ndarray, k_std: float) -> float:
    return float(max(values.mean() + k_std * values.std(), values.max()))


def calibrate(
    normal_outputs: Sequence[AnomalyOutput],
    defect_outputs: Sequence[AnomalyOutput] = (),
    *,
    n_normal_train: int,
    k_std: float = 3.0,
    refit_on_all: bool = False,
    criterion: str = "f1",
) -> Calibration:
    """Thresholds from detector outputs on held-out normal images and (optionally) defect images.

    Args:
        normal_outputs: Outputs on normal images that were NOT in the bank.
        defect_outputs: Outputs on defect images.
        n_normal_train: Normal images in the bank (recorded only).
        k_std: Standard deviations above the held-out mean for the normals-only rule.
        refit_on_all: Recorded flag: the final bank was rebuilt from all normals.
        criterion: With defect outputs, ``"f1"`` (maximise F1) or ``"youden"`` (maximise TPR - FPR;
            robust when held-out normals are few compared with defects).

    Returns:
        The calibration.
    """
    if not normal_outputs:
        raise ValueError("calibrate needs at least one held-out normal output")
    normal = np.array([o.score for o in normal_outputs], dtype=np.float64)
    normal_peaks = np.array([float(o.anomaly_map.max()) for o in normal_outputs], dtype=np.float64)
    base = Calibration(
        threshold=_normal_rule(normal, k_std),
        pixel_threshold=_normal_rule(normal_peaks, k_std),
        method="normal_stats",
        n_normal_train=n_normal_train,
        n_normal_heldout=len(normal),
        n_defect=len(defect_outputs),
        normal_mean=float(normal.mean()),
        normal_std=float(normal.std()),
        normal_p99=float(np.percentile(normal, 99)),
        normal_max=float(normal.max()),
        refit_on_all=refit_on_all,
    )
    if not defect_outputs:
        return base
    defect = np.array([o.score for o in defect_outputs], dtype=np.float64)
    defect_peaks = np.array([float(o.anomaly_map.max()) for o in defect_outputs], dtype=np.float64)
    labels = np.r_[np.zeros(len(normal), bool), np.ones(len(defect), bool)]
    if criterion not in ("f1", "youden"):
        raise ValueError(f"unknown calibration criterion {criterion!r}")
    best = best_f1_threshold if criterion == "f1" else best_youden_threshold
    scores = np.r_[normal, defect]
    threshold, _ = best(labels, scores)
    pixel_threshold, _ = best(labels, np.r_[normal_peaks, defect_peaks])
    f1 = f1_at_threshold(labels, scores, threshold)
    return replace(
        base,
        threshold=threshold,
        pixel_threshold=pixel_threshold,
        method=criterion,
        defect_min=float(defect.min()),
        f1=f1,
    )


@dataclass
class TrainResult:
    """A trained, calibrated product model and the held-out outputs its thresholds came from.

    Args:
        model: The final model (``calibration`` set).
        calibration: The thresholds.
        normal_outputs: Outputs of the split model on the held-out normal images.
        defect_outputs: Outputs of the split model on the defect images (same order as given).
        n_train: Normal images in the final bank.
    """

    model: PatchCore
    calibration: Calibration
    normal_outputs: list[AnomalyOutput]
    defect_outputs: list[AnomalyOutput]
    n_train: int


def train_and_score(
    normal_images: Sequence[Image.Image],
    defect_images: Sequence[Image.Image] = (),
    config: PatchCoreConfig | None = None,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    *,
    extractor: FeatureExtractor | None = None,
    models_dir: Path | None = None,
    device: str | torch.device | None = None,
    holdout_fraction: float = 0.2,
    k_std: float = 3.0,
    refit_on_all: bool = True,
    preprocessing_key: str = "",
    criterion: str = "f1",
) -> TrainResult:
    """Split, fit, score held-out images, calibrate and (by default) refit on all normal images.

    Args:
        normal_images: Defect-free images of the product (at least 2).
        defect_images: Known defect images of the product (optional; improve the threshold).
        config: PatchCore settings.
        progress: Called with (fraction 0..1, message).
        should_cancel: Polled throughout; True stops the job.
        extractor: Shared feature extractor (loaded from ``models_dir``/``device`` when omitted).
        models_dir: Model folder for torchvision backbones.
        device: Torch device.
        holdout_fraction: Share of normal images held out for calibration.
        k_std: Standard deviations above the held-out mean (normals-only rule).
        refit_on_all: Rebuild the final bank from all normal images (see module docstring).
        preprocessing_key: Stored with the model.
        criterion: Threshold rule with defect images, ``"f1"`` or ``"youden"`` (see ``calibrate``).

    Returns:
        The model (with ``calibration`` set), its calibration and the held-out outputs of the split model.

    Raises:
        ValueError: Fewer than 2 normal images.
        JobCancelled: ``should_cancel`` returned True.
    """
    config = config or PatchCoreConfig()
    train_idx, hold_idx = split_normals(len(normal_images), holdout_fraction, config.seed)
    if extractor is None:
        extractor = FeatureExtractor.load(config.backbone, models_dir, device)
    fit_share = 0.45 if refit_on_all else 0.8

    def stage(lo: float, hi: float) -> ProgressFn | None:
        if progress is None:
            return None
        report = progress
        return lambda f, msg: report(lo + (hi - lo) * f, msg)

    model = PatchCore.fit(
        [normal_images[i] for i in train_idx],
        config,
        extractor=extractor,
        progress=stage(0.0, fit_share),
        should_cancel=should_cancel,
        preprocessing_key=preprocessing_key,
    )
    if should_cancel is not None and should_cancel():
        raise JobCancelled("training cancelled")
    if progress is not None:
        progress(fit_share, "scoring held-out images")
    normal_out = model.detect_many([normal_images[i] for i in hold_idx])
    if should_cancel is not None and should_cancel():
        raise JobCancelled("training cancelled")
    defect_out = model.detect_many(list(defect_images))
    calibration = calibrate(
        normal_out,
        defect_out,
        n_normal_train=len(train_idx),
        k_std=k_std,
        refit_on_all=refit_on_all,
        criterion=criterion,
    )
    if refit_on_all:
        model = PatchCore.fit(
            normal_images,
            config,
            extractor=extractor,
            progress=stage(fit_share + 0.1, 1.0),
            should_cancel=should_cancel,
            preprocessing_key=preprocessing_key,
        )
    model.calibration = calibration
    if progress is not None:
        progress(1.0, "done")
    n_train = len(normal_images) if refit_on_all else len(train_idx)
    return TrainResult(model, calibration, normal_out, defect_out, n_train)
