"""The understood structure of manuals: sections mapped to defect types, the admin's corrections, lookups.

The mapping is computed when read, from the stored sections, the product's current defect types and the
admin's choices (``Manual.section_map``, by normalised section title), so a defect type added later
maps at once and a re-mapping needs no re-indexing; re-indexing keeps the admin's choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.audit import record_audit
from app.core.errors import NotFoundError, ValidationFailedError
from app.core.i18n import translate
from app.db.tables import DefectType, Manual
from app.manuals.mapping import DefectLabel, map_sections, title_key
from app.manuals.structure import PART_KINDS


def error_text(error: str) -> str:
    """A manual's stored error in the reader's language ("manuals.reason.<code>|detail" or plain text)."""
    if not error.startswith("manuals.reason."):
        return error
    key, _, detail = error.partition("|")
    text = translate(key)
    return f"{text} ({detail})" if detail else text


def _labels(session: Session, product_id: int) -> list[DefectType]:
    return list(
        session.scalars(select(DefectType).where(DefectType.product_id == product_id).order_by(DefectType.id))
    )


def mapped_sections(
    session: Session, *, manual: Manual, defect_types: list[DefectType] | None = None
) -> list[dict[str, Any]]:
    """The manual's sections, each with defect_type_id / match_score / mapped_by."""
    sections = (manual.structure or {}).get("sections") or []
    types = defect_types if defect_types is not None else _labels(session, manual.product_id)
    labels = [DefectLabel(d.id, d.code, d.name, d.description or "") for d in types]
    return map_sections(sections, labels, manual.section_map or {})


def manual_structure(session: Session, *, manual: Manual) -> dict[str, Any]:
    """What the API and the admin screen show: sections with parts and pages, unmapped defect types."""
    types = _labels(session, manual.product_id)
    by_id = {d.id: d for d in types}
    sections = mapped_sections(session, manual=manual, defect_types=types)
    mapped = {s["defect_type_id"] for s in sections if s["defect_type_id"] is not None}
    out_sections = []
    for i, s in enumerate(sections):
        defect = by_id.get(s["defect_type_id"]) if s["defect_type_id"] is not None else None
        parts = s.get("parts") or {}
        out_sections.append(
            {
                "index": i,
                "title": s.get("title", ""),
                "page": s.get("page", 1),
                "source": s.get("source", "heading"),
                "defect_type": (
                    {"id": defect.id, "code": defect.code, "name": defect.name}
                    if defect is not None
                    else None
                ),
                "match_score": s.get("match_score", 0.0),
                "mapped_by": s.get("mapped_by"),
                "parts": {
                    kind: {
                        "label": (s.get("labels") or {}).get(kind, ""),
                        "pages": sorted({int(p["page"]) for p in parts.get(kind, [])}),
                        "text": "\n".join(p["text"] for p in parts.get(kind, [])),
                    }
                    for kind in PART_KINDS
                },
                "missing": [k for k in PART_KINDS if not parts.get(k)],
            }
        )
    warnings = list((manual.structure or {}).get("warnings") or [])
    return {
        "manual_id": manual.id,
        "product_id": manual.product_id,
        "status": manual.status,
        "kind": (manual.structure or {}).get("kind"),
        "sections": out_sections,
        "unmapped_defect_types": [
            {"id": d.id, "code": d.code, "name": d.name} for d in types if d.id not in mapped
        ],
        "warnings": [{"code": w, "message": translate(f"manuals.reason.{w}")} for w in warnings],
    }


def remap_section(
    session: Session, *, manual: Manual, section_index: int, defect_type_id: int | None, actor_id: int | None
) -> dict[str, Any]:
    """Map one section to a defect type of the manual's product (None: to none); kept by section title."""
    sections = (manual.structure or {}).get("sections") or []
    if not 0 <= section_index < len(sections):
        raise NotFoundError("errors.manual_section_not_found", index=section_index)
    if defect_type_id is not None:
        defect = session.get(DefectType, defect_type_id)
        if defect is None or defect.product_id != manual.product_id:
            raise ValidationFailedError("errors.manual_section_bad_defect_type", id=defect_type_id)
    key = title_key(str(sections[section_index].get("title", "")))
    choices = dict(manual.section_map or {})
    # One section per defect type: an earlier admin choice of the same type for another title is dropped.
    if defect_type_id is not None:
        choices = {k: v for k, v in choices.items() if v != defect_type_id or k == key}
    choices[key] = defect_type_id
    manual.section_map = choices
    record_audit(
        session,
        user_id=actor_id,
        action="update",
        entity="manual",
        entity_id=manual.id,
        detail={"section": sections[section_index].get("title", ""), "defect_type_id": defect_type_id},
    )
    session.commit()
    return manual_structure(session, manual=manual)


@dataclass(frozen=True)
class SectionLookup:
    """Where a defect type's section is in a product's indexed manuals.

    Args:
        title: the section heading mapped to the defect type ("" when none is).
        manual_id: the manual holding it (None when none).
        titles: every defect section heading of the product's indexed manuals (for the honest answer).
        has_structure: some indexed manual has understood defect sections.
    """

    title: str
    manual_id: int | None
    titles: tuple[str, ...]
    has_structure: bool


def find_section(session: Session, *, product_id: int, defect_type_id: int | None) -> SectionLookup:
    """The section of the product's indexed manuals mapped to ``defect_type_id``."""
    manuals = list(
        session.scalars(
            select(Manual)
            .where(Manual.product_id == product_id, Manual.status == "indexed")
            .order_by(Manual.id)
        )
    )
    types = _labels(session, product_id)
    titles: list[str] = []
    found: tuple[str, int] | None = None
    for manual in manuals:
        for s in mapped_sections(session, manual=manual, defect_types=types):
            titles.append(str(s.get("title", "")))
            if found is None and defect_type_id is not None and s.get("defect_type_id") == defect_type_id:
                found = (str(s.get("title", "")), manual.id)
    return SectionLookup(
        title=found[0] if found else "",
        manual_id=found[1] if found else None,
        titles=tuple(dict.fromkeys(titles)),
        has_structure=bool(titles),
    )
