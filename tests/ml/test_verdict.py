"""Verdict from search hits (vote, score, margin, unknown) and threshold calibration on a gallery."""

from __future__ import annotations

import numpy as np
import pytest

from app.ml.gallery import Gallery, GalleryHit
from app.ml.verdict import DEFAULT_MIN_MARGIN, DEFAULT_MIN_SCORE, calibrate_thresholds, compute_verdict

DIM = 64


def _hit(image_id: int, score: float, label: int | None, product_id: int = 1) -> GalleryHit:
    return GalleryHit(image_id=image_id, score=score, product_id=product_id, label=label)


def test_clear_match_gives_its_defect_type() -> None:
    hits = [_hit(1, 0.93, 5), _hit(2, 0.90, 5), _hit(3, 0.71, 8)]
    verdict = compute_verdict(hits, min_score=0.6, min_margin=0.05)
    assert (verdict.product_id, verdict.defect_type_id) == (1, 5)
    assert verdict.score == pytest.approx(0.93)
    assert verdict.margin == pytest.approx(0.93 - 0.71)
    assert not verdict.is_unknown
    assert [(v.defect_type_id, v.count) for v in verdict.votes] == [(5, 2), (8, 1)]


def test_low_similarity_is_unknown() -> None:
    verdict = compute_verdict([_hit(1, 0.41, 5), _hit(2, 0.20, 8)], min_score=0.6, min_margin=0.05)
    assert verdict.defect_type_id == 5
    assert verdict.is_unknown


def test_two_equally_close_defect_types_are_unknown() -> None:
    verdict = compute_verdict([_hit(1, 0.90, 5), _hit(2, 0.89, 8)], min_score=0.6, min_margin=0.05)
    assert verdict.margin == pytest.approx(0.01)
    assert verdict.is_unknown


def test_several_close_neighbours_outvote_one_slightly_closer_image() -> None:
    hits = [_hit(1, 0.91, 5), _hit(2, 0.90, 8), _hit(3, 0.895, 8), _hit(4, 0.89, 8)]
    verdict = compute_verdict(hits, min_score=0.6, min_margin=0.0)
    assert verdict.defect_type_id == 8
    assert verdict.score == pytest.approx(0.90)
    assert verdict.margin < 0  # a closer image of another type contradicts it
    assert verdict.is_unknown


def test_single_class_margin_is_its_score_and_products_are_distinct_classes() -> None:
    verdict = compute_verdict([_hit(1, 0.8, 5), _hit(2, 0.7, 5)], min_score=0.6, min_margin=0.05)
    assert verdict.margin == pytest.approx(0.8)
    assert not verdict.is_unknown
    mixed = compute_verdict(
        [_hit(1, 0.8, 5, product_id=1), _hit(2, 0.79, 5, product_id=2)], min_score=0, min_margin=0.05
    )
    assert mixed.is_unknown
    assert len(mixed.votes) == 2


def test_no_hits_is_unknown() -> None:
    verdict = compute_verdict([], min_score=0.5, min_margin=0.05)
    assert verdict.is_unknown
    assert verdict.product_id is None
    assert verdict.defect_type_id is None


def _clustered_gallery(
    per_class: int = 12, n_classes: int = 4, spread: float = 0.25
) -> tuple[Gallery, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((n_classes, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    gallery = Gallery.empty("defect", "test-embedder", DIM)
    image_id = 0
    for label, centre in enumerate(centres):
        noise = spread * rng.standard_normal((per_class, DIM)).astype(np.float32) / np.sqrt(DIM)
        ids = list(range(image_id, image_id + per_class))
        gallery.add(ids, centre + noise, [1] * per_class, [label] * per_class)
        image_id += per_class
    return gallery, centres


def test_calibration_separates_known_defects_from_unseen_ones() -> None:
    gallery, centres = _clustered_gallery()
    min_score, min_margin = calibrate_thresholds(gallery, product_id=1)
    assert 0.5 < min_score < 1.0
    assert min_margin >= 0.0

    known = compute_verdict(
        gallery.search(centres[2], k=10, product_id=1), min_score=min_score, min_margin=min_margin
    )
    assert (known.defect_type_id, known.is_unknown) == (2, False)

    unseen = np.random.default_rng(42).standard_normal(DIM).astype(np.float32)
    novel = compute_verdict(
        gallery.search(unseen, k=10, product_id=1), min_score=min_score, min_margin=min_margin
    )
    assert novel.is_unknown


def test_calibration_falls_back_to_defaults_on_tiny_galleries() -> None:
    gallery, _ = _clustered_gallery(per_class=2, n_classes=2)
    assert calibrate_thresholds(gallery, product_id=1) == (DEFAULT_MIN_SCORE, DEFAULT_MIN_MARGIN)
    assert calibrate_thresholds(gallery, product_id=99) == (DEFAULT_MIN_SCORE, DEFAULT_MIN_MARGIN)
