"""Threshold calibration from held-out normal images (and defects) on synthetic textures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.ml.anomaly_calibration import calibrate, split_normals, train_and_score
from app.ml.errors import JobCancelled
from app.ml.patchcore import AnomalyOutput, FeatureExtractor, PatchCore, PatchCoreConfig
from tests.ml.synthetic_textures import Sample, make_dataset

CONFIG = PatchCoreConfig(image_size=128, coreset_ratio=0.1, batch_size=4)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    torch.set_num_threads(1)
    return FeatureExtractor.load(device="cpu")


@pytest.fixture(scope="module")
def data() -> tuple[list[Sample], list[Sample]]:
    return make_dataset(seed=11, n_normal=10, n_defect=4)


def _out(score: float, peak: float) -> AnomalyOutput:
    m = np.zeros((8, 8), np.float32)
    m[0, 0] = peak
    return AnomalyOutput(score, m)


def test_split_holds_out_disjoint_images() -> None:
    train, hold = split_normals(10, 0.2, seed=0)
    assert len(hold) == 2
    assert len(train) == 8
    assert not set(train) & set(hold)
    assert split_normals(2, 0.2, 0) == ([1], [0]) or split_normals(2, 0.2, 0) == ([0], [1])
    with pytest.raises(ValueError, match="at least 2"):
        split_normals(1, 0.2, 0)


def test_normal_only_threshold_sits_above_every_held_out_normal() -> None:
    normals = [_out(s, s + 1) for s in (10.0, 11.0, 12.0, 10.5)]
    cal = calibrate(normals, n_normal_train=8)
    assert cal.method == "normal_stats"
    scores = np.array([10.0, 11.0, 12.0, 10.5])
    assert cal.threshold == pytest.approx(scores.mean() + 3 * scores.std())
    assert cal.threshold >= 12.0
    assert cal.pixel_threshold >= 13.0
    assert (cal.n_normal_heldout, cal.n_defect, cal.f1) == (4, 0, None)


def test_defects_move_threshold_to_best_f1_cut() -> None:
    normals = [_out(s, s) for s in (10.0, 11.0, 12.0)]
    defects = [_out(s, s - 2) for s in (20.0, 30.0)]
    cal = calibrate(normals, defects, n_normal_train=5)
    assert cal.method == "f1"
    assert cal.f1 == 1.0
    assert cal.threshold == pytest.approx(16.0)  # middle of the gap 12 .. 20
    assert cal.pixel_threshold == pytest.approx(15.0)  # middle of 12 .. 18
    assert cal.defect_min == 20.0


def test_train_and_score_flags_new_defects(
    extractor: FeatureExtractor, data: tuple[list[Sample], list[Sample]], tmp_path: Path
) -> None:
    normals, defects = data
    fresh_normals, fresh_defects = make_dataset(seed=12, n_normal=3, n_defect=2)
    seen: list[float] = []
    result = train_and_score(
        [s.image for s in normals],
        [s.image for s in defects],
        CONFIG,
        progress=lambda f, _: seen.append(f),
        extractor=extractor,
    )
    model, cal = result.model, result.calibration
    assert model.calibration == cal
    assert (cal.method, cal.n_normal_train, cal.n_normal_heldout, cal.n_defect) == ("f1", 8, 2, 4)
    assert cal.f1 == 1.0
    assert cal.refit_on_all
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    for s in fresh_normals:
        assert model.is_anomalous(model.detect(s.image).score) is False
    for s in fresh_defects:
        assert model.is_anomalous(model.detect(s.image).score) is True
    model.save(tmp_path / "p")
    assert PatchCore.load(tmp_path / "p", extractor=extractor).calibration == cal


def test_train_and_score_normals_only_without_refit(
    extractor: FeatureExtractor, data: tuple[list[Sample], list[Sample]]
) -> None:
    normals, _ = data
    result = train_and_score(
        [s.image for s in normals[:5]], config=CONFIG, extractor=extractor, refit_on_all=False
    )
    model, cal = result.model, result.calibration
    assert cal.method == "normal_stats"
    assert not cal.refit_on_all
    assert (cal.n_normal_train, cal.n_normal_heldout) == (4, 1)
    assert model.bank_size == round(4 * 16 * 16 * 0.1 + 0.5)


def test_train_and_score_can_be_cancelled(
    extractor: FeatureExtractor, data: tuple[list[Sample], list[Sample]]
) -> None:
    with pytest.raises(JobCancelled):
        train_and_score(
            [s.image for s in data[0][:4]], config=CONFIG, extractor=extractor, should_cancel=lambda: True
        )
