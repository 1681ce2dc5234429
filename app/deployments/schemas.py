"""Deployment job bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

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


class DeploymentDetail(DeploymentRead):
    """A job with its log."""

    log: str


class DeploymentPage(BaseModel):
    """A page of jobs, newest first."""

    items: list[DeploymentRead]
    total: int
