"""The one-page inspection report (PDF): photo and overlay, outcome, regions, guidance with citations, record.

Rendered with reportlab and the NanumGothic fonts the product already ships (koreanize_matplotlib, registered
as the demo manuals do). Everything shown is read from the stored inspection; long texts are wrapped, then
set smaller, then cut with an ellipsis and a note, so the report is always exactly one A4 page.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from PIL import Image, UnidentifiedImageError
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen import canvas
from sqlalchemy.orm import Session

from app.core.i18n import current_language, translate
from app.core.services import Services
from app.core.storage import ObjectStorage, StorageError
from app.db.base import utcnow
from app.db.tables import Inspection, Product, User
from app.demo.manual_pdf import FONT, FONT_BOLD, register_fonts, wrap_text
from app.inspection import outcome as outcome_service
from app.inspection import service as inspection_service
from app.inspection.anomaly import pictures

logger = logging.getLogger(__name__)

PAGE_W, PAGE_H = A4
MARGIN = 36.0
CONTENT_W = PAGE_W - 2 * MARGIN
GAP = 12.0
COLUMN_W = (CONTENT_W - GAP) / 2
PICTURE_H = 190.0
PICTURE_MAX_PX = 900  # photos are downscaled (and re-encoded as JPEG) so the PDF stays small
SECTION_KEYS = ("status", "cause", "action", "prevention")
# Set smaller step by step until the guidance fits; below the last size the texts are cut instead.
FLOW_SIZES = (9.0, 8.5, 8.0, 7.5, 7.0)
MAX_TEXT_CHARS = 4000  # a section longer than this cannot fit the page at any size; cut before wrapping
MAX_REGIONS = 5
MAX_ACTION_LINES = 8
MAX_SIDE_LINES = 14  # the outcome and record columns stay this short, whatever the names in them
ELLIPSIS = "…"


@dataclass
class Block:
    """A titled run of paragraphs in the guidance part (a section, or the citations)."""

    title: str
    paragraphs: list[str]
    lines: list[str] = field(default_factory=list)


@dataclass
class ViewPicture:
    """One view of a several-view inspection: its overlay (or photo before the check) and a caption."""

    label: str
    picture: bytes | None
    caption: str
    missing: str


@dataclass
class ReportContent:
    """Everything the page shows, already in the reader's language."""

    lang: str
    inspection_id: int
    title: str
    meta: list[str]
    photo: bytes | None
    overlay: bytes | None
    overlay_missing: str
    outcome_main: str
    outcome_lines: list[str]
    region_lines: list[str]
    record_lines: list[str]
    action_text: str
    blocks: list[Block]
    generated: str
    notes: list[str] = field(default_factory=list)
    # several views per inspection: one picture per view, side by side, instead of photo and overlay
    views: list[ViewPicture] = field(default_factory=list)


def _t(lang: str, key: str, **params: Any) -> str:
    return translate(key, lang, **params)


def _dt(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Server-local time, as the pages show it."""
    return value.astimezone().strftime(fmt) if value else "-"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _picture(storage: ObjectStorage, key: str) -> bytes | None:
    """The stored picture as a small JPEG, or None when it is missing or unreadable."""
    try:
        data = storage.get(key)
        with Image.open(io.BytesIO(data)) as image:
            picture = image.convert("RGB")
    except (StorageError, ValueError, OSError, UnidentifiedImageError):
        return None
    picture.thumbnail((PICTURE_MAX_PX, PICTURE_MAX_PX))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _overlay(session: Session, services: Services, inspection: inspection_service.Photo) -> bytes | None:
    """The anomaly overlay (drawn from the stored map and cached if nobody looked at it yet), or None."""
    try:
        key = pictures.file_key(session, services=services, inspection=inspection, name="overlay.png")
    except (StorageError, KeyError, TypeError, ValueError, OSError):
        logger.warning("no anomaly overlay for inspection %s", inspection.id, exc_info=True)
        return None
    return _picture(services.storage, key)


def _person(user: User | None) -> str:
    return (user.display_name or user.username) if user is not None else "-"


def _product_name(session: Session, inspection: Inspection) -> str:
    product = inspection.outcome_product
    if product is None:
        pid = inspection.product_id or inspection.verdict_product_id
        product = session.get(Product, pid) if pid is not None else None
    return f"{product.name} ({product.code})" if product is not None else "-"


def _outcome_part(inspection: Inspection, lang: str) -> tuple[str, list[str], list[str]]:
    """The outcome's headline, its basis lines, and the anomaly regions."""
    outcome = outcome_service.outcome_read(inspection)
    if outcome.label == "defect" and outcome.defect_type is not None:
        main = f"{_t(lang, 'outcome.short.defect')}: {outcome.defect_type.name}"
    else:
        main = _t(lang, f"outcome.labels.{outcome.label}")
    lines: list[str] = []
    if outcome.product is not None:
        lines.append(_t(lang, "report.outcome_product", name=outcome.product.name))
    if outcome.label != "pending":
        lines.append(_t(lang, "outcome.confidence", percent=round(outcome.confidence * 100)))
    if outcome.source == "worker":
        at = _dt(outcome.changed_at) if outcome.changed_at else "-"
        lines.append(_t(lang, "outcome.changed_by", who=outcome.changed_by or "-", at=at))
    else:
        rule = outcome.basis.get("rule")
        source = _t(lang, "outcome.source_auto")
        lines.append(f"{source} · {_t(lang, f'outcome.rules.{rule}')}" if rule else source)
    anomaly = inspection.anomaly_result or {}
    score, threshold = _number(anomaly.get("score")), _number(anomaly.get("threshold"))
    if score is not None and threshold is not None:
        verdict = _t(lang, "report.anomaly_yes" if score > threshold else "report.anomaly_no")
        lines.append(
            _t(lang, "report.anomaly", score=f"{score:.3f}", threshold=f"{threshold:.3f}", verdict=verdict)
        )
    else:
        lines.append(_t(lang, "report.anomaly_not_run"))
    identification = outcome.basis.get("identification")
    if isinstance(identification, dict) and _number(identification.get("score")) is not None:
        lines.append(
            _t(
                lang,
                "outcome.basis_identification",
                score=f"{_number(identification.get('score')) or 0.0:.3f}",
                margin=f"{_number(identification.get('margin')) or 0.0:.3f}",
            )
        )
    regions = [r for r in anomaly.get("regions") or [] if isinstance(r, dict)]
    region_lines: list[str] = []
    if anomaly:
        region_lines.append(_t(lang, "report.regions", count=len(regions)))
        for index, region in enumerate(regions[:MAX_REGIONS], start=1):
            values = {k: _number(region.get(k)) for k in ("x", "y", "width", "height", "score")}
            region_lines.append(
                _t(
                    lang,
                    "report.region",
                    n=index,
                    x=round(values["x"] or 0),
                    y=round(values["y"] or 0),
                    width=round(values["width"] or 0),
                    height=round(values["height"] or 0),
                    score=f"{values['score'] or 0.0:.3f}",
                )
            )
        if len(regions) > MAX_REGIONS:
            region_lines.append(_t(lang, "report.regions_more", count=len(regions) - MAX_REGIONS))
    return main, lines, region_lines


def _view_pictures(
    session: Session, services: Services, inspection: Inspection, lang: str
) -> list[ViewPicture]:
    """Each view's overlay (its photo before the check), captioned with its answer and its bank."""
    out = []
    for view in inspection.views:
        anomaly = view.anomaly_result or {}
        score, threshold = _number(anomaly.get("score")), _number(anomaly.get("threshold"))
        picture = _overlay(session, services, view) if anomaly.get("render") else None
        if picture is None:
            picture = _picture(services.storage, view.image_key)
        parts = [view.view]
        if score is not None and threshold is not None:
            verdict = _t(lang, "views.anomalous" if view.is_anomaly else "views.normal")
            parts.append(f"{verdict} {score:.3f}/{threshold:.3f}")
            parts.append(_t(lang, f"views.bank.{anomaly.get('bank') or 'product'}").split(" (")[0])
        else:
            parts.append(_t(lang, "views.not_checked"))
        out.append(ViewPicture(view.view, picture, " · ".join(parts), _t(lang, "report.photo_missing")))
    return out


def _combination_lines(inspection: Inspection, lang: str) -> list[str]:
    """How the views combined and which view and region decided (empty for one view)."""
    combination = (inspection.anomaly_result or {}).get("combination")
    if not isinstance(combination, dict):
        return []
    rule = str(combination.get("rule") or "any")
    lines = [
        _t(
            lang,
            "views.combined",
            rule=_t(lang, f"views.rule.{rule}"),
            answer=_t(lang, "views.anomalous" if combination.get("is_anomaly") else "views.normal"),
            anomalous=len(combination.get("anomalous_views") or []),
            total=len(combination.get("views") or []),
        ),
        _t(lang, "views.deciding", view=combination.get("deciding_view") or "-"),
    ]
    region = combination.get("deciding_region")
    if isinstance(region, dict):
        values = {k: round(_number(region.get(k)) or 0) for k in ("x", "y", "width", "height")}
        lines.append(_t(lang, "views.deciding_region", **values))
    return lines


def _guidance_blocks(inspection: Inspection, lang: str) -> tuple[list[Block], bool]:
    """The four sections and the citations (True when a text had to be cut before layout)."""
    guidance = inspection.guidance or {}
    sections = guidance.get("sections") if isinstance(guidance.get("sections"), dict) else None
    if not sections:
        return [Block(_t(lang, "report.guidance"), [_t(lang, "report.guidance_not_run")])], False
    is_cut = False
    blocks = []
    for key in SECTION_KEYS:
        text = str(sections.get(key) or "").strip() or "-"
        if len(text) > MAX_TEXT_CHARS:
            text, is_cut = text[:MAX_TEXT_CHARS] + ELLIPSIS, True
        blocks.append(Block(_t(lang, f"guidance.sections.{key}"), text.splitlines()))
    citations = []
    for citation in guidance.get("citations") or []:
        if not isinstance(citation, dict):
            continue
        name = str(citation.get("manual_name") or f"#{citation.get('manual_id', '-')}")
        page = _t(lang, "guidance.page", page=citation.get("page", "-"))
        section = str(citation.get("section") or "")
        citations.append(f"• {name} · {page}" + (f" · {section}" if section else ""))
    generator = str(guidance.get("generator") or "-")
    blocks.append(
        Block(
            f"{_t(lang, 'guidance.citations')} · {_t(lang, 'guidance.generator')}: {generator}",
            citations or [_t(lang, "report.no_citations")],
        )
    )
    return blocks, is_cut


def report_content(
    session: Session, *, services: Services, inspection_id: int, lang: str | None = None
) -> ReportContent:
    """Read the inspection (404 if missing), its pictures, record and events, in the reader's language."""
    lang = lang or current_language.get()
    inspection = inspection_service.get_inspection(session, inspection_id=inspection_id)
    photo = _picture(services.storage, inspection.image_key)
    overlay = None
    if inspection.anomaly_result:
        overlay = _overlay(session, services, inspection)
        overlay_missing = _t(lang, "report.overlay_missing")
    else:
        overlay_missing = _t(lang, "report.anomaly_not_run")
    main, outcome_lines, region_lines = _outcome_part(inspection, lang)
    outcome_lines += _combination_lines(inspection, lang)
    blocks, is_cut = _guidance_blocks(inspection, lang)

    feedback_user = session.get(User, inspection.feedback_by) if inspection.feedback_by else None
    record_lines = []
    if inspection.feedback_score is not None:
        stars = "★" * inspection.feedback_score + "☆" * (5 - inspection.feedback_score)
        record_lines.append(_t(lang, "report.rating", stars=stars, score=inspection.feedback_score))
        record_lines.append(
            _t(lang, "report.recorded_by", who=_person(feedback_user), at=_dt(inspection.feedback_at))
        )
    elif not inspection.action_taken:
        record_lines.append(_t(lang, "report.no_record"))
    events = outcome_service.list_events(session, inspection_id=inspection.id)
    if events:
        last = events[-1]
        record_lines.append(
            _t(
                lang,
                "report.events",
                count=len(events),
                kind=_t(lang, f"outcome.event_kinds.{last.kind}"),
                who=_person(last.user),
                at=_dt(last.at),
            )
        )
    else:
        record_lines.append(_t(lang, "report.events_none"))
    meta = [
        _t(lang, "report.product", name=_product_name(session, inspection)),
        _t(lang, "report.inspected_at", at=_dt(inspection.created_at)),
        _t(lang, "report.worker", name=_person(inspection.user)),
        _t(lang, "report.status", status=_t(lang, f"history.statuses.{inspection.status}")),
    ]
    return ReportContent(
        lang=lang,
        inspection_id=inspection.id,
        title=_t(lang, "report.title", id=inspection.id),
        meta=meta,
        photo=photo,
        overlay=overlay,
        overlay_missing=overlay_missing,
        outcome_main=main,
        outcome_lines=outcome_lines,
        region_lines=region_lines,
        record_lines=record_lines,
        action_text=(inspection.action_taken or "").strip(),
        blocks=blocks,
        generated=_t(lang, "report.generated", at=_dt(utcnow())),
        notes=[_t(lang, "report.cut_note")] if is_cut else [],
        views=_view_pictures(session, services, inspection, lang) if inspection.views else [],
    )


# ----- layout -----------------------------------------------------------------------------------------------
def _wrap(paragraphs: list[str], font: str, size: float, width: float) -> list[str]:
    """Each paragraph wrapped to `width`; empty paragraphs are dropped."""
    lines: list[str] = []
    for paragraph in paragraphs:
        lines.extend(wrap_text(paragraph, font, size, width))
    return lines


def _with_ellipsis(line: str, font: str, size: float, width: float) -> str:
    """The line ending in an ellipsis, shortened until it fits `width`."""
    text = line.rstrip()
    while text and pdfmetrics.stringWidth(text + ELLIPSIS, font, size) > width:
        text = text[:-1]
    return text + ELLIPSIS


def _cut(lines: list[str], keep: int, font: str, size: float, width: float) -> list[str]:
    if len(lines) <= keep:
        return lines
    if keep <= 0:
        return []
    return [*lines[: keep - 1], _with_ellipsis(lines[keep - 1], font, size, width)]


def _share(counts: list[int], budget: int) -> list[int]:
    """Lines per block: short blocks keep all theirs, the long ones share the rest equally."""
    shares = [0] * len(counts)
    left, pending = budget, sorted(range(len(counts)), key=lambda i: counts[i])
    while pending:
        fair = max(left // len(pending), 1)
        index = pending.pop(0)
        shares[index] = min(counts[index], fair, max(left, 0))
        left -= shares[index]
    return shares


@dataclass
class _Flow:
    size: float
    leading: float
    heading_size: float
    blocks: list[Block]
    is_cut: bool


def _flow(blocks: list[Block], height: float) -> _Flow:
    """Wrap the guidance blocks at the largest size that fits `height`; at the smallest, cut them to fit."""
    for size in FLOW_SIZES:
        leading, heading = size * 1.35, size + 1.5
        wrapped = [Block(b.title, b.paragraphs, _wrap(b.paragraphs, FONT, size, CONTENT_W)) for b in blocks]
        needed = sum(heading * 1.5 + len(b.lines) * leading + 3 for b in wrapped)
        if needed <= height:
            return _Flow(size, leading, heading, wrapped, False)
    fixed = sum(heading * 1.5 + 3 for _ in wrapped)
    budget = max(int((height - fixed) // leading), 0)
    shares = _share([len(b.lines) for b in wrapped], budget)
    cut = [
        Block(b.title, b.paragraphs, _cut(b.lines, share, FONT, size, CONTENT_W))
        for b, share in zip(wrapped, shares, strict=True)
    ]
    return _Flow(size, leading, heading, cut, True)


def _draw_picture(
    c: canvas.Canvas,
    data: bytes | None,
    x: float,
    y: float,
    caption: str,
    missing: str,
    box_w: float = COLUMN_W,
) -> None:
    """A picture fitted into the box whose top-left is (x, y), with its caption under it."""
    c.setStrokeGray(0.8)
    c.rect(x, y - PICTURE_H, box_w, PICTURE_H)
    if data is not None:
        reader = ImageReader(io.BytesIO(data))
        width, height = reader.getSize()
        scale = min((box_w - 4) / width, (PICTURE_H - 4) / height)
        w, h = width * scale, height * scale
        c.drawImage(reader, x + (box_w - w) / 2, y - PICTURE_H + (PICTURE_H - h) / 2, w, h)
    else:
        c.setFillGray(0.95)
        c.rect(x, y - PICTURE_H, box_w, PICTURE_H, stroke=0, fill=1)
        c.setFillGray(0.35)
        c.setFont(FONT, 9)
        lines = wrap_text(missing, FONT, 9, box_w - 20)
        top = y - PICTURE_H / 2 + len(lines) * 6
        for i, line in enumerate(lines):
            c.drawCentredString(x + box_w / 2, top - 12 * (i + 1) + 3, line)
        c.setFillGray(0.0)
    c.setFont(FONT, 8)
    c.setFillGray(0.3)
    if pdfmetrics.stringWidth(caption, FONT, 8) > box_w:
        caption = _with_ellipsis(caption, FONT, 8, box_w)
    c.drawString(x, y - PICTURE_H - 11, caption)
    c.setFillGray(0.0)


def _draw_lines(c: canvas.Canvas, lines: list[str], x: float, y: float, size: float, leading: float) -> float:
    c.setFont(FONT, size)
    for line in lines:
        c.drawString(x, y - size, line)
        y -= leading
    return y


def render_report(content: ReportContent) -> bytes:
    """The report as the bytes of a one-page A4 PDF."""
    register_fonts()
    lang = content.lang
    notes = list(content.notes)  # what the layout had to cut is added here; the content stays as given
    buffer = io.BytesIO()
    c = canvas.Canvas(buffer, pagesize=A4, pageCompression=1)
    c.setTitle(content.title)
    c.setAuthor("DefectLens")
    c.setSubject(content.title)

    # header
    y = PAGE_H - MARGIN
    c.setFont(FONT_BOLD, 16)
    c.drawString(MARGIN, y - 16, content.title)
    c.setFont(FONT, 8)
    c.setFillGray(0.4)
    c.drawRightString(PAGE_W - MARGIN, y - 10, "DefectLens")
    c.setFillGray(0.0)
    y -= 24
    meta = _cut(_wrap([" · ".join(content.meta)], FONT, 8.5, CONTENT_W), 2, FONT, 8.5, CONTENT_W)
    y = _draw_lines(c, meta, MARGIN, y, 8.5, 11)
    c.setStrokeGray(0.6)
    c.line(MARGIN, y - 2, PAGE_W - MARGIN, y - 2)
    y -= 10

    if content.views:
        # several views: each view's overlay side by side, captioned with its answer
        count = len(content.views)
        box_w = (CONTENT_W - GAP * (count - 1)) / count
        for i, view in enumerate(content.views):
            _draw_picture(c, view.picture, MARGIN + i * (box_w + GAP), y, view.caption, view.missing, box_w)
    else:
        # photo and overlay side by side
        _draw_picture(c, content.photo, MARGIN, y, _t(lang, "report.photo"), _t(lang, "report.photo_missing"))
        _draw_picture(
            c,
            content.overlay,
            MARGIN + COLUMN_W + GAP,
            y,
            _t(lang, "report.overlay"),
            content.overlay_missing,
        )
    y -= PICTURE_H + 20

    # outcome (left) and the worker's record (right)
    top = y
    c.setFont(FONT_BOLD, 10)
    c.drawString(MARGIN, y - 10, _t(lang, "outcome.title"))
    y -= 14
    c.setFont(FONT_BOLD, 12)
    main = _cut(wrap_text(content.outcome_main, FONT_BOLD, 12, COLUMN_W), 2, FONT_BOLD, 12, COLUMN_W)
    for line in main:
        c.drawString(MARGIN, y - 12, line)
        y -= 15
    left = _wrap(content.outcome_lines, FONT, 8, COLUMN_W) + _wrap(content.region_lines, FONT, 8, COLUMN_W)
    left = _cut(left, MAX_SIDE_LINES, FONT, 8, COLUMN_W)
    y_left = _draw_lines(c, left, MARGIN, y, 8, 10.5)

    x = MARGIN + COLUMN_W + GAP
    y = top
    c.setFont(FONT_BOLD, 10)
    c.drawString(x, y - 10, _t(lang, "report.record"))
    y -= 14
    c.setFont(FONT_BOLD, 8)
    c.drawString(x, y - 8, _t(lang, "report.action"))
    y -= 10.5
    action = wrap_text(content.action_text or "-", FONT, 8, COLUMN_W)
    if len(action) > MAX_ACTION_LINES:
        action = _cut(action, MAX_ACTION_LINES, FONT, 8, COLUMN_W)
        notes.append(_t(lang, "report.cut_note"))
    y = _draw_lines(c, action, x, y, 8, 10.5)
    record = _cut(
        _wrap(content.record_lines, FONT, 8, COLUMN_W), MAX_SIDE_LINES - len(action), FONT, 8, COLUMN_W
    )
    y_right = _draw_lines(c, record, x, y - 3, 8, 10.5)
    y = min(y_left, y_right) - 4
    c.setStrokeGray(0.6)
    c.line(MARGIN, y, PAGE_W - MARGIN, y)
    y -= 8

    # the guidance: four sections and citations, in whatever space is left above the footer
    footer_top = MARGIN + 24
    flow = _flow(content.blocks, y - footer_top)
    if flow.is_cut:
        notes.append(_t(lang, "report.cut_note"))
    for block in flow.blocks:
        c.setFont(FONT_BOLD, flow.heading_size)
        c.drawString(MARGIN, y - flow.heading_size, block.title)
        y -= flow.heading_size * 1.5
        y = _draw_lines(c, block.lines, MARGIN, y, flow.size, flow.leading) - 3

    # footer
    c.setStrokeGray(0.8)
    c.line(MARGIN, footer_top - 4, PAGE_W - MARGIN, footer_top - 4)
    c.setFont(FONT, 7.5)
    c.setFillGray(0.35)
    notes = list(dict.fromkeys(notes))
    if notes:
        c.drawString(MARGIN, footer_top - 14, " ".join(notes))
    c.drawString(MARGIN, MARGIN - 2, content.generated)
    c.drawRightString(PAGE_W - MARGIN, MARGIN - 2, f"DefectLens · #{content.inspection_id}")
    c.showPage()
    c.save()
    return buffer.getvalue()


def inspection_report(
    session: Session, *, services: Services, inspection_id: int, lang: str | None = None
) -> bytes:
    """The inspection's one-page PDF report in the reader's language (404 for a missing inspection)."""
    return render_report(report_content(session, services=services, inspection_id=inspection_id, lang=lang))
