"""Turn similar-image hits into a verdict (product, defect type) or "unknown", and calibrate thresholds.

A class is the pair (product_id, defect_type_id); unlabelled images form the class (product, None).

Choice of class: a similarity-weighted k-NN vote where each hit weighs exp((score - top_score) / T)
(T = `VOTE_TEMPERATURE`). Pure "best score per class" lets one mislabelled near-duplicate decide; a plain
count vote lets a big class win with many mediocre matches. The exponential weight keeps the top hit
dominant unless several almost-as-close hits agree on another class.

Confidence: `score` is the best similarity among the chosen class's hits and `margin` is that minus the
best similarity of any other class in the hits (the runner-up). With only one class in the hits, nothing
contradicts it and margin = score. The verdict is unknown when score < min_score (nothing in the gallery
looks like the photo) or margin < min_margin (two classes are about equally close).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from app.ml.gallery import GalleryHit, VectorGallery

logger = logging.getLogger(__name__)

VOTE_TEMPERATURE = 0.05
# Used when the gallery is too small to calibrate: mild enough not to flag every query on a new product.
DEFAULT_MIN_SCORE = 0.5
DEFAULT_MIN_MARGIN = 0.02
MIN_CALIBRATION_IMAGES = 10
CALIBRATION_K = 10
CALIBRATION_MAX_QUERIES = 2000
# min_score lets this percentile of genuine nearest-same-class similarities through (5 % become unknown).
SCORE_PERCENTILE = 5.0
# min_margin never flags more than this percentile of correct leave-one-out verdicts as unknown.
CORRECT_MARGIN_PERCENTILE = 10.0
WRONG_MARGIN_PERCENTILE = 75.0


@dataclass(frozen=True)
class ClassVote:
    """Vote tally for one (product, defect type) class among the hits.

    Args:
        product_id: Product of the class.
        defect_type_id: Defect type, or None for unlabelled images.
        weight: Sum of the class's hit weights (see module docstring).
        best_score: Best similarity among the class's hits.
        count: Number of the class's hits.
    """

    product_id: int
    defect_type_id: int | None
    weight: float
    best_score: float
    count: int


@dataclass(frozen=True)
class Verdict:
    """Most likely (product, defect type) for a query photo, or unknown.

    Args:
        product_id: Chosen product (None when there were no hits).
        defect_type_id: Chosen defect type (None when unlabelled or no hits).
        score: Best similarity of the chosen class.
        margin: score minus the best similarity of the runner-up class (score if there is none).
        is_unknown: True when score < min_score or margin < min_margin, or there were no hits.
        votes: All classes, highest weight first (for "other candidates" in the UI).
    """

    product_id: int | None
    defect_type_id: int | None
    score: float
    margin: float
    is_unknown: bool
    votes: tuple[ClassVote, ...]


class Thresholds(NamedTuple):
    """Verdict thresholds; unpacks as (min_score, min_margin)."""

    min_score: float
    min_margin: float


def compute_verdict(hits: Sequence[GalleryHit], *, min_score: float, min_margin: float) -> Verdict:
    """Vote over the hits and decide whether the result is trustworthy.

    Args:
        hits: Search results (any order).
        min_score: Below this best similarity the verdict is unknown.
        min_margin: Below this gap to the runner-up class the verdict is unknown.

    Returns:
        The verdict; unknown with product/defect None when hits is empty.
    """
    if not hits:
        return Verdict(None, None, 0.0, 0.0, True, ())
    top = max(h.score for h in hits)
    tally: dict[tuple[int, int | None], list[float]] = {}
    for hit in hits:
        tally.setdefault((hit.product_id, hit.label), []).append(hit.score)
    votes = sorted(
        (
            ClassVote(
                product_id=pid,
                defect_type_id=label,
                weight=sum(math.exp((s - top) / VOTE_TEMPERATURE) for s in scores),
                best_score=max(scores),
                count=len(scores),
            )
            for (pid, label), scores in tally.items()
        ),
        # Ties broken by best score, then ids, so the verdict never depends on hit order.
        key=lambda v: (
            -v.weight,
            -v.best_score,
            v.product_id,
            -1 if v.defect_type_id is None else v.defect_type_id,
        ),
    )
    chosen = votes[0]
    runner_up = max((v.best_score for v in votes[1:]), default=None)
    margin = chosen.best_score if runner_up is None else chosen.best_score - runner_up
    unknown = chosen.best_score < min_score or margin < min_margin
    return Verdict(chosen.product_id, chosen.defect_type_id, chosen.best_score, margin, unknown, tuple(votes))


def calibrate_thresholds(gallery: VectorGallery, product_id: int | None = None) -> Thresholds:
    """Derive (min_score, min_margin) from the gallery by leave-one-out search.

    Each (sampled) gallery image is used as a query against the rest. min_score is the 5th percentile
    of its similarity to the nearest image of its own class, so about 5 % of photos of known defects
    would be called unknown for low similarity. min_margin is the 75th percentile of the margins of
    wrong leave-one-out verdicts (so most confusions become unknown), capped at the 10th percentile of
    correct verdicts' margins (so at most ~10 % of correct answers are lost); with fewer than three
    wrong verdicts it is the default. Galleries with fewer than 10 images or no class with two images
    get the defaults.

    Args:
        gallery: The gallery to calibrate on.
        product_id: Calibrate on this product's images only (as searched with that filter), or None.

    Returns:
        Thresholds(min_score, min_margin).
    """
    defaults = Thresholds(DEFAULT_MIN_SCORE, DEFAULT_MIN_MARGIN)
    rows = gallery.rows(product_id)
    if len(rows) < MIN_CALIBRATION_IMAGES:
        return defaults
    class_sizes: dict[tuple[int, int | None], int] = {}
    for r in rows:
        class_sizes[(r.product_id, r.label)] = class_sizes.get((r.product_id, r.label), 0) + 1
    queries = [r for r in rows if class_sizes[(r.product_id, r.label)] >= 2]
    if not queries:
        return defaults
    if len(queries) > CALIBRATION_MAX_QUERIES:
        rng = np.random.default_rng(0)
        picked = rng.choice(len(queries), CALIBRATION_MAX_QUERIES, replace=False)
        queries = [queries[i] for i in sorted(picked.tolist())]

    same_class_best: list[float] = []
    correct_margins: list[float] = []
    wrong_margins: list[float] = []
    vectors = gallery.get_vectors([q.image_id for q in queries])
    for query, found in zip(
        queries, gallery.search_batch(vectors, CALIBRATION_K + 1, product_id), strict=True
    ):
        truth = (query.product_id, query.label)
        others = [h for h in found if h.image_id != query.image_id][:CALIBRATION_K]
        same = [h.score for h in others if (h.product_id, h.label) == truth]
        if same:
            same_class_best.append(max(same))
        verdict = compute_verdict(others, min_score=-math.inf, min_margin=-math.inf)
        if (verdict.product_id, verdict.defect_type_id) == truth:
            correct_margins.append(verdict.margin)
        else:
            wrong_margins.append(verdict.margin)
    if not same_class_best:
        return defaults
    min_score = float(np.percentile(same_class_best, SCORE_PERCENTILE))
    min_margin = DEFAULT_MIN_MARGIN
    if len(wrong_margins) >= 3:
        min_margin = float(np.percentile(wrong_margins, WRONG_MARGIN_PERCENTILE))
    if correct_margins:
        min_margin = min(min_margin, float(np.percentile(correct_margins, CORRECT_MARGIN_PERCENTILE)))
    min_margin = max(0.0, min_margin)
    logger.info(
        "calibrated thresholds on %d queries (product %s): min_score=%.3f min_margin=%.3f (%d wrong LOO)",
        len(queries),
        product_id,
        min_score,
        min_margin,
        len(wrong_margins),
    )
    return Thresholds(min_score, min_margin)
