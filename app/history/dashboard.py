"""The admin dashboard's numbers: catalog per product, artifact states, inspections, recent activity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.catalog.service import ProductOverview
from app.core.artifacts import DEPLOYMENT_KINDS, ArtifactState
from app.db.tables import DeploymentJob, Inspection
from app.deployments import service as deployment_service
from app.history import service as history_service
from app.history.schemas import InspectionListItem, InspectionStats

ARTIFACT_KINDS = tuple(k.kind for k in DEPLOYMENT_KINDS)


@dataclass
class Dashboard:
    """Everything the dashboard shows."""

    totals: dict[str, int]
    average_score: float | None
    products: list[ProductOverview]
    artifacts: dict[int, dict[str, ArtifactState | None]]  # by product id, then kind
    defects_30d: InspectionStats
    recent: list[InspectionListItem]
    jobs: list[DeploymentJob]
    product_names: dict[int, str]


def artifact_matrix(states: list[ArtifactState]) -> dict[int | None, dict[str, ArtifactState]]:
    """States by product id, then kind (a later state of the same pair wins)."""
    matrix: dict[int | None, dict[str, ArtifactState]] = {}
    for state in states:
        matrix.setdefault(state.product_id, {})[state.kind] = state
    return matrix


def artifacts_by_product(
    products: list[ProductOverview], *, states: list[ArtifactState]
) -> dict[int, dict[str, ArtifactState | None]]:
    """Each listed product's state of every artifact kind (None where there is none)."""
    matrix = artifact_matrix(states)
    return {
        row.product.id: {kind: matrix.get(row.product.id, {}).get(kind) for kind in ARTIFACT_KINDS}
        for row in products
    }


def dashboard(session: Session, *, states: list[ArtifactState]) -> Dashboard:
    """The dashboard: totals over all time, defects per type over the last 30 days, latest activity."""
    total, anomalies, completed, average = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((Inspection.is_anomaly.is_(True), 1), else_=0)), 0),
            func.count(Inspection.completed_at),
            func.avg(Inspection.feedback_score),
        ).select_from(Inspection)
    ).one()
    outcomes = dict(
        session.execute(
            select(Inspection.outcome_label, func.count()).group_by(Inspection.outcome_label)
        ).all()
    )
    products = catalog_service.product_overviews(session, include_inactive=False)
    end = history_service.today()
    stats = history_service.inspection_stats(
        session,
        flt=history_service.HistoryFilter(date_from=end - timedelta(days=29), date_to=end),
    )
    recent = history_service.list_inspections(
        session, flt=history_service.HistoryFilter(), page=1, page_size=10
    ).items
    jobs, _ = deployment_service.list_jobs(session, kind=None, product_id=None, page=1, page_size=5)
    return Dashboard(
        totals={
            "products": len(products),
            "inspections": int(total),
            "anomalies": int(anomalies),
            "completed": int(completed),
            "pending": int(total) - int(completed),
            "outcome_normal": int(outcomes.get("normal", 0)),
            "outcome_defect": int(outcomes.get("defect", 0)),
            "outcome_unknown": int(outcomes.get("unknown", 0)),
        },
        average_score=round(float(average), 2) if average is not None else None,
        products=products,
        artifacts=artifacts_by_product(products, states=states),
        defects_30d=stats,
        recent=recent,
        jobs=jobs,
        product_names=deployment_service.product_names(session),
    )
