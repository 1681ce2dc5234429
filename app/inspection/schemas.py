"""Inspection API shapes shared by every step."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.inspection.anomaly.schemas import AnomalyRead
from app.inspection.guidance.schemas import GuidanceRead
from app.inspection.search.schemas import SearchRead


class OutcomeRef(BaseModel):
    """A product or defect type named by the outcome."""

    id: int
    code: str
    name: str


class OutcomeRead(BaseModel):
    """The inspection's one answer, fused from every step that ran and the worker's own choice."""

    label: Literal["normal", "defect", "unknown", "pending"]
    product: OutcomeRef | None = None
    defect_type: OutcomeRef | None = None
    confidence: float = 0.0
    source: Literal["auto", "worker"] = "auto"
    basis: dict[str, Any] = {}
    # who changed it and when, for a worker outcome
    changed_by: str | None = None
    changed_at: datetime | None = None


class InspectionEventRead(BaseModel):
    """One entry of the inspection's history."""

    kind: str
    at: datetime
    user: str | None
    data: dict[str, Any]


class InspectionViewRead(BaseModel):
    """One labelled photo of a several-view inspection, with its own search and anomaly results."""

    view: str
    position: int
    image_url: str
    original_name: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    search: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    anomaly: dict[str, Any] | None = None
    anomaly_score: float | None = None
    is_anomaly: bool | None = None
    # which memory bank checked it: "view" (the product's bank for this view) or "product" (the fallback)
    bank: str | None = None


class InspectionRead(BaseModel):
    """An inspection with the results of the steps run so far."""

    id: int
    status: str
    image_url: str
    original_name: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    product_id: int | None
    user_id: int | None
    username: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    search: dict[str, Any] | None = None
    anomaly: dict[str, Any] | None = None
    guidance: dict[str, Any] | None = None
    verdict_product_id: int | None = None
    verdict_defect_type_id: int | None = None
    verdict_score: float | None = None
    is_unknown: bool | None = None
    chosen_image_id: int | None = None
    anomaly_score: float | None = None
    is_anomaly: bool | None = None
    generator: str | None = None
    timings_ms: dict[str, Any] = {}
    action_taken: str = ""
    feedback_score: int | None = None
    feedback_at: datetime | None = None
    registered_image_id: int | None = None
    outcome: OutcomeRead
    # several views per inspection (empty for a single photo without a view label)
    views: list[InspectionViewRead] = []


class StepProblem(BaseModel):
    """Why one step of /analyze could not run: the translated text, its key and the HTTP status it maps to."""

    detail: str
    code: str
    status: int


AnalyzeStep = Literal["search", "anomaly", "guidance"]


class AnalyzeRead(BaseModel):
    """/analyze: the record after every step, each step's answer (null when it could not run) and why not."""

    inspection: InspectionRead
    search: SearchRead | None
    anomaly: AnomalyRead | None
    guidance: GuidanceRead | None
    errors: dict[AnalyzeStep, StepProblem]
    # several views: each view's photo, search and anomaly answer (empty for one unlabelled photo)
    views: list[InspectionViewRead] = []
