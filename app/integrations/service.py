"""Result sinks: configuration, the outbox written with each finished inspection, retries, dead letters."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.core.audit import record_audit
from app.core.errors import ConflictError, NotFoundError
from app.core.i18n import translate
from app.db.base import utcnow
from app.db.tables import Inspection, Product, ResultSink, SinkDelivery
from app.integrations import senders
from app.integrations.schemas import DeliveryRead, SinkCreate, SinkRead, SinkTestResult, SinkUpdate

logger = logging.getLogger(__name__)

EVENTS = ("inspection.analyzed", "inspection.completed")
# Seconds before attempt n+1: 2, 4, 8, ... capped at 5 minutes.
_BACKOFF_CAP_S = 300


def backoff_s(attempts: int) -> float:
    """Wait before the next try after `attempts` failed tries."""
    return float(min(_BACKOFF_CAP_S, 2 ** max(1, attempts)))


def _read(sink: ResultSink, counts: dict[tuple[int, str], int]) -> SinkRead:
    config = sink.config or {}
    if sink.kind == "mqtt":
        target = f"mqtt://{config.get('host')}:{config.get('port')}"
        has_secret = bool(config.get("password"))
    else:
        target = str(config.get("url", ""))
        has_secret = bool(config.get("secret"))
    return SinkRead(
        id=sink.id,
        name=sink.name,
        kind=sink.kind,
        product_id=sink.product_id,
        is_active=sink.is_active,
        target=target,
        topic=config.get("topic") if sink.kind == "mqtt" else None,
        has_secret=has_secret,
        pending=counts.get((sink.id, "pending"), 0),
        failed=counts.get((sink.id, "failed"), 0),
        created_at=sink.created_at,
    )


def list_sinks(session: Session) -> list[SinkRead]:
    """Every sink with its pending and failed message counts."""
    counts = {
        (int(sink_id), str(status)): int(n)
        for sink_id, status, n in session.execute(
            select(SinkDelivery.sink_id, SinkDelivery.status, func.count())
            .where(SinkDelivery.status.in_(("pending", "failed")))
            .group_by(SinkDelivery.sink_id, SinkDelivery.status)
        )
    }
    return [_read(s, counts) for s in session.scalars(select(ResultSink).order_by(ResultSink.id))]


def get_sink(session: Session, *, sink_id: int) -> ResultSink:
    """A sink or NotFoundError."""
    sink = session.get(ResultSink, sink_id)
    if sink is None:
        raise NotFoundError("errors.sink_not_found", id=sink_id)
    return sink


def create_sink(session: Session, *, sink_in: SinkCreate, actor_id: int | None) -> SinkRead:
    """Add a sink."""
    if sink_in.product_id is not None and session.get(Product, sink_in.product_id) is None:
        raise NotFoundError("errors.product_not_found", id=sink_in.product_id)
    sink = ResultSink(
        name=sink_in.name,
        kind=sink_in.kind,
        product_id=sink_in.product_id,
        config=sink_in.config(),
        is_active=sink_in.is_active,
    )
    session.add(sink)
    session.flush()
    record_audit(session, user_id=actor_id, action="create", entity="sink", entity_id=sink.id, detail={})
    session.commit()
    return _read(sink, {})


def update_sink(session: Session, *, sink_id: int, sink_in: SinkUpdate, actor_id: int | None) -> SinkRead:
    """Rename or switch a sink on or off."""
    sink = get_sink(session, sink_id=sink_id)
    if sink_in.name is not None:
        sink.name = sink_in.name.strip()
    if sink_in.is_active is not None:
        sink.is_active = sink_in.is_active
    record_audit(session, user_id=actor_id, action="update", entity="sink", entity_id=sink.id, detail={})
    session.commit()
    return _read(sink, {})


def delete_sink(session: Session, *, sink_id: int, actor_id: int | None) -> None:
    """Remove a sink and its messages."""
    sink = get_sink(session, sink_id=sink_id)
    session.execute(delete(SinkDelivery).where(SinkDelivery.sink_id == sink.id))
    session.delete(sink)
    record_audit(session, user_id=actor_id, action="delete", entity="sink", entity_id=sink_id, detail={})
    session.commit()


def payload_for(inspection_read: dict[str, Any], event: str) -> dict[str, Any]:
    """The stored message: the inspection as GET /inspections/{id} shows it at that moment, and the event.

    A several-view inspection adds `views` (each view's label, anomaly answer, bank and photo) and
    `combination` (the product's rule and the view and region that decided) at the top.
    """
    payload: dict[str, Any] = {
        "event": event,
        "created_at": utcnow().isoformat(),
        "inspection": inspection_read,
    }
    views = inspection_read.get("views") or []
    if views:
        payload["views"] = [
            {
                "view": v.get("view"),
                "is_anomaly": v.get("is_anomaly"),
                "anomaly_score": v.get("anomaly_score"),
                "threshold": (v.get("anomaly") or {}).get("threshold"),
                "regions": (v.get("anomaly") or {}).get("regions", []),
                "bank": v.get("bank"),
                "defect_type": ((v.get("verdict") or {}).get("defect_type") or None),
                "image_url": v.get("image_url"),
            }
            for v in views
        ]
        payload["combination"] = (inspection_read.get("anomaly") or {}).get("combination")
    return payload


def with_links(payload: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The message as sent: links made absolute with PUBLIC_BASE_URL (relative when it is unset)."""
    base = base_url.rstrip("/")
    inspection_id = (payload.get("inspection") or {}).get("id")
    links: dict[str, Any] = {
        "api": f"{base}/api/v1/inspections/{inspection_id}",
        "image": f"{base}/api/v1/inspections/{inspection_id}/image",
        "page": f"{base}/history/{inspection_id}",
    }
    views = payload.get("views") or []
    if views:
        links["views"] = {str(v["view"]): f"{base}{v['image_url']}" for v in views if v.get("image_url")}
    return {**payload, "sent_at": utcnow().isoformat(), "links": links}


def enqueue_event(session: Session, *, inspection: Inspection, event: str) -> int:
    """Write one outbox row per active sink for this inspection (no commit: the caller's change carries it).

    Returns the number of messages queued. Sending happens in the background dispatcher, so a sink that is
    down never slows or fails the inspection.
    """
    from app.inspection.service import to_read

    sinks = list(
        session.scalars(
            select(ResultSink).where(
                ResultSink.is_active.is_(True),
                (ResultSink.product_id.is_(None)) | (ResultSink.product_id == inspection.product_id),
            )
        )
    )
    if not sinks:
        return 0
    payload = payload_for(to_read(inspection).model_dump(mode="json"), event)
    product = session.get(Product, inspection.product_id) if inspection.product_id is not None else None
    if product is not None:
        payload["product"] = {"id": product.id, "code": product.code, "name": product.name}
    for sink in sinks:
        session.add(SinkDelivery(sink_id=sink.id, inspection_id=inspection.id, event=event, payload=payload))
    return len(sinks)


def list_deliveries(
    session: Session, *, status: str | None, sink_id: int | None, limit: int = 200
) -> list[DeliveryRead]:
    """Messages, newest first (status `failed` is the dead-letter list)."""
    query = select(SinkDelivery)
    if status:
        query = query.where(SinkDelivery.status == status)
    if sink_id is not None:
        query = query.where(SinkDelivery.sink_id == sink_id)
    rows = session.scalars(query.order_by(SinkDelivery.id.desc()).limit(limit))
    return [DeliveryRead.model_validate(r) for r in rows]


def retry_delivery(session: Session, *, delivery_id: int, actor_id: int | None) -> DeliveryRead:
    """Send a dead letter again (from scratch: attempts reset)."""
    delivery = session.get(SinkDelivery, delivery_id)
    if delivery is None:
        raise NotFoundError("errors.sink_delivery_not_found", id=delivery_id)
    if delivery.status != "failed":
        raise ConflictError("errors.sink_delivery_not_failed", id=delivery_id)
    delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, utcnow()
    record_audit(
        session, user_id=actor_id, action="retry", entity="sink_delivery", entity_id=delivery_id, detail={}
    )
    session.commit()
    return DeliveryRead.model_validate(delivery)


def test_sink(session: Session, *, sink_id: int, base_url: str) -> SinkTestResult:
    """Send a test message now and say what happened (nothing is queued)."""
    sink = get_sink(session, sink_id=sink_id)
    payload = payload_for({"id": 0, "status": "test", "outcome": {"label": "test"}}, "sink.test")
    try:
        senders.send(sink.kind, sink.config or {}, with_links(payload, base_url), f"test-{sink.id}")
    except senders.SinkError as exc:
        return SinkTestResult(ok=False, detail=translate("integrations.test_failed", reason=str(exc)))
    return SinkTestResult(ok=True, detail=translate("integrations.test_ok"))


# ----- the dispatcher's side ------------------------------------------------------------------------------
def claim_due(session: Session, *, limit: int, stale_after_s: float) -> list[int]:
    """Take up to `limit` due messages (atomically, so several servers never send one twice)."""
    now = utcnow()
    # A message left 'sending' by a process that died is due again. Looked for first: the outbox is polled
    # every second on every server, and an UPDATE would take SQLite's write lock even when nothing matches.
    stale = (SinkDelivery.status == "sending") & (
        SinkDelivery.claimed_at < now - timedelta(seconds=stale_after_s)
    )
    if session.scalar(select(SinkDelivery.id).where(stale).limit(1)) is not None:
        session.execute(update(SinkDelivery).where(stale).values(status="pending"))
    due = list(
        session.scalars(
            select(SinkDelivery.id)
            .where(SinkDelivery.status == "pending", SinkDelivery.next_attempt_at <= now)
            .order_by(SinkDelivery.next_attempt_at, SinkDelivery.id)
            .limit(limit)
        )
    )
    claimed: list[int] = []
    for delivery_id in due:
        taken = session.execute(
            update(SinkDelivery)
            .where(SinkDelivery.id == delivery_id, SinkDelivery.status == "pending")
            .values(status="sending", claimed_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if taken:
            claimed.append(delivery_id)
    session.commit()
    return claimed


def deliver(session: Session, *, delivery_id: int, max_attempts: int, base_url: str) -> str:
    """Send one claimed message; returns its new status (delivered, pending for a retry, or failed)."""
    delivery = session.get(SinkDelivery, delivery_id)
    if delivery is None:
        return "missing"
    sink = session.get(ResultSink, delivery.sink_id)
    delivery.attempts += 1
    try:
        if sink is None:
            raise senders.SinkError("the sink was deleted")
        message = with_links(delivery.payload, base_url)
        senders.send(sink.kind, sink.config or {}, message, str(delivery.id))
    except senders.SinkError as exc:
        delivery.last_error = str(exc)[:2000]
        if delivery.attempts >= max_attempts:
            delivery.status = "failed"
            logger.warning("sink message %s failed for good: %s", delivery.id, exc)
        else:
            delivery.status = "pending"
            delivery.next_attempt_at = utcnow() + timedelta(seconds=backoff_s(delivery.attempts))
    else:
        delivery.status, delivery.delivered_at, delivery.last_error = "delivered", utcnow(), ""
    session.commit()
    return delivery.status
