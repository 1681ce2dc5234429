"""The fusion rules a quality engineer expects, on plain evidence (no I/O)."""

from __future__ import annotations

from app.ml.outcome import AnomalyEvidence, IdentificationEvidence, WorkerChoice, fuse_outcome

SURE_SCRATCH = IdentificationEvidence(
    product_id=1, defect_type_id=7, score=0.93, margin=0.2, is_unknown=False
)
UNSURE = IdentificationEvidence(product_id=1, defect_type_id=7, score=0.61, margin=0.005, is_unknown=True)


def test_normal_photo_names_no_defect_even_when_search_found_one() -> None:
    outcome = fuse_outcome(
        anomaly=AnomalyEvidence(product_id=1, score=0.8, threshold=1.0), identification=SURE_SCRATCH
    )
    assert outcome.label == "normal"
    assert outcome.defect_type_id is None
    assert outcome.product_id == 1
    assert outcome.basis["rule"] == "anomaly_normal"


def test_anomalous_and_identified_is_that_defect() -> None:
    outcome = fuse_outcome(
        anomaly=AnomalyEvidence(product_id=1, score=1.5, threshold=1.0), identification=SURE_SCRATCH
    )
    assert (outcome.label, outcome.defect_type_id, outcome.source) == ("defect", 7, "auto")
    assert 0.0 < outcome.confidence <= 1.0


def test_anomalous_but_unsure_or_other_product_is_unknown() -> None:
    anomalous = AnomalyEvidence(product_id=1, score=1.5, threshold=1.0)
    assert fuse_outcome(anomaly=anomalous, identification=UNSURE).label == "unknown"
    other = IdentificationEvidence(product_id=2, defect_type_id=9, score=0.9, margin=0.3, is_unknown=False)
    unknown = fuse_outcome(anomaly=anomalous, identification=other)
    assert (unknown.label, unknown.product_id, unknown.defect_type_id) == ("unknown", 1, None)


def test_without_anomaly_model_identification_decides() -> None:
    assert fuse_outcome(anomaly=None, identification=SURE_SCRATCH).label == "defect"
    assert fuse_outcome(anomaly=None, identification=UNSURE).label == "unknown"
    assert fuse_outcome(anomaly=None, identification=None).label == "pending"


def test_score_equal_to_threshold_is_normal() -> None:
    # API.md: is_anomaly is score > threshold.
    assert fuse_outcome(anomaly=AnomalyEvidence(1, 1.0, 1.0), identification=None).label == "normal"


def test_worker_choice_overrides_a_normal_call() -> None:
    choice = WorkerChoice(product_id=1, defect_type_id=3, user_id=5, at="2026-12-01T10:00:00+00:00")
    outcome = fuse_outcome(
        anomaly=AnomalyEvidence(product_id=1, score=0.2, threshold=1.0),
        identification=SURE_SCRATCH,
        worker=choice,
    )
    assert (outcome.label, outcome.defect_type_id, outcome.source) == ("defect", 3, "worker")
    assert outcome.basis["worker"]["user_id"] == 5


def test_confidence_grows_with_distance_from_threshold() -> None:
    near = fuse_outcome(anomaly=AnomalyEvidence(1, 0.99, 1.0), identification=None).confidence
    far = fuse_outcome(anomaly=AnomalyEvidence(1, 0.5, 1.0), identification=None).confidence
    assert near < far
    calibrated = fuse_outcome(anomaly=AnomalyEvidence(1, 0.5, 1.0, confidence=0.7), identification=None)
    assert calibrated.confidence == 0.7
