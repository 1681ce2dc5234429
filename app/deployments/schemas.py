"""Deployment job bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field

JobKind = Literal["search_index", "anomaly_model", "manual_index"]


class DeploymentCreate(BaseModel):
    """Start a job for one product or (product_id null) all products."""

    kind: JobKind
    product_id: int | None = None


class DeploymentRead(BaseModel):
    """A job's state."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    product_id: int | None
    status: str
    progress: float
    stage: str
    error: str
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    result: dict[str, Any] = {}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def elapsed_s(self) -> float | None:
        """Seconds since the job started (until it finished); None while queued."""
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(UTC)
        return round(max(0.0, (end - self.started_at).total_seconds()), 1)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def eta_s(self) -> float | None:
        """A linear estimate of the seconds left for a running job (None until 2% is done)."""
        elapsed = self.elapsed_s
        if self.status != "running" or elapsed is None or self.progress < 0.02:
            return None
        return round(elapsed * (1.0 - self.progress) / self.progress, 1)


class DeploymentDetail(DeploymentRead):
    """A job with its log."""

    log: str


class DeploymentPage(BaseModel):
    """A page of jobs, newest first."""

    items: list[DeploymentRead]
    total: int
