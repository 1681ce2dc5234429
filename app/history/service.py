"""Inspection history: filtered lists, statistics over a date range, the admin dashboard's numbers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.orm import Session, selectinload

from app.core.errors import InvalidInputError
from app.db.tables import INSPECTION_STATUSES, OUTCOME_LABELS, DefectType, Inspection, Product, User
from app.history.schemas import (
    CountByDay,
    CountByDefectType,
    CountByGenerator,
    CountByOutcome,
    CountByProduct,
    CountByScore,
    InspectionListItem,
    InspectionPage,
    InspectionStats,
    NamedRef,
    UserRef,
)
from app.inspection import outcome as outcome_service
from app.inspection import service as inspection_service

MAX_RANGE_DAYS = 731  # stats over at most two years: per-day rows stay readable
DEFAULT_RANGE_DAYS = 30


@dataclass(frozen=True)
class HistoryFilter:
    """What the history list and the statistics can be narrowed by (every field optional)."""

    product_id: int | None = None
    defect_type_id: int | None = None
    generator: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    feedback_score: int | None = None
    status: str | None = None
    is_anomaly: bool | None = None
    label: str | None = None


def local_tz() -> tzinfo:
    """The server's time zone: days in filters and charts are the factory's local days."""
    return datetime.now().astimezone().tzinfo or UTC


def today() -> date:
    """Today in the server's time zone."""
    return datetime.now(local_tz()).date()


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=local_tz())


def effective_product_id() -> ColumnElement[Any]:
    """The product an inspection is about: the worker's, else the outcome's, else the verdict's."""
    return func.coalesce(Inspection.product_id, Inspection.outcome_product_id, Inspection.verdict_product_id)


def _check(flt: HistoryFilter) -> None:
    if flt.date_from and flt.date_to and flt.date_from > flt.date_to:
        raise InvalidInputError(
            "errors.history_bad_range", date_from=flt.date_from.isoformat(), date_to=flt.date_to.isoformat()
        )
    if flt.feedback_score is not None and not 1 <= flt.feedback_score <= 5:
        raise InvalidInputError("errors.history_bad_score", score=flt.feedback_score)
    if flt.label is not None and flt.label not in OUTCOME_LABELS:
        raise InvalidInputError(
            "errors.outcome_bad_label", label=flt.label, allowed=", ".join(OUTCOME_LABELS)
        )
    if flt.status is not None and flt.status not in INSPECTION_STATUSES:
        raise InvalidInputError(
            "errors.history_bad_status", status=flt.status, allowed=", ".join(INSPECTION_STATUSES)
        )


def _where(query: Select[Any], flt: HistoryFilter) -> Select[Any]:
    if flt.product_id is not None:
        query = query.where(effective_product_id() == flt.product_id)
    if flt.defect_type_id is not None:
        # the outcome's defect type: an unknown's runner-up or a normal part's nearest defect never counts
        query = query.where(Inspection.outcome_defect_type_id == flt.defect_type_id)
    if flt.label is not None:
        query = query.where(Inspection.outcome_label == flt.label)
    if flt.generator:
        query = query.where(Inspection.generator == flt.generator)
    if flt.date_from is not None:
        query = query.where(Inspection.created_at >= _day_start(flt.date_from))
    if flt.date_to is not None:
        query = query.where(Inspection.created_at < _day_start(flt.date_to + timedelta(days=1)))
    if flt.feedback_score is not None:
        query = query.where(Inspection.feedback_score == flt.feedback_score)
    if flt.status is not None:
        query = query.where(Inspection.status == flt.status)
    if flt.is_anomaly is not None:
        query = query.where(Inspection.is_anomaly.is_(flt.is_anomaly))
    return query


def names_for(
    session: Session, *, rows: list[Inspection]
) -> tuple[dict[int, Product], dict[int, DefectType]]:
    """The products and defect types the rows refer to, by id."""
    product_ids = {
        pid
        for r in rows
        for pid in (r.product_id, r.outcome_product_id, r.verdict_product_id)
        if pid is not None
    }
    defect_ids = {r.outcome_defect_type_id for r in rows if r.outcome_defect_type_id is not None}
    products = (
        {p.id: p for p in session.scalars(select(Product).where(Product.id.in_(product_ids)))}
        if product_ids
        else {}
    )
    defects = (
        {d.id: d for d in session.scalars(select(DefectType).where(DefectType.id.in_(defect_ids)))}
        if defect_ids
        else {}
    )
    return products, defects


def to_item(
    inspection: Inspection, products: dict[int, Product], defects: dict[int, DefectType]
) -> InspectionListItem:
    """The list view of an inspection, with product / defect type names resolved."""
    pid = inspection.product_id or inspection.outcome_product_id or inspection.verdict_product_id
    product = products.get(pid) if pid is not None else None
    defect = (
        defects.get(inspection.outcome_defect_type_id)
        if inspection.outcome_defect_type_id is not None and inspection.outcome_label == "defect"
        else None
    )
    user = inspection.user
    return InspectionListItem(
        id=inspection.id,
        status=inspection.status,
        image_url=inspection_service.image_url(inspection),
        product=NamedRef(id=product.id, code=product.code, name=product.name) if product else None,
        defect_type=NamedRef(id=defect.id, code=defect.code, name=defect.name) if defect else None,
        verdict_score=inspection.verdict_score,
        is_unknown=inspection.is_unknown,
        anomaly_score=inspection.anomaly_score,
        is_anomaly=inspection.is_anomaly,
        generator=inspection.generator,
        action_taken=inspection.action_taken,
        is_action_completed=inspection.completed_at is not None and bool(inspection.action_taken),
        is_no_action=inspection.completed_at is not None and not inspection.action_taken,
        feedback_score=inspection.feedback_score,
        user=UserRef(id=user.id, username=user.username, display_name=user.display_name) if user else None,
        created_at=inspection.created_at,
        completed_at=inspection.completed_at,
        outcome=outcome_service.outcome_read(inspection),
        views=[v.view for v in inspection.views],
    )


def list_inspections(session: Session, *, flt: HistoryFilter, page: int, page_size: int) -> InspectionPage:
    """Inspections matching the filter, newest first, one page of them."""
    _check(flt)
    query = _where(
        select(Inspection).options(
            selectinload(Inspection.outcome_product),
            selectinload(Inspection.outcome_defect_type),
            selectinload(Inspection.outcome_user),
        ),
        flt,
    )
    total = session.scalar(_where(select(func.count()).select_from(Inspection), flt)) or 0
    rows = list(
        session.scalars(
            query.order_by(Inspection.created_at.desc(), Inspection.id.desc())
            .offset((page - 1) * page_size)
            .limit(page_size)
        ).unique()
    )
    products, defects = names_for(session, rows=rows)
    return InspectionPage(
        items=[to_item(r, products, defects) for r in rows], total=total, page=page, page_size=page_size
    )


def stats_range(date_from: date | None, date_to: date | None) -> tuple[date, date]:
    """The range statistics cover: given bounds, else the last 30 days up to today."""
    end = date_to or today()
    start = date_from or (end - timedelta(days=DEFAULT_RANGE_DAYS - 1))
    if start > end:
        raise InvalidInputError(
            "errors.history_bad_range", date_from=start.isoformat(), date_to=end.isoformat()
        )
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise InvalidInputError("errors.history_range_too_long", days=MAX_RANGE_DAYS)
    return start, end


def _hour_bucket(session: Session) -> ColumnElement[Any]:
    """created_at truncated to the UTC hour, as text (SQLite and MariaDB spell it differently)."""
    if session.get_bind().dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d %H", Inspection.created_at)
    return func.date_format(Inspection.created_at, "%Y-%m-%d %H")


def inspection_stats(session: Session, *, flt: HistoryFilter) -> InspectionStats:
    """Counts over the filter's date range (default: the last 30 days).

    Two grouped queries, whatever the number of rows: one by (defect type, product, generator, score,
    anomaly, completed), whose few hundred groups give every total and breakdown, and one by UTC hour,
    which Python folds into the server's local days (exact for time zones on whole hours, e.g. KST).
    """
    start, end = stats_range(flt.date_from, flt.date_to)
    flt = HistoryFilter(**{**flt.__dict__, "date_from": start, "date_to": end})
    _check(flt)
    product_col = effective_product_id()
    completed_col = case((Inspection.completed_at.is_not(None), 1), else_=0)
    groups = session.execute(
        _where(
            select(
                Inspection.outcome_label,
                Inspection.outcome_defect_type_id,
                product_col,
                Inspection.generator,
                Inspection.feedback_score,
                Inspection.is_anomaly,
                completed_col,
                func.count(),
            ).select_from(Inspection),
            flt,
        ).group_by(
            Inspection.outcome_label,
            Inspection.outcome_defect_type_id,
            product_col,
            Inspection.generator,
            Inspection.feedback_score,
            Inspection.is_anomaly,
            completed_col,
        )
    ).all()
    total = anomalies = completed = scored = score_sum = 0
    per_defect: Counter[int] = Counter()
    per_label: Counter[str] = Counter()
    per_product: Counter[int] = Counter()
    generators: Counter[str] = Counter()
    scores: Counter[int] = Counter()
    for label, defect_id, product_id, generator, score, is_anomaly, is_completed, count in groups:
        total += count
        per_label[label] += count
        anomalies += count if is_anomaly else 0
        completed += count if is_completed else 0
        if defect_id is not None and label == "defect":
            per_defect[defect_id] += count
        if product_id is not None:
            per_product[product_id] += count
        if generator is not None:
            generators[generator] += count
        if score is not None:
            scores[score] += count
            scored += count
            score_sum += score * count

    defects = (
        {d.id: d for d in session.scalars(select(DefectType).where(DefectType.id.in_(per_defect)))}
        if per_defect
        else {}
    )
    products = (
        {
            p.id: p
            for p in session.scalars(
                select(Product).where(
                    Product.id.in_(set(per_product) | {d.product_id for d in defects.values()})
                )
            )
        }
        if per_product or defects
        else {}
    )
    defect_rows = sorted(
        (
            CountByDefectType(
                defect_type_id=d.id,
                code=d.code,
                name=d.name,
                product_code=products[d.product_id].code if d.product_id in products else "",
                count=per_defect[d.id],
            )
            for d in defects.values()
        ),
        key=lambda row: (-row.count, row.code),
    )
    product_rows = sorted(
        (
            CountByProduct(product_id=p.id, code=p.code, name=p.name, count=per_product[p.id])
            for p in products.values()
            if p.id in per_product
        ),
        key=lambda row: (-row.count, row.code),
    )

    tz = local_tz()
    days: Counter[date] = Counter()
    anomaly_days: Counter[date] = Counter()
    anomaly_col = case((Inspection.is_anomaly.is_(True), 1), else_=0)
    bucket = _hour_bucket(session)
    for hour, count, hour_anomalies in session.execute(
        _where(select(bucket, func.count(), func.sum(anomaly_col)).select_from(Inspection), flt).group_by(
            bucket
        )
    ):
        day = datetime.strptime(hour, "%Y-%m-%d %H").replace(tzinfo=UTC).astimezone(tz).date()
        days[day] += count
        anomaly_days[day] += int(hour_anomalies or 0)
    per_day = [
        CountByDay(day=d, count=days[d], anomalies=anomaly_days[d])
        for d in (start + timedelta(days=i) for i in range((end - start).days + 1))
    ]
    return InspectionStats(
        date_from=start,
        date_to=end,
        total=total,
        anomalies=anomalies,
        actions_completed=completed,
        feedback_count=scored,
        average_score=round(score_sum / scored, 2) if scored else None,
        per_defect_type=defect_rows,
        per_outcome=[CountByOutcome(label=lbl, count=per_label.get(lbl, 0)) for lbl in OUTCOME_LABELS],
        per_product=product_rows,
        per_day=per_day,
        generators=[
            CountByGenerator(generator=g, count=k)
            for g, k in sorted(generators.items(), key=lambda i: (-i[1], i[0]))
        ],
        feedback=[CountByScore(score=s, count=scores.get(s, 0)) for s in range(1, 6)],
    )


def generator_names(session: Session) -> list[str]:
    """Every generator that wrote a report so far (for the filter choices)."""
    return list(
        session.scalars(
            select(Inspection.generator)
            .where(Inspection.generator.is_not(None))
            .distinct()
            .order_by(Inspection.generator)
        )
    )


def user_of(session: Session, *, user_id: int | None) -> User | None:
    """A user by id (the worker who gave feedback), or None."""
    return session.get(User, user_id) if user_id is not None else None


def _safe_url(value: object) -> str | None:
    """A file URL from a stored step result, only if it points at our own API (never an outside page)."""
    return value if isinstance(value, str) and value.startswith("/api/v1/") else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def detail_view(inspection: Inspection) -> dict[str, Any]:
    """Every step's stored result, reduced to what the detail page shows (missing parts stay empty)."""
    search = inspection.search_result or {}
    matches = []
    for match in search.get("matches") or []:
        if not isinstance(match, dict):
            continue
        product = match.get("product") if isinstance(match.get("product"), dict) else {}
        defect = match.get("defect_type") if isinstance(match.get("defect_type"), dict) else {}
        matches.append(
            {
                "image_url": _safe_url(match.get("image_url")),
                "score": _number(match.get("score")),
                "product": str((product or {}).get("name") or (product or {}).get("code") or ""),
                "defect_type": str((defect or {}).get("name") or (defect or {}).get("code") or ""),
            }
        )
    verdict = search.get("verdict") if isinstance(search.get("verdict"), dict) else {}
    anomaly = inspection.anomaly_result or {}
    reference = anomaly.get("reference_image") if isinstance(anomaly.get("reference_image"), dict) else {}
    images = [
        (key, _safe_url(anomaly.get(f"{key}_url")))
        for key in ("comparison", "heatmap", "overlay", "mask")
        if _safe_url(anomaly.get(f"{key}_url"))
    ]
    if reference and _safe_url(reference.get("image_url")):
        images.insert(0, ("reference", _safe_url(reference.get("image_url"))))
    regions = [
        {k: _number(r.get(k)) for k in ("x", "y", "width", "height", "score")}
        for r in anomaly.get("regions") or []
        if isinstance(r, dict)
    ]
    guidance = inspection.guidance or {}
    sections = guidance.get("sections") if isinstance(guidance.get("sections"), dict) else {}
    citations = [
        {
            "manual_id": c.get("manual_id") if isinstance(c.get("manual_id"), int) else None,
            "page": c.get("page") if isinstance(c.get("page"), int) else None,
            "text": str(c.get("text") or "")[:600],
        }
        for c in guidance.get("citations") or []
        if isinstance(c, dict)
    ]
    views = inspection_service.view_cards(inspection)
    combination = anomaly.get("combination") if isinstance(anomaly.get("combination"), dict) else None
    return {
        "views": views,
        "combination": combination,
        "has_search": bool(inspection.search_result),
        "matches": matches,
        "margin": _number((verdict or {}).get("margin")),
        "has_anomaly": bool(inspection.anomaly_result),
        "anomaly_score": _number(anomaly.get("score")),
        "threshold": _number(anomaly.get("threshold")),
        "anomaly_images": images,
        "regions": regions,
        "has_guidance": bool(inspection.guidance),
        "sections": [
            (key, str((sections or {}).get(key) or "")) for key in ("status", "cause", "action", "prevention")
        ],
        "citations": citations,
        "elapsed_ms": _number(guidance.get("elapsed_ms")),
        "timings_ms": {k: v for k, v in (inspection.timings_ms or {}).items() if _number(v) is not None},
    }
