"""Honest evaluation of a product's anomaly model: every verdict comes from a threshold other images chose.

The build scores images the memory bank never saw (held-out normals and the defect images). AUROC and the
curves need no threshold, so they use all of those scores. The confusion matrix, F1 and per-defect-type
detection rates must not be computed at the threshold those same images chose (that shows F1 = 1.000 while
a new defect is missed), so they come from stratified k-fold cross-validation of the threshold rule: each
fold's images are judged with the threshold the other folds give, and the out-of-fold verdicts are counted.

Threshold rules (``threshold_rule``):

* with defect images: the cut maximising Youden's J (TPR - FPR) between the held-out normal and defect
  scores;
* normal images only: ``max(mean + k * std, max)`` of the held-out normal scores. Whatever the shape of
  the score distribution, a new normal photo exchangeable with the n held-out ones exceeds the largest of
  them with probability at most 1 / (n + 1), so the false-alarm rate is bounded by 1 / (n + 1); the
  ``k``-sigma term only raises the cut for wide distributions. With no defect images nothing can be said
  about missed defects, and the report says so (``recall`` is None).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.ml.anomaly_eval import best_youden_threshold, confusion_matrix, image_auroc, pixel_auroc

# Curve points kept in the artifact (the deploy screen draws them as SVG).
_MAX_CURVE_POINTS = 101


def normal_only_threshold(normal_scores: Sequence[float] | np.ndarray, k_std: float = 3.0) -> float:
    """``max(mean + k_std * std, max)`` of held-out normal scores (false alarms <= 1 / (n + 1))."""
    values = np.asarray(normal_scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("the normal-only threshold needs at least one held-out normal score")
    return float(max(values.mean() + k_std * values.std(), values.max()))


def threshold_rule(labels: np.ndarray, scores: np.ndarray, k_std: float = 3.0) -> float:
    """Youden's J cut with both classes, the normal-only rule without defect scores."""
    if labels.any() and not labels.all():
        return best_youden_threshold(labels, scores)[0]
    return normal_only_threshold(scores[~labels], k_std)


def _thin(xs: np.ndarray, ys: np.ndarray) -> list[list[float]]:
    if xs.size > _MAX_CURVE_POINTS:
        keep = np.unique(np.linspace(0, xs.size - 1, _MAX_CURVE_POINTS).round().astype(int))
        xs, ys = xs[keep], ys[keep]
    return [[round(float(x), 4), round(float(y), 4)] for x, y in zip(xs, ys, strict=True)]


def roc_points(labels: np.ndarray, scores: np.ndarray) -> list[list[float]]:
    """ROC curve as [FPR, TPR] points from (0, 0) to (1, 1); empty with one class only."""
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return []
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.append(s[1:] < s[:-1], True)  # one point per distinct score
    tpr = np.r_[0.0, np.cumsum(y)[last] / n_pos]
    fpr = np.r_[0.0, np.cumsum(~y)[last] / n_neg]
    return _thin(fpr, tpr)


def pr_points(labels: np.ndarray, scores: np.ndarray) -> list[list[float]]:
    """Precision-recall curve as [recall, precision] points, strictest cut first; empty without defects."""
    n_pos = int(labels.sum())
    if n_pos == 0:
        return []
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.append(s[1:] < s[:-1], True)
    tp = np.cumsum(y)[last]
    flagged = (np.arange(1, y.size + 1))[last]
    return _thin(tp / n_pos, tp / flagged)


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per image, each class spread evenly over the folds (seeded shuffle)."""
    rng = np.random.default_rng(seed)
    folds = np.empty(labels.size, dtype=np.int64)
    for cls in (False, True):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        folds[idx] = np.arange(idx.size) % n_folds
    return folds


def out_of_fold_verdicts(
    labels: np.ndarray, scores: np.ndarray, *, n_folds: int = 5, seed: int = 0, k_std: float = 3.0
) -> tuple[np.ndarray, int]:
    """Each image's verdict at the threshold the other folds chose, and the number of folds used."""
    folds_n = max(2, min(n_folds, int((~labels).sum())))
    folds = stratified_folds(labels, folds_n, seed)
    flagged = np.zeros(labels.size, dtype=bool)
    for f in range(folds_n):
        test = folds == f
        if not test.any():
            continue
        train = ~test
        if not (~labels[train]).any():  # the rule needs held-out normals in the choosing folds
            train = np.ones_like(test)
        cut = threshold_rule(labels[train], scores[train], k_std)
        flagged[test] = scores[test] > cut
    return flagged, folds_n


def honest_evaluation(
    normal_scores: Sequence[float],
    defect_scores: Sequence[float],
    threshold: float,
    *,
    defect_types: Sequence[str | None] = (),
    normal_maps: Sequence[np.ndarray] = (),
    defect_maps: Sequence[np.ndarray] = (),
    defect_masks: Sequence[np.ndarray | None] = (),
    n_folds: int = 5,
    seed: int = 0,
    k_std: float = 3.0,
) -> dict[str, Any]:
    """The evaluation stored with a product model and shown on the deploy screen.

    Args:
        normal_scores: Scores of held-out normal images (not in the bank that scored them).
        defect_scores: Scores of defect images.
        threshold: The deployed threshold (chosen on all of these scores; reported, not evaluated).
        defect_types: Defect type name per defect image (None: untyped) for per-type detection rates.
        normal_maps: Anomaly maps of the normal images (for pixel AUROC).
        defect_maps: Anomaly maps of the defect images.
        defect_masks: Ground-truth mask per defect image, None where none was uploaded.
        n_folds: Cross-validation folds (fewer when there are fewer held-out normals).
        seed: Fold assignment seed.
        k_std: Sigma factor of the normal-only rule.

    Returns:
        JSON-ready dict: ``image_auroc``, ``pixel_auroc``, ``roc`` and ``pr`` points, the out-of-fold
        ``confusion``, ``f1``, ``precision``, ``recall``, ``false_alarm_rate``, ``per_type`` detection rates,
        ``protocol`` (how the verdicts were obtained), ``threshold_rule`` and ``false_alarm_bound`` (normals
        only), ``threshold`` and the counts. Also the old keys (``n_normal``, ``n_defect``).
    """
    normal = np.asarray(normal_scores, dtype=np.float64)
    defect = np.asarray(defect_scores, dtype=np.float64)
    labels = np.r_[np.zeros(normal.size, bool), np.ones(defect.size, bool)]
    scores = np.r_[normal, defect]
    has_defects = defect.size > 0
    flagged, folds_used = out_of_fold_verdicts(labels, scores, n_folds=n_folds, seed=seed, k_std=k_std)
    tp = int((flagged & labels).sum())
    fp = int((flagged & ~labels).sum())
    tn = int((~flagged & ~labels).sum())
    fn = int((~flagged & labels).sum())
    auroc = image_auroc(labels, scores) if has_defects and normal.size else float("nan")
    per_type: dict[str, dict[str, int | float]] = {}
    types = list(defect_types) or [None] * defect.size
    for name, hit in zip(types, flagged[normal.size :], strict=True):
        entry = per_type.setdefault(name or "", {"n": 0, "detected": 0, "rate": 0.0})
        entry["n"] = int(entry["n"]) + 1
        entry["detected"] = int(entry["detected"]) + int(hit)
    for entry in per_type.values():
        entry["rate"] = round(int(entry["detected"]) / int(entry["n"]), 4)
    pixel: float | None = None
    pairs = [(m, a) for m, a in zip(defect_masks, defect_maps, strict=False) if m is not None]
    if pairs:
        masks = [m for m, _ in pairs] + [np.zeros(a.shape, bool) for a in normal_maps]
        maps = [a for _, a in pairs] + list(normal_maps)
        value = pixel_auroc(masks, maps)
        pixel = float(value) if np.isfinite(value) else None
    deployed = confusion_matrix(labels, scores, threshold)
    return {
        "image_auroc": float(auroc) if np.isfinite(auroc) else None,
        "pixel_auroc": pixel,
        "n_masks": len(pairs),
        "roc": roc_points(labels, scores),
        "pr": pr_points(labels, scores),
        "protocol": "cross_validated",
        "n_folds": folds_used,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "f1": (2 * tp / (2 * tp + fp + fn) if tp else 0.0) if has_defects else None,
        "precision": (tp / (tp + fp) if tp + fp else 0.0) if has_defects else None,
        "recall": tp / (tp + fn) if has_defects else None,
        "false_alarm_rate": fp / (fp + tn) if fp + tn else None,
        "per_type": per_type,
        "threshold_rule": "youden" if has_defects else "normal_max",
        "false_alarm_bound": None if has_defects else round(1.0 / (normal.size + 1), 4),
        "threshold": float(threshold),
        "threshold_confusion_in_sample": {
            "tp": deployed.tp,
            "fp": deployed.fp,
            "tn": deployed.tn,
            "fn": deployed.fn,
        },
        "n_normal": int(normal.size),
        "n_defect": int(defect.size),
    }
