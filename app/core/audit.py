"""The audit log of admin changes (added to the caller's transaction, committed with it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.db.tables import AuditLog


def record_audit(
    session: Session,
    *,
    user_id: int | None,
    action: str,
    entity: str,
    entity_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an audit row; the caller's commit makes it durable together with the change."""
    session.add(
        AuditLog(user_id=user_id, action=action, entity=entity, entity_id=entity_id, detail=detail or {})
    )
