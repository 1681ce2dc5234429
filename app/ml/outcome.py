"""Fuse the inspection steps into the product's one answer: normal, this defect, unknown, or pending.

The rules are the ones a quality engineer expects (issue 12, API.md "Outcome"):
- the worker's explicit choice (another TOP-1, a registration) overrides everything (`source="worker"`);
- when the product's anomaly model ran it decides normal vs. not normal: a score at or below the threshold is
  `normal` and names no defect type, whatever the similar-image search found;
- an anomalous photo takes the defect type from identification, but only when identification is sure and
  agrees on the product; otherwise it is `unknown` (possibly a defect nobody registered yet);
- without an anomaly model (a product with no normal images yet) identification alone decides;
- nothing ran yet: `pending`.

This module holds no I/O: the inspection service gathers the evidence and stores the result, the benchmarks
call the same function, so what is measured is what the worker sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

OutcomeLabel = Literal["normal", "defect", "unknown", "pending"]
OutcomeSource = Literal["auto", "worker"]

# Scale of the logistic that turns "how far from the threshold" into a confidence when the anomaly model has
# no calibrated one: a score 25 % of the threshold away from it reads as ~0.92.
_ANOMALY_LOGISTIC_SCALE = 0.10


@dataclass(frozen=True)
class AnomalyEvidence:
    """What the product's anomaly model said about the photo.

    Args:
        product_id: The product whose model scored the photo.
        score: Anomaly score (higher = more anomalous).
        threshold: The model's threshold; anomalous when score > threshold.
        confidence: Calibrated probability that the normal/anomalous call is right, if the model has one.
    """

    product_id: int
    score: float
    threshold: float
    confidence: float | None = None

    @property
    def is_anomaly(self) -> bool:
        """True when the score is above the threshold (API.md: `is_anomaly` is `score > threshold`)."""
        return self.score > self.threshold


@dataclass(frozen=True)
class IdentificationEvidence:
    """What defect identification (the similar-image verdict) said.

    Args:
        product_id: Product of the best class, or None when nothing was found.
        defect_type_id: Defect type of the best class, or None (no hits, or unlabelled images).
        score: Similarity of the best class.
        margin: Gap to the runner-up class.
        is_unknown: True when identification is unsure (below its calibrated thresholds).
        confidence: Calibrated probability that the named defect type is right, if available.
    """

    product_id: int | None
    defect_type_id: int | None
    score: float
    margin: float
    is_unknown: bool
    confidence: float | None = None


@dataclass(frozen=True)
class WorkerChoice:
    """A worker's explicit answer (picked another match as TOP-1, or registered the photo as a type).

    Args:
        product_id: Product the worker chose.
        defect_type_id: Defect type the worker chose.
        user_id: Who chose.
        at: When (ISO 8601).
        action: `choose` or `register`.
    """

    product_id: int
    defect_type_id: int | None
    user_id: int | None
    at: str
    action: str = "choose"


@dataclass(frozen=True)
class Outcome:
    """The fused answer. `basis` says what decided it, for people and for the record."""

    label: OutcomeLabel
    product_id: int | None
    defect_type_id: int | None
    confidence: float
    source: OutcomeSource
    basis: dict[str, Any] = field(default_factory=dict)


def anomaly_confidence(evidence: AnomalyEvidence) -> float:
    """Calibrated confidence if the model has one, else a logistic of the distance to the threshold."""
    if evidence.confidence is not None:
        return _clamp(evidence.confidence)
    scale = max(abs(evidence.threshold), 1e-6) * _ANOMALY_LOGISTIC_SCALE
    distance = abs(evidence.score - evidence.threshold) / scale
    return _clamp(1.0 / (1.0 + math.exp(-distance)))


def identification_confidence(evidence: IdentificationEvidence) -> float:
    """Calibrated confidence when available, else the similarity itself (already 0-1 for cosine scores)."""
    if evidence.confidence is not None:
        return _clamp(evidence.confidence)
    return _clamp(evidence.score)


def fuse_outcome(
    *,
    anomaly: AnomalyEvidence | None,
    identification: IdentificationEvidence | None,
    worker: WorkerChoice | None = None,
) -> Outcome:
    """Apply the rules in the module docstring.

    Args:
        anomaly: The anomaly step's evidence, or None when it did not run (or the product has no model).
        identification: The identification evidence, or None when search did not run.
        worker: The worker's explicit choice, if any.

    Returns:
        The outcome with its basis.
    """
    basis: dict[str, Any] = {}
    if anomaly is not None:
        basis["anomaly"] = {
            "product_id": anomaly.product_id,
            "score": anomaly.score,
            "threshold": anomaly.threshold,
            "is_anomaly": anomaly.is_anomaly,
        }
    if identification is not None:
        basis["identification"] = {
            "product_id": identification.product_id,
            "defect_type_id": identification.defect_type_id,
            "score": identification.score,
            "margin": identification.margin,
            "is_unknown": identification.is_unknown,
        }
    if worker is not None:
        basis["worker"] = {"user_id": worker.user_id, "at": worker.at, "action": worker.action}
        return Outcome("defect", worker.product_id, worker.defect_type_id, 1.0, "worker", basis)

    if anomaly is not None:
        a_conf = anomaly_confidence(anomaly)
        if not anomaly.is_anomaly:
            basis["rule"] = "anomaly_normal"
            return Outcome("normal", anomaly.product_id, None, a_conf, "auto", basis)
        if _identified(identification) and identification is not None:
            if identification.product_id == anomaly.product_id:
                basis["rule"] = "anomaly_identified"
                conf = a_conf * identification_confidence(identification)
                return Outcome(
                    "defect", anomaly.product_id, identification.defect_type_id, _clamp(conf), "auto", basis
                )
            basis["rule"] = "anomaly_other_product"
        else:
            basis["rule"] = "anomaly_unidentified"
        # Anomalous but no trustworthy defect type: confident that it is *not* a known, identified defect.
        unsure = 1.0 - identification_confidence(identification) if identification is not None else 1.0
        return Outcome("unknown", anomaly.product_id, None, _clamp(a_conf * max(unsure, 0.5)), "auto", basis)

    if identification is not None:
        if _identified(identification):
            basis["rule"] = "identification_only"
            return Outcome(
                "defect",
                identification.product_id,
                identification.defect_type_id,
                identification_confidence(identification),
                "auto",
                basis,
            )
        basis["rule"] = "identification_unknown"
        return Outcome(
            "unknown",
            identification.product_id,
            None,
            _clamp(1.0 - identification_confidence(identification)),
            "auto",
            basis,
        )
    basis["rule"] = "pending"
    return Outcome("pending", None, None, 0.0, "auto", basis)


def _identified(evidence: IdentificationEvidence | None) -> bool:
    return (
        evidence is not None
        and not evidence.is_unknown
        and evidence.product_id is not None
        and evidence.defect_type_id is not None
    )


def _clamp(value: float) -> float:
    return float(min(1.0, max(0.0, value)))
