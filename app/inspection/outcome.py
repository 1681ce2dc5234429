"""The inspection's one answer and its record: gather the evidence, store the fused outcome, keep the history.

The fusion rules live in app/ml/outcome.py (pure, shared with the benchmarks); this module reads the stored
step results, stores the outcome on the inspection, guards who may change an inspection (its owner or an
admin, never a completed one unless an admin reopens it) and appends to the inspection's event history.
Every writer here adds to the caller's transaction; the caller commits once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import ConflictError, PermissionDeniedError
from app.db.base import utcnow
from app.db.tables import DefectType, Inspection, InspectionEvent, Product, User
from app.inspection.schemas import OutcomeRead, OutcomeRef
from app.ml.outcome import (
    AnomalyEvidence,
    IdentificationEvidence,
    Outcome,
    WorkerChoice,
    fuse_outcome,
)

# Status order: a step run again never moves an inspection backwards (e.g. "completed" -> "anomaly checked").
_STATUS_ORDER = ("uploaded", "searched", "anomaly_checked", "guided", "completed")


# ----- who may change an inspection ------------------------------------------------------------------------
def ensure_can_change(inspection: Inspection, user: User) -> None:
    """Only the owner or an admin may change it (403); a completed one is locked (409) until reopened."""
    if user.role != "admin" and inspection.user_id != user.id:
        raise PermissionDeniedError("errors.outcome_not_owner", id=inspection.id)
    if inspection.status == "completed":
        raise ConflictError("errors.outcome_locked", id=inspection.id)


def can_change(inspection: Inspection, user: User) -> bool:
    """Whether `user` may run steps or save feedback on this inspection now (for the pages)."""
    return inspection.status != "completed" and (user.role == "admin" or inspection.user_id == user.id)


def advance_status(inspection: Inspection, status: str) -> None:
    """Move the status forward to `status`, never back."""
    if _STATUS_ORDER.index(status) > _STATUS_ORDER.index(inspection.status):
        inspection.status = status


# ----- the event history ------------------------------------------------------------------------------------
def record_event(
    session: Session,
    *,
    inspection: Inspection,
    kind: str,
    user_id: int | None,
    data: dict[str, Any] | None = None,
) -> None:
    """Append one entry to the inspection's history (committed with the caller's change)."""
    session.add(
        InspectionEvent(
            inspection_id=inspection.id,
            kind=kind,
            user_id=user_id,
            at=utcnow(),
            data={**(data or {}), "outcome": inspection.outcome_label},
        )
    )


def list_events(session: Session, *, inspection_id: int) -> list[InspectionEvent]:
    """The inspection's history, oldest first."""
    return list(
        session.scalars(
            select(InspectionEvent)
            .where(InspectionEvent.inspection_id == inspection_id)
            .order_by(InspectionEvent.at, InspectionEvent.id)
        ).unique()
    )


def reopen(session: Session, *, inspection: Inspection, user: User) -> Inspection:
    """An admin unlocks a completed inspection (recorded); its feedback stays until changed; commits."""
    if user.role != "admin":
        raise PermissionDeniedError("errors.outcome_reopen_admin_only")
    if inspection.status != "completed":
        raise ConflictError("errors.outcome_not_completed", id=inspection.id)
    if inspection.guidance or inspection.generator:
        inspection.status = "guided"
    elif inspection.anomaly_result:
        inspection.status = "anomaly_checked"
    elif inspection.search_result:
        inspection.status = "searched"
    else:
        inspection.status = "uploaded"
    inspection.completed_at = None
    record_event(session, inspection=inspection, kind="reopen", user_id=user.id)
    session.commit()
    return inspection


# ----- the outcome ------------------------------------------------------------------------------------------
def _anomaly_evidence(inspection: Inspection) -> AnomalyEvidence | None:
    result = inspection.anomaly_result or {}
    try:
        confidence = result.get("confidence")
        return AnomalyEvidence(
            product_id=int(result["product_id"]),
            score=float(result["score"]),
            threshold=float(result["threshold"]),
            confidence=float(confidence) if isinstance(confidence, int | float) else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _search_of_deciding_view(inspection: Inspection) -> dict[str, Any] | None:
    """The search answer identification is read from: the deciding view's when several views combined
    (the defect type comes from the photo that showed the defect), else the inspection's own."""
    combination = (inspection.anomaly_result or {}).get("combination") or {}
    deciding = combination.get("deciding_view") if isinstance(combination, dict) else None
    for view in inspection.views if deciding else []:
        if view.view == deciding and view.search_result:
            return view.search_result
    return inspection.search_result


def _identification_evidence(inspection: Inspection) -> IdentificationEvidence | None:
    verdict = (_search_of_deciding_view(inspection) or {}).get("verdict")
    if not isinstance(verdict, dict):
        return None
    try:
        confidence = verdict.get("confidence")
        return IdentificationEvidence(
            product_id=verdict.get("product_id"),
            defect_type_id=verdict.get("defect_type_id"),
            score=float(verdict["score"]),
            margin=float(verdict["margin"]),
            is_unknown=bool(verdict["is_unknown"]),
            confidence=float(confidence) if isinstance(confidence, int | float) else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _stored_choice(inspection: Inspection) -> WorkerChoice | None:
    """The worker's choice kept from the last outcome (it survives a step run again)."""
    if inspection.outcome_source != "worker" or inspection.outcome_product_id is None:
        return None
    worker = (inspection.outcome_basis or {}).get("worker") or {}
    return WorkerChoice(
        product_id=inspection.outcome_product_id,
        defect_type_id=inspection.outcome_defect_type_id,
        user_id=inspection.outcome_by,
        at=inspection.outcome_at.isoformat() if inspection.outcome_at else "",
        action=str(worker.get("action") or "choose"),
    )


def has_worker_choice(inspection: Inspection, action: str) -> bool:
    """Whether the stored outcome is the worker's choice made by `action` ("choose" or "register")."""
    choice = _stored_choice(inspection)
    return choice is not None and choice.action == action


def refresh_outcome(
    inspection: Inspection,
    *,
    choice: WorkerChoice | None = None,
    clear_choice: bool = False,
) -> Outcome:
    """Fuse the stored evidence (and the worker's choice: a new one, the kept one, or none) and store it."""
    worker = None if clear_choice else (choice or _stored_choice(inspection))
    outcome = fuse_outcome(
        anomaly=_anomaly_evidence(inspection),
        identification=_identification_evidence(inspection),
        worker=worker,
    )
    inspection.outcome_label = outcome.label
    inspection.outcome_product_id = outcome.product_id
    inspection.outcome_defect_type_id = outcome.defect_type_id
    inspection.outcome_confidence = round(outcome.confidence, 6)
    inspection.outcome_source = outcome.source
    combination = (inspection.anomaly_result or {}).get("combination")
    # Several views: the basis names the rule and the view (and region) that decided.
    inspection.outcome_basis = {**outcome.basis, "views": combination} if combination else outcome.basis
    if worker is None:
        inspection.outcome_by = None
        inspection.outcome_at = None
    elif choice is not None:
        inspection.outcome_by = choice.user_id
        inspection.outcome_at = datetime.fromisoformat(choice.at)
    return outcome


def worker_choice(*, user: User, product_id: int, defect_type_id: int | None, action: str) -> WorkerChoice:
    """A worker's explicit answer made now."""
    return WorkerChoice(
        product_id=product_id,
        defect_type_id=defect_type_id,
        user_id=user.id,
        at=utcnow().isoformat(),
        action=action,
    )


def _ref(row: Product | DefectType | None) -> OutcomeRef | None:
    return None if row is None else OutcomeRef(id=row.id, code=row.code, name=row.name)


def outcome_read(inspection: Inspection) -> OutcomeRead:
    """The API view of the stored outcome (names through the row's relationships)."""
    by = inspection.outcome_user if inspection.outcome_by is not None else None
    return OutcomeRead(
        label=inspection.outcome_label,
        product=_ref(inspection.outcome_product),
        defect_type=_ref(inspection.outcome_defect_type) if inspection.outcome_label == "defect" else None,
        confidence=inspection.outcome_confidence if inspection.outcome_confidence is not None else 0.0,
        source=inspection.outcome_source,
        basis=inspection.outcome_basis or {},
        changed_by=(by.display_name or by.username) if by is not None else None,
        changed_at=inspection.outcome_at,
    )
