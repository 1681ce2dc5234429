"""How the views' anomaly answers combine: any / all / majority, and which view decided."""

from __future__ import annotations

import pytest

from app.inspection.views import ViewAnswer, combine, parse_labels


def _answer(view: str, score: float, threshold: float = 1.0) -> ViewAnswer:
    region = {"x": 1, "y": 2, "width": 3, "height": 4, "score": score}
    return ViewAnswer(view, score, threshold, score > threshold, [region] if score > threshold else [])


@pytest.mark.parametrize(
    ("rule", "scores", "is_anomaly", "deciding"),
    [
        ("any", {"top": 1.5, "side": 0.2, "ct": 0.9}, True, "top"),
        ("any", {"top": 0.5, "side": 0.2, "ct": 0.9}, False, "ct"),  # the closest call that stayed normal
        ("all", {"top": 1.5, "side": 0.2, "ct": 0.9}, False, "ct"),
        ("all", {"top": 1.5, "side": 3.0, "ct": 1.1}, True, "side"),  # furthest over its threshold
        ("majority", {"top": 1.5, "side": 1.2, "ct": 0.9}, True, "top"),
        ("majority", {"top": 1.5, "side": 0.2, "ct": 0.9}, False, "ct"),
        ("majority", {"top": 1.5, "side": 0.2}, False, "side"),  # one of two is not a majority
    ],
)
def test_rules(rule: str, scores: dict[str, float], is_anomaly: bool, deciding: str) -> None:
    combined = combine([_answer(v, s) for v, s in scores.items()], rule)
    assert combined.is_anomaly is is_anomaly
    assert combined.deciding.view == deciding
    assert combined.deciding.is_anomaly is is_anomaly
    stored = combined.to_dict()
    assert stored["deciding_view"] == deciding
    assert (stored["deciding_region"] is not None) is is_anomaly


def test_views_with_different_thresholds_are_compared_by_their_own_threshold() -> None:
    # side is further over its own (lower) threshold than top over its own, though its score is smaller
    combined = combine([_answer("top", 30.0, 25.0), _answer("side", 12.0, 8.0)], "any")
    assert combined.deciding.view == "side"


def test_labels_from_repeated_or_comma_separated_fields() -> None:
    assert parse_labels(["Top", " side "]) == ["top", "side"]
    assert parse_labels(["top,side, CT"]) == ["top", "side", "ct"]
    assert parse_labels(None) == []
