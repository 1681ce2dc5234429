"""Anomaly-detection metrics in numpy: image/pixel ROC AUC, F1, confusion matrix, best-F1 threshold.

No scikit-learn dependency; AUROC uses the rank-sum (Mann-Whitney U) identity with average ranks for ties,
which equals the trapezoidal area under the ROC curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.stats import rankdata


@dataclass(frozen=True)
class ConfusionMatrix:
    """Binary confusion counts with anomalous = positive.

    Args:
        tp: Anomalous images flagged anomalous.
        fp: Normal images flagged anomalous.
        tn: Normal images passed.
        fn: Anomalous images passed.
    """

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp), 0 when nothing was flagged."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """tp / (tp + fn), 0 without positives."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def accuracy(self) -> float:
        """(tp + tn) / total."""
        total = self.tp + self.fp + self.tn + self.fn
        return (self.tp + self.tn) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Counts plus derived rates."""
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


def _as_labels(labels: Sequence[bool] | np.ndarray) -> np.ndarray:
    return np.asarray(labels).astype(bool).ravel()


def roc_auc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (positives = True); NaN when only one class is present."""
    y = _as_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def image_auroc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Image-level AUROC: ``labels[i]`` is True for a defect image."""
    return roc_auc(labels, scores)


def paired_auroc_z(
    labels: Sequence[bool] | np.ndarray,
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
) -> float:
    """z statistic of AUROC(b) - AUROC(a) on the same images (DeLong, DeLong & Clarke-Pearson 1988).

    The two AUROCs are correlated (same images); DeLong's variance of their difference accounts for it.
    Positive when b ranks defects above normals better; +-inf when the difference has no variance (e.g.
    every pair ordered alike by both but for ties), 0.0 when the AUROCs are equal; NaN with fewer than two
    images of a class.
    """
    y = _as_labels(labels)
    a = np.asarray(scores_a, dtype=np.float64).ravel()
    b = np.asarray(scores_b, dtype=np.float64).ravel()
    if not y.shape == a.shape == b.shape:
        raise ValueError("labels and both score lists must have the same length")
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return float("nan")

    def components(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, neg = s[y][:, None], s[~y][None, :]
        psi = (pos > neg) + 0.5 * (pos == neg)  # (m, n): 1, 1/2 or 0 per defect-normal pair
        return psi.mean(axis=1), psi.mean(axis=0)

    v10_a, v01_a = components(a)
    v10_b, v01_b = components(b)
    diff = float(v10_b.mean() - v10_a.mean())
    var = float(np.var(v10_b - v10_a, ddof=1) / m + np.var(v01_b - v01_a, ddof=1) / n)
    if var <= 1e-15:
        return 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def pixel_auroc(masks: Sequence[np.ndarray], anomaly_maps: Sequence[np.ndarray]) -> float:
    """Pixel-level AUROC over all pixels of all images (ground-truth masks must match the maps' shapes)."""
    if len(masks) != len(anomaly_maps):
        raise ValueError("masks and anomaly_maps differ in length")
    for m, a in zip(masks, anomaly_maps, strict=True):
        if m.shape != a.shape:
            raise ValueError(f"mask {m.shape} and map {a.shape} differ")
    y = np.concatenate([np.asarray(m).astype(bool).ravel() for m in masks])
    s = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in anomaly_maps])
    return roc_auc(y, s)


def confusion_matrix(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> ConfusionMatrix:
    """Confusion counts when ``score > threshold`` is flagged anomalous."""
    y = _as_labels(labels)
    pred = np.asarray(scores, dtype=np.float64).ravel() > threshold
    return ConfusionMatrix(
        tp=int((pred & y).sum()),
        fp=int((pred & ~y).sum()),
        tn=int((~pred & ~y).sum()),
        fn=int((~pred & y).sum()),
    )


def f1_at_threshold(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> float:
    """F1 of ``score > threshold`` against ``labels``."""
    return confusion_matrix(labels, scores, threshold).f1


def best_f1_threshold(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """Threshold maximising F1 of ``score > threshold``, and that F1.

    Candidates are midpoints between consecutive distinct scores (plus one below the lowest score).
    Among equally good cuts the one with the widest gap between its neighbouring scores wins, which puts
    the threshold in the middle of the clearest separation.
    """
    y = _as_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size == 0 or not y.any():
        raise ValueError("best_f1_threshold needs at least one positive label")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Cut after position i (flag the i+1 highest) only where the next score differs.
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    fn = int(y.sum()) - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    nxt = np.append(s_sorted[1:], s_sorted[-1] - max(1.0, abs(s_sorted[-1])) * 0.1)
    valid = np.append(s_sorted[1:] < s_sorted[:-1], True)
    gap = s_sorted - nxt
    key = np.where(valid, f1, -1.0)
    best = float(key.max())
    candidates = np.flatnonzero(np.isclose(key, best))
    i = int(candidates[np.argmax(gap[candidates])])
    return float((s_sorted[i] + nxt[i]) / 2.0), best


def best_youden_threshold(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """Threshold maximising Youden's J (TPR - FPR) of ``score > threshold``, and that J.

    Unlike F1, J weighs the normal class as much as the defect class whatever their counts, so a
    calibration set with few held-out normals and many defects cannot pull the threshold below the
    normal scores. Candidates and tie-breaking as in ``best_f1_threshold``.
    """
    y = _as_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not y.any() or y.all():
        raise ValueError("best_youden_threshold needs both positive and negative labels")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    j = np.cumsum(y_sorted) / y.sum() - np.cumsum(~y_sorted) / (~y).sum()
    nxt = np.append(s_sorted[1:], s_sorted[-1] - max(1.0, abs(s_sorted[-1])) * 0.1)
    valid = np.append(s_sorted[1:] < s_sorted[:-1], True)
    # Also allow flagging nothing (J = 0) with a cut just above the highest score.
    key = np.where(valid, j, -2.0)
    best = float(key.max())
    if best <= 0.0:
        return float(s_sorted[0] + max(1.0, abs(s_sorted[0])) * 0.05), 0.0
    gap = s_sorted - nxt
    candidates = np.flatnonzero(np.isclose(key, best))
    i = int(candidates[np.argmax(gap[candidates])])
    return float((s_sorted[i] + nxt[i]) / 2.0), best


@dataclass(frozen=True)
class EvalReport:
    """Evaluation summary of one model on a labelled set.

    Args:
        image_auroc: Image-level AUROC (NaN with one class only).
        pixel_auroc: Pixel-level AUROC, or None without masks.
        threshold: Decision threshold used for the counts.
        confusion: Confusion counts at ``threshold``.
    """

    image_auroc: float
    pixel_auroc: float | None
    threshold: float
    confusion: ConfusionMatrix

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "image_auroc": self.image_auroc,
            "pixel_auroc": self.pixel_auroc,
            "threshold": self.threshold,
            "confusion": self.confusion.to_dict(),
        }


def evaluate(
    labels: Sequence[bool] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    masks: Sequence[np.ndarray] | None = None,
    anomaly_maps: Sequence[np.ndarray] | None = None,
) -> EvalReport:
    """Image AUROC, optional pixel AUROC and the confusion matrix at ``threshold``."""
    pix = None
    if masks is not None and anomaly_maps is not None:
        pix = pixel_auroc(masks, anomaly_maps)
    return EvalReport(
        image_auroc(labels, scores), pix, threshold, confusion_matrix(labels, scores, threshold)
    )


def _finite_or_none(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def evaluation_summary(
    normal_scores: Sequence[float],
    defect_scores: Sequence[float],
    threshold: float,
    *,
    normal_maps: Sequence[np.ndarray] = (),
    defect_maps: Sequence[np.ndarray] = (),
    defect_masks: Sequence[np.ndarray | None] = (),
) -> dict[str, Any]:
    """The JSON summary stored with a product model and printed by ``defectlens evaluate anomaly``.

    Keys: ``image_auroc`` (None with one class only), ``pixel_auroc`` (None unless some defect image has a
    ground-truth mask; normal images count as all-normal pixels), ``f1``, ``threshold``,
    ``confusion`` {tp, fp, tn, fn}, ``n_normal``, ``n_defect``. Masks must match their maps' shapes.
    """
    labels = np.r_[np.zeros(len(normal_scores), bool), np.ones(len(defect_scores), bool)]
    scores = np.r_[np.asarray(normal_scores, np.float64), np.asarray(defect_scores, np.float64)]
    confusion = confusion_matrix(labels, scores, threshold)
    pixel: float | None = None
    pairs = [(m, a) for m, a in zip(defect_masks, defect_maps, strict=False) if m is not None]
    if pairs:
        masks = [m for m, _ in pairs] + [np.zeros(a.shape, bool) for a in normal_maps]
        maps = [a for _, a in pairs] + list(normal_maps)
        pixel = _finite_or_none(pixel_auroc(masks, maps))
    return {
        "image_auroc": _finite_or_none(image_auroc(labels, scores)) if labels.size else None,
        "pixel_auroc": pixel,
        "f1": float(confusion.f1) if len(defect_scores) else None,
        "threshold": float(threshold),
        "confusion": {"tp": confusion.tp, "fp": confusion.fp, "tn": confusion.tn, "fn": confusion.fn},
        "n_normal": len(normal_scores),
        "n_defect": len(defect_scores),
    }


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A 0/255 mask file as a bool array of `shape` (H, W), resized with nearest neighbour.

    Args:
        path: The mask image file.
        shape: (height, width) of the anomaly map it is compared with.

    Returns:
        True where the mask marks a defect.
    """
    with Image.open(path) as opened:
        mask = opened.convert("L")
        if mask.size != (shape[1], shape[0]):
            mask = mask.resize((shape[1], shape[0]), Image.Resampling.NEAREST)
        return np.asarray(mask) > 127
