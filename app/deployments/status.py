"""ArtifactState: whether a product's built artifact (gallery, memory bank, manual index) is current."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

State = Literal["current", "stale", "missing", "building", "failed"]


@dataclass
class ArtifactState:
    """One artifact's state for the admin (dashboard, deploy screens).

    `reasons` are translation keys (with `params`) saying why it is stale or missing, e.g.
    "status.stale.images_changed"; the page translates them.
    """

    kind: str  # "search_index" | "anomaly_model" | "manual_index"
    product_id: int | None
    state: State
    reasons: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    built_at: datetime | None = None
    version: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
