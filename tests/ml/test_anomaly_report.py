"""Honest evaluation: verdicts at thresholds other images chose, curves, per-type rates, normal-only bound."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from app.ml.anomaly_eval import best_youden_threshold, f1_at_threshold
from app.ml.anomaly_report import honest_evaluation, normal_only_threshold, pr_points, roc_points

NORMALS = [1.0 + 0.1 * i for i in range(10)]  # 1.0 .. 1.9
# One defect barely above every normal: the in-sample cut catches it, a cut chosen without it does not.
DEFECTS = [2.0, 3.0, 3.2, 3.4, 3.6, 3.8]


def test_in_sample_f1_is_perfect_but_cross_validated_f1_shows_the_missed_defect() -> None:
    labels = np.r_[np.zeros(10, bool), np.ones(6, bool)]
    scores = np.r_[NORMALS, DEFECTS]
    cut, _ = best_youden_threshold(labels, scores)
    assert f1_at_threshold(labels, scores, cut) == 1.0  # what the deploy screen used to show

    ev = honest_evaluation(NORMALS, DEFECTS, cut, defect_types=["open"] + ["short"] * 5)
    assert ev["protocol"] == "cross_validated"
    assert ev["n_folds"] == 5
    assert ev["confusion"]["fn"] == 1  # the 2.0 defect, judged by a cut the other folds chose
    assert ev["f1"] < 1.0
    assert ev["recall"] == pytest.approx(5 / 6)
    assert ev["per_type"]["open"] == {"n": 1, "detected": 0, "rate": 0.0}
    assert ev["per_type"]["short"]["rate"] == 1.0
    assert ev["image_auroc"] == 1.0  # ranking needs no threshold: every defect above every normal
    assert ev["threshold_confusion_in_sample"]["fn"] == 0
    assert ev["threshold_rule"] == "youden"
    assert ev["false_alarm_bound"] is None


def test_normal_only_products_state_a_false_alarm_bound_and_no_recall() -> None:
    normals = [*NORMALS, 3.0]  # one unusual normal photo
    ev = honest_evaluation(normals, [], normal_only_threshold(normals))
    assert ev["threshold_rule"] == "normal_max"
    assert ev["false_alarm_bound"] == pytest.approx(1 / 12, abs=1e-4)
    assert ev["recall"] is None
    assert ev["f1"] is None
    assert ev["image_auroc"] is None
    assert ev["roc"] == []
    assert ev["pr"] == []
    # Judged by the cut the other folds chose, the unusual photo is a false alarm: measured, not 0 by design.
    assert ev["false_alarm_rate"] == pytest.approx(1 / 11)
    assert ev["confusion"]["tp"] == 0
    assert ev["confusion"]["fn"] == 0


def test_normal_only_threshold_never_below_a_held_out_normal() -> None:
    values = [1.0] * 19 + [5.0]  # one outlier: mean + 3 sd is below it
    assert normal_only_threshold(values) == 5.0
    assert normal_only_threshold([1.0, 1.1, 0.9], k_std=3.0) > 1.1


def test_curves_run_from_corner_to_corner_and_are_thinned() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(300, bool), np.ones(300, bool)]
    scores = np.r_[rng.normal(0, 1, 300), rng.normal(1.5, 1, 300)]
    roc = roc_points(labels, scores)
    assert roc[0] == [0.0, 0.0]
    assert roc[-1] == [1.0, 1.0]
    assert len(roc) <= 101
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(roc))
    pr = pr_points(labels, scores)
    assert pr[-1] == [1.0, 0.5]  # flag everything: all defects found, half the flags right
    assert len(pr) <= 101
    ev = honest_evaluation(list(scores[:300]), list(scores[300:]), 0.75)
    assert 0.8 < ev["image_auroc"] < 0.9
    assert ev["roc"] == roc
