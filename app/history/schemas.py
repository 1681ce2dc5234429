"""History API shapes: inspection list items, pages, statistics."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel

from app.inspection.schemas import OutcomeRead


class NamedRef(BaseModel):
    """A product or defect type as shown in a list: id, code and display name."""

    id: int
    code: str
    name: str


class UserRef(BaseModel):
    """Who ran an inspection."""

    id: int
    username: str
    display_name: str


class InspectionListItem(BaseModel):
    """One inspection in the history list (lighter than InspectionRead)."""

    id: int
    status: str
    image_url: str
    product: NamedRef | None
    defect_type: NamedRef | None
    verdict_score: float | None
    is_unknown: bool | None
    anomaly_score: float | None
    is_anomaly: bool | None
    generator: str | None
    action_taken: str
    is_action_completed: bool
    is_no_action: bool = False  # completed with "no action taken" recorded explicitly
    feedback_score: int | None
    user: UserRef | None
    created_at: datetime
    completed_at: datetime | None
    outcome: OutcomeRead
    # several views per inspection: the view labels in upload order (empty for one unlabelled photo)
    views: list[str] = []


class InspectionPage(BaseModel):
    """A page of inspections, newest first."""

    items: list[InspectionListItem]
    total: int
    page: int
    page_size: int


class CountByOutcome(BaseModel):
    """Inspections whose outcome was normal, a defect (any type), unknown or still pending."""

    label: str
    count: int


class CountByDefectType(BaseModel):
    """Inspections whose outcome was one defect type (never an unknown's runner-up)."""

    defect_type_id: int
    code: str
    name: str
    product_code: str
    count: int


class CountByProduct(BaseModel):
    """Inspections of one product (the chosen product, else the verdict's)."""

    product_id: int
    code: str
    name: str
    count: int


class CountByDay(BaseModel):
    """Inspections and anomalies on one day (server time zone)."""

    day: date
    count: int
    anomalies: int


class CountByGenerator(BaseModel):
    """Guidance reports written by one generator."""

    generator: str
    count: int


class CountByScore(BaseModel):
    """Feedback given with one usefulness score (1-5)."""

    score: int
    count: int


class InspectionStats(BaseModel):
    """Statistics over a date range (inclusive, server time zone)."""

    date_from: date
    date_to: date
    total: int
    anomalies: int
    actions_completed: int
    feedback_count: int
    average_score: float | None
    per_defect_type: list[CountByDefectType]
    per_outcome: list[CountByOutcome] = []
    per_product: list[CountByProduct]
    per_day: list[CountByDay]
    generators: list[CountByGenerator]
    feedback: list[CountByScore]
