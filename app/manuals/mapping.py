"""Matching manual sections to the product's defect types by code, Korean/English names and description.

A heading such as ``Color Defect (오염·얼룩 불량)`` is split into aliases (the whole, the part outside
and inside parentheses, pieces around / · ,), normalised (case, punctuation, filler words such as
"defect", "불량"), then compared with each defect type's code (``metal_contamination``), name and
description by exact alias, token containment and Hangul character-bigram overlap. Sections and defect
types are paired one to one, best first. An admin's choice (kept by section title) always wins.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_FILLER = {
    "defect",
    "defects",
    "불량",
    "결함",
    "type",
    "유형",
    "the",
    "of",
    "and",
    "불량품",
    "현상",
    "issue",
}
_NON_WORD = re.compile(r"[^0-9a-z가-힣]+")
_PIECES = re.compile(r"\s*(?:[/·,、]|\b및\b)\s*")
_PARENS = re.compile(r"\(([^)]*)\)|（([^）]*)）|\[([^\]]*)\]")
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]\s*|[①-⑳]\s*|[가-하][.)]\s+|제\s*\d+\s*[장절]\s*)")
AUTO_THRESHOLD = 0.5


def normalise(text: str) -> str:
    """Lower case, NFC, punctuation and filler words ("defect", "불량") removed."""
    text = unicodedata.normalize("NFC", text).lower().replace("_", " ")
    words = [w for w in _NON_WORD.sub(" ", text).split() if w not in _FILLER]
    words = [w.removesuffix("불량") if len(w) > 3 and w.endswith("불량") else w for w in words]
    return " ".join(words)


def title_key(title: str) -> str:
    """The key an admin's re-mapping is kept under (survives re-indexing of the same heading)."""
    return normalise(title) or title.strip().lower()


def aliases(text: str) -> set[str]:
    """Normalised names inside a heading or defect label."""
    text = _NUMBERING.sub("", text)
    inner = [next(g for g in m.groups() if g is not None) for m in _PARENS.finditer(text)]
    outer = _PARENS.sub(" ", text)
    raw = [text, outer, *inner]
    for piece in list(raw):
        raw.extend(_PIECES.split(piece))
    return {a for a in (normalise(x) for x in raw) if a}


def _bigrams(text: str) -> set[str]:
    s = text.replace(" ", "")
    return {s[i : i + 2] for i in range(len(s) - 1)} if len(s) > 1 else {s}


def _pair(a: str, b: str) -> float:
    if a == b:
        return 1.0
    ta, tb = set(a.split()), set(b.split())
    score = len(ta & tb) / len(ta | tb)
    if ta and tb and (ta <= tb or tb <= ta):
        score = max(score, 0.8)
    if re.search("[가-힣]", a) and re.search("[가-힣]", b):
        ba, bb = _bigrams(a), _bigrams(b)
        dice = 2 * len(ba & bb) / (len(ba) + len(bb))
        score = max(score, 0.9 * dice)
    return score


def name_similarity(a: str, b: str) -> float:
    """0..1: how surely two labels name the same defect."""
    aa, bb = aliases(a), aliases(b)
    return max((_pair(x, y) for x in aa for y in bb), default=0.0)


@dataclass(frozen=True)
class DefectLabel:
    """What a product calls one defect type."""

    id: int
    code: str
    name: str
    description: str = ""

    def score(self, title: str) -> float:
        """Similarity of a section heading to this defect type (description counts less)."""
        best = max(name_similarity(title, self.code), name_similarity(title, self.name))
        if self.description and best < 1.0:
            best = max(best, 0.6 * name_similarity(title, self.description))
        return best


def map_sections(
    sections: Sequence[Mapping[str, Any]],
    defect_types: Iterable[DefectLabel],
    overrides: Mapping[str, int | None] | None = None,
) -> list[dict[str, Any]]:
    """Each section with ``defect_type_id``, ``match_score`` and ``mapped_by`` ("admin", "auto" or None).

    One defect type per section and one section per defect type (the strongest pairs first); an
    admin's choice for a title is taken as is (None there means "no defect type").
    """
    labels = list(defect_types)
    overrides = overrides or {}
    out = [dict(s) for s in sections]
    taken: set[int] = set()
    valid = {d.id for d in labels}
    for s in out:
        key = title_key(str(s.get("title", "")))
        s["defect_type_id"], s["match_score"], s["mapped_by"] = None, 0.0, None
        if key in overrides:
            chosen = overrides[key]
            s["defect_type_id"] = chosen if chosen in valid else None
            s["mapped_by"] = "admin"
            if chosen in valid and chosen is not None:
                taken.add(chosen)
    pairs = sorted(
        (
            (d.score(str(s.get("title", ""))), i, d.id)
            for i, s in enumerate(out)
            if s["mapped_by"] is None
            for d in labels
            if d.id not in taken
        ),
        key=lambda p: (-p[0], p[1]),
    )
    used_sections: set[int] = set()
    for score, i, defect_id in pairs:
        if score < AUTO_THRESHOLD or i in used_sections or defect_id in taken:
            continue
        out[i].update(defect_type_id=defect_id, match_score=round(score, 3), mapped_by="auto")
        used_sections.add(i)
        taken.add(defect_id)
    return out
