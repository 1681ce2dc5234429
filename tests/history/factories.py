"""Real history rows for tests: products and defect types through the catalog service, inspections
through the inspection service (photo stored), then each step's result written on the row as the step
services would."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.catalog.schemas import DefectTypeCreate, ProductCreate
from app.core.config import Settings
from app.core.storage import ObjectStorage
from app.db.tables import Inspection, User
from app.inspection import outcome as outcome_service
from app.inspection import service as inspection_service
from tests.conftest import png_bytes


@dataclass
class Catalog:
    """Ids of what `make_catalog` created."""

    products: dict[str, int] = field(default_factory=dict)
    defects: dict[str, int] = field(default_factory=dict)


def make_catalog(session: Session) -> Catalog:
    """Two products with Korean names and two / one defect types."""
    catalog = Catalog()
    for code, name, defects in (
        ("metal_plate", "금속 판", (("scratch", "긁힘"), ("dent", "찍힘"))),
        ("fabric", "직물", (("hole", "구멍"),)),
    ):
        product = catalog_service.create_product(
            session, product_in=ProductCreate(code=code, name=name), actor_id=None
        )
        catalog.products[code] = product.id
        for dcode, dname in defects:
            defect = catalog_service.create_defect_type(
                session,
                product_id=product.id,
                defect_in=DefectTypeCreate(code=dcode, name=dname),
                actor_id=None,
            )
            catalog.defects[dcode] = defect.id
    return catalog


def user_id(session: Session, username: str) -> int:
    """The id of a seeded user."""
    return session.scalars(select(User.id).where(User.username == username)).one()


def make_inspection(
    session: Session,
    storage: ObjectStorage,
    settings: Settings,
    *,
    username: str = "worker1",
    product_id: int | None = None,
    verdict_product_id: int | None = None,
    defect_type_id: int | None = None,
    anomaly: bool | None = None,
    generator: str | None = None,
    score: int | None = None,
    action: str = "",
    created_at: datetime | None = None,
    color: tuple[int, int, int] = (120, 130, 140),
    extra: dict[str, Any] | None = None,
    is_unknown: bool | None = None,
) -> Inspection:
    """An uploaded inspection with the given step results recorded on it."""
    user = session.get(User, user_id(session, username))
    assert user is not None
    row = inspection_service.create_inspection(
        session,
        storage,
        settings,
        data=png_bytes(color=color),
        file_name="part.png",
        product_id=product_id,
        user=user,
    )
    if defect_type_id is not None or verdict_product_id is not None:
        row.verdict_product_id = verdict_product_id or product_id
        row.verdict_defect_type_id = defect_type_id
        row.verdict_score = 0.91
        row.is_unknown = defect_type_id is None if is_unknown is None else is_unknown
        row.search_result = {
            "inspection_id": row.id,
            "verdict": {
                "product_id": row.verdict_product_id,
                "defect_type_id": defect_type_id,
                "score": 0.91,
                "margin": 0.2,
                "is_unknown": row.is_unknown,
                "min_score": 0.5,
                "min_margin": 0.05,
                "threshold_source": "default",
            },
            "matches": [],
            "top_k": 5,
            "embedder": "test",
            "elapsed_ms": 1.0,
        }
        row.status = "searched"
    if anomaly is not None:
        row.is_anomaly = anomaly
        row.anomaly_score = 3.2 if anomaly else 0.4
        anomaly_product = product_id or verdict_product_id
        if anomaly_product is not None:
            row.anomaly_result = {
                "product_id": anomaly_product,
                "score": row.anomaly_score,
                "threshold": 1.0,
                "regions": [],
            }
        row.status = "anomaly_checked"
    # the outcome as the step services store it
    outcome_service.refresh_outcome(row)
    if generator is not None:
        row.generator = generator
        row.status = "guided"
    if action or score is not None:
        row.action_taken = action
        row.feedback_score = score
        row.feedback_by = user.id
        row.feedback_at = created_at or datetime.now(UTC)
        row.completed_at = row.feedback_at
        row.status = "completed"
    if created_at is not None:
        row.created_at = created_at
    for key, value in (extra or {}).items():
        setattr(row, key, value)
    session.commit()
    return row


def days_ago(days: int, hour: int = 12) -> datetime:
    """Noon (server local time) `days` days ago, as an aware datetime."""
    now = datetime.now().astimezone()
    return (now - timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)
