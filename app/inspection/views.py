"""Several views per inspection: view labels, and combining the views' anomaly answers by the product's rule.

An inspection may hold several labelled photos (`top`, `side`, `ct`, ...). The first is the inspection's own
photo (so every single-view reader keeps working); each is searched and anomaly-checked on its own, and the
anomaly answers combine by the product's rule: `any` view anomalous -> defect (default), `all`, or
`majority`. The combination names the view (and its strongest region) that decided.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.core.config import Settings
from app.core.errors import ValidationFailedError
from app.db.tables import VIEW_RULES, InspectionView, Product

# Lower-case letters, digits, `_` and `-`, starting with a letter or digit: safe in keys and URLs.
VIEW_LABEL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
DEFAULT_RULE = "any"


def parse_labels(raw: Sequence[str] | None) -> list[str]:
    """Form values as labels: repeated `views` fields or one comma-separated field; trimmed, lower-cased."""
    labels: list[str] = []
    for value in raw or []:
        labels.extend(part.strip().lower() for part in value.split(","))
    return labels


def check_label(label: str, product: Product | None) -> str:
    """A well-formed label the product knows (any well-formed label when it lists none); 422 otherwise."""
    if not VIEW_LABEL.match(label):
        raise ValidationFailedError("views.errors.label_invalid", label=label[:40])
    known = list(product.views or []) if product is not None else []
    if known and label not in known:
        raise ValidationFailedError("views.errors.unknown", label=label, known=", ".join(known))
    return label


def check_labels(
    settings: Settings, *, labels: Sequence[str], file_count: int, product: Product | None
) -> list[str]:
    """The views of one upload, checked before anything is stored (422 with a translated reason)."""
    if file_count > settings.max_inspection_views:
        raise ValidationFailedError(
            "views.errors.too_many", count=file_count, limit=settings.max_inspection_views
        )
    if len(labels) != file_count:
        raise ValidationFailedError("views.errors.count_mismatch", views=len(labels), files=file_count)
    seen: set[str] = set()
    for label in labels:
        check_label(label, product)
        if label in seen:
            raise ValidationFailedError("views.errors.duplicate", label=label)
        seen.add(label)
    return list(labels)


def check_rule(rule: str) -> str:
    """A known combination rule (422 otherwise)."""
    if rule not in VIEW_RULES:
        raise ValidationFailedError("views.errors.bad_rule", rule=rule[:20], rules=", ".join(VIEW_RULES))
    return rule


def normalise_product_views(raw: Sequence[str]) -> list[str]:
    """A product's view list as the admin typed it: labels checked, duplicates dropped, order kept."""
    out: list[str] = []
    for label in parse_labels(raw):
        if not label:
            continue
        check_label(label, None)
        if label not in out:
            out.append(label)
    return out


@dataclass(frozen=True)
class ViewAnswer:
    """One view's anomaly answer, as the combination sees it."""

    view: str
    score: float
    threshold: float
    is_anomaly: bool
    regions: list[dict[str, Any]]

    @property
    def ratio(self) -> float:
        """Score over threshold: comparable across views whose banks have different scales."""
        return self.score / self.threshold if self.threshold > 0 else self.score


@dataclass(frozen=True)
class Combined:
    """The views' answers combined by the rule, and the view that decided."""

    rule: str
    is_anomaly: bool
    deciding: ViewAnswer
    anomalous: list[str]
    views: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The stored and returned form (`combination` of the anomaly result, `views` of the basis)."""
        region = max(self.deciding.regions, key=lambda r: float(r.get("score", 0.0)), default=None)
        return {
            "rule": self.rule,
            "is_anomaly": self.is_anomaly,
            "deciding_view": self.deciding.view,
            "deciding_region": region,
            "anomalous_views": self.anomalous,
            "views": self.views,
        }


def combine(answers: Sequence[ViewAnswer], rule: str) -> Combined:
    """Combine the views' anomaly answers by `rule` (any | all | majority).

    The deciding view is, for a defect, the anomalous view furthest over its threshold; for a normal answer,
    the normal view nearest to its threshold (the closest call that still came out normal). Its own
    `is_anomaly` therefore always equals the combined answer.
    """
    if not answers:
        raise ValueError("no views to combine")
    anomalous = [a for a in answers if a.is_anomaly]
    if rule == "all":
        is_anomaly = len(anomalous) == len(answers)
    elif rule == "majority":
        is_anomaly = 2 * len(anomalous) > len(answers)
    else:
        is_anomaly = bool(anomalous)
    pool = anomalous if is_anomaly else [a for a in answers if not a.is_anomaly]
    deciding = max(pool, key=lambda a: a.ratio)
    return Combined(
        rule=rule,
        is_anomaly=is_anomaly,
        deciding=deciding,
        anomalous=[a.view for a in anomalous],
        views=[a.view for a in answers],
    )


def by_label(views: Sequence[InspectionView], label: str) -> InspectionView | None:
    """The inspection's view with this label, or None."""
    return next((v for v in views if v.view == label), None)
