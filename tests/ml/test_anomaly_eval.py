"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from app.ml.anomaly_eval import (
    best_f1_threshold,
    confusion_matrix,
    evaluate,
    f1_at_threshold,
    image_auroc,
    pixel_auroc,
    roc_auc,
)


def test_roc_auc_known_values() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    # 3 of 4 positive/negative pairs ordered correctly.
    assert roc_auc([0, 1, 0, 1], [0.1, 0.3, 0.35, 0.8]) == pytest.approx(0.75)
    assert np.isnan(image_auroc([1, 1], [0.2, 0.3]))


def test_roc_auc_matches_trapezoid_on_random_data() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    s = np.round(rng.normal(size=400) + y, 1)  # rounding creates ties
    order = np.argsort(-s)
    thresholds = np.unique(s)[::-1]
    tpr = [0.0] + [float(((s >= t) & y).sum() / y.sum()) for t in thresholds]
    fpr = [0.0] + [float(((s >= t) & ~y).sum() / (~y).sum()) for t in thresholds]
    assert order.size == 400
    assert roc_auc(y, s) == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-9)


def test_pixel_auroc_over_masks() -> None:
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    amap = mask.astype(np.float32) + 0.1
    assert pixel_auroc([mask, np.zeros((4, 4), bool)], [amap, np.full((4, 4), 0.1, np.float32)]) == 1.0
    with pytest.raises(ValueError, match="differ"):
        pixel_auroc([mask], [np.zeros((3, 3), np.float32)])


def test_confusion_and_f1() -> None:
    cm = confusion_matrix([0, 0, 1, 1, 1], [0.1, 0.6, 0.7, 0.4, 0.9], threshold=0.5)
    assert (cm.tp, cm.fp, cm.tn, cm.fn) == (2, 1, 1, 1)
    assert cm.precision == pytest.approx(2 / 3)
    assert cm.recall == pytest.approx(2 / 3)
    assert f1_at_threshold([0, 0, 1, 1, 1], [0.1, 0.6, 0.7, 0.4, 0.9], 0.5) == pytest.approx(2 / 3)
    report = evaluate([0, 1], [0.2, 0.9], 0.5)
    assert report.image_auroc == 1.0
    assert report.confusion.f1 == 1.0
    assert report.pixel_auroc is None


def test_best_f1_threshold() -> None:
    t, f1 = best_f1_threshold([0, 0, 0, 1, 1], [1.0, 2.0, 3.0, 7.0, 9.0])
    assert (t, f1) == (5.0, 1.0)
    t, f1 = best_f1_threshold([0, 1, 0, 1], [1.0, 2.0, 3.0, 4.0])
    assert f1 == pytest.approx(f1_at_threshold([0, 1, 0, 1], [1.0, 2.0, 3.0, 4.0], t))
    assert f1 == pytest.approx(0.8)  # flag everything above 1.5: tp=2, fp=1
