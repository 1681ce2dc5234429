"""What a manual says per defect: sections and their cause / action / prevention parts.

Works on layout lines (app.manuals.document.DocLine) with every signal a reader uses: heading styles and
levels (DOCX), font size and weight (PDF), numbering and bullet families (1. / 1) / 가. / ① / 1️⃣ / ■ / ●),
bracketed labels ([원인], 【대책】), a Korean/English lexicon of part names (발생 원인, 추정 원인, 시정 조치,
처리 방법, 관리 방안, 재발 방지; Cause, Corrective action, Countermeasure, Preventive action ...), tables
(one row per defect, one column per part), and sentence cues when no heading names a part.

Defect headings are found from the part headings: the strongest heading-like line before each group
of parts starts a section; the style of those lines (numbering family, weight, size, level) then marks
sections whose parts are missing or in another order. Running headers / footers (lines repeated at the
page edges) are dropped first.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app.manuals.document import DocLine
from app.manuals.mapping import name_similarity

PartKind = Literal["cause", "action", "prevention"]
PART_KINDS: tuple[PartKind, ...] = ("cause", "action", "prevention")
KIND_LABELS: dict[PartKind, str] = {"cause": "원인", "action": "조치", "prevention": "예방"}

# ----- part lexicon -----------------------------------------------------------------------------------------
_PRE = (
    r"(?:발생|추정|주요|근본|예상|가능|예측|즉시|긴급|현장|시정|개선|"
    r"권장|불량|결함|작업자|기본|세부|일반|단기|장기|표준|품질|공정)*"
)
_POST = (
    r"(?:가이드|방법|방안|사항|내용|절차|분석|대책|요인|활동|기준|"
    r"포인트|조치|및|대응|요령|방침|계획|지침|항목)*"
)
_CORE: dict[PartKind, str] = {
    "prevention": r"(?:예방|재발방지|재발|방지|관리|예방보전|유지관리)",
    "cause": r"(?:원인|요인|발생원인|발생메커니즘|메커니즘)",
    "action": r"(?:조치|대응|처리|처치|대책|해결|수리|재작업|시정|보수|개선)",
}
_EN: dict[PartKind, str] = {
    "prevention": (
        r"(?:preventive|preventative|prevention|recurrence\s*prevention|how\s*to\s*prevent|avoid(?:ance)?)"
        r"(?:\s*(?:actions?|measures?|steps?|controls?|plan))?"
    ),
    "cause": (
        r"(?:(?:root|probable|possible|likely|main|potential|typical)\s*)?causes?(?:\s*analysis)?"
        r"|why\s*it\s*happens"
    ),
    "action": (
        r"(?:(?:corrective|immediate|containment|remedial|recommended|required)\s*)?"
        r"(?:actions?|measures?|steps?)|countermeasures?|remed(?:y|ies)|response|what\s*to\s*do|disposition|fix"
    ),
}
_KO_PART = {k: re.compile(f"{_PRE}{core}{_POST}") for k, core in _CORE.items()}
_EN_PART = {k: re.compile(rf"(?:{pat})", re.IGNORECASE) for k, pat in _EN.items()}
_LOOSE = {
    "prevention": re.compile(r"예방|재발\s*방지|방지\s*대책|관리\s*방안|prevent", re.IGNORECASE),
    "cause": re.compile(r"원인|요인|cause", re.IGNORECASE),
    "action": re.compile(r"조치|대응|대책|처리|해결|action|countermeasure|remed", re.IGNORECASE),
}

# ----- line shapes ------------------------------------------------------------------------------------------
_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("chapter", re.compile(r"^제\s*\d{1,3}\s*[장절편부]\.?\s*")),
    ("keycap", re.compile(r"^\d{1,2}\ufe0f?\u20e3\s*")),
    ("num3", re.compile(r"^\d{1,2}\.\d{1,2}\.\d{1,2}\.?\s+")),
    ("num2", re.compile(r"^\d{1,2}\.\d{1,2}\.?\s+")),
    ("numdot", re.compile(r"^\d{1,2}\.(?!\d)\s*")),
    ("numparen", re.compile(r"^\(?\d{1,2}\)\s*")),
    ("circled", re.compile(r"^[\u2460-\u2473\u2776-\u277f]\s*")),
    ("hangul", re.compile(r"^(?:[가-하]\.|\(?[가-하]\))\s+")),
    ("roman", re.compile(r"^(?:[IVX]{1,4}|[ⅠⅡⅢⅣⅤⅥⅦⅧⅨⅩ])[.)]?\s+")),
    ("latin", re.compile(r"^[A-Za-z][.)]\s+")),
    ("square", re.compile(r"^[■□▣◆◇▶▷►▪]\s*")),
    ("circle", re.compile(r"^[○●◎◉]\s*")),
    ("bullet", re.compile(r"^[•·∙◦‣\-–—*※✓✔]\s*")),
)
_BRACKET = re.compile(r"^[\[【〔<〈《(]\s*([^\]】〕>〉》)]{1,30}?)\s*[\]】〕>〉》)]\s*[:：]?\s*(.*)$")
_LEAD_SYMBOLS = re.compile(r"^[^\w\s\[【〔<〈《(\u2460-\u2473]+\s*", re.UNICODE)
_COLON_SPLIT = re.compile(r"^(.{1,24}?)\s*[:：]\s*(.*)$")
_PARENS = re.compile(r"\(([^)]*)\)|（([^）]*)）")
_SENTENCE_END = re.compile(r"(?:[.。!?;]|다|요|함|됨|음|임|것)\s*$")
_DEFECT_WORD = re.compile(r"불량|결함|defect|flaw|failure", re.IGNORECASE)
_GENERIC_LABEL = re.compile(
    r"^(?:증상|현상|개요|특징|정의|판정\s*기준|검사\s*방법|참고|주의|비고|설명|목적|적용\s*범위|"
    r"symptoms?|overview|description|appearance|definition|inspection|notes?|scope|purpose)\b",
    re.IGNORECASE,
)
_SUMMARY = re.compile(r"요약|매핑|summary|overview|목차|contents", re.IGNORECASE)
_DEFECT_COLUMN = re.compile(r"불량|결함|defect|class|유형|항목|name|명칭|구분|type", re.IGNORECASE)
_PAGE_NUMBER = re.compile(
    r"^(?:[-–—\s]*\d{1,4}\s*(?:/\s*\d{1,4})?[-–—\s]*|page\s*\d+(?:\s*of\s*\d+)?|\d+\s*페이지)$", re.I
)
_DIGITS = re.compile(r"\d+")
_MAX_HEADING = 60
_WINDOW = 14

_CUES: dict[PartKind, re.Pattern[str]] = {
    "cause": re.compile(
        r"원인|때문|인해|인한|의해|에 의한|부족|과다|과도|불균일|마모|오염된|발생한다|생긴다|"
        r"due to|caused by|because|"
        r"result(?:s)? (?:of|from)|insufficient|excessive|worn",
        re.IGNORECASE,
    ),
    "action": re.compile(
        r"교체|점검하|조정|제거|격리|재작업|폐기|보정|수리|측정하|재검사|세척|정지|보고|"
        r"replace|adjust|remove|isolate|"
        r"rework|inspect|clean|stop the|repair|quarantine|scrap",
        re.IGNORECASE,
    ),
    "prevention": re.compile(
        r"정기|주기적|예방|방지|교육|매일|매주|매월|매 교대|사전|표준화|모니터링|"
        r"regular|periodic|prevent|train|daily|"
        r"weekly|schedule|monitor",
        re.IGNORECASE,
    ),
}


def part_kind(label: str) -> PartKind | None:
    """The part a heading label names ("발생 원인" -> cause, "Corrective Action" -> action), else None."""
    text = _PARENS.sub(" ", label).strip(" :：-–—.")
    if not text or len(text) > 30:
        return None
    for piece in re.split(r"\s*[/|·]\s*", text):
        squeezed = re.sub(r"[\s·]", "", piece)
        for kind in PART_KINDS:
            if _KO_PART[kind].fullmatch(squeezed) or _EN_PART[kind].fullmatch(piece.strip()):
                return kind
    return None


def loose_part_kind(label: str) -> PartKind | None:
    """A table header's part ("주요 원인", "현장 조치 내용"): the lexicon word anywhere in it."""
    order: tuple[PartKind, ...] = ("prevention", "cause", "action")
    for kind in order:
        if _LOOSE[kind].search(label):
            return kind
    return None


def strip_marker(text: str) -> tuple[str, str]:
    """(family, label): the numbering / bullet family of a line and the line without it."""
    for family, pattern in _MARKERS:
        if m := pattern.match(text):
            return family, text[m.end() :].strip()
    if m := _LEAD_SYMBOLS.match(text):
        rest = text[m.end() :].strip()
        if rest:
            return "symbol", rest
    return "", text


# ----- results ----------------------------------------------------------------------------------------------
@dataclass
class PartText:
    """Text of one part on one page."""

    page: int
    text: str


@dataclass
class Section:
    """One defect section: its heading, where it is, and its parts (lists empty when missing)."""

    title: str
    page: int
    source: str = "heading"  # heading | table | sentences
    description: list[PartText] = field(default_factory=list)
    parts: dict[str, list[PartText]] = field(default_factory=lambda: {k: [] for k in PART_KINDS})
    labels: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, page: int, text: str) -> None:
        """Append a line to a part (a new PartText when the page changes)."""
        chunks = self.parts.setdefault(kind, [])
        if chunks and chunks[-1].page == page:
            chunks[-1].text += "\n" + text
        else:
            chunks.append(PartText(page, text))

    def text(self, kind: str) -> str:
        """The part's whole text."""
        return "\n".join(p.text for p in self.parts.get(kind, []))

    def to_json(self) -> dict[str, Any]:
        """JSON form stored on the manual row."""
        return {
            "title": self.title,
            "page": self.page,
            "source": self.source,
            "description": "\n".join(p.text for p in self.description),
            "labels": self.labels,
            "parts": {
                k: [{"page": p.page, "text": p.text} for p in self.parts.get(k, [])] for k in PART_KINDS
            },
        }


@dataclass
class OtherBlock:
    """Text outside every defect section (introduction, general rules), with its heading."""

    heading: str
    page: int
    lines: list[str] = field(default_factory=list)


@dataclass
class Structure:
    """A manual's defect sections, the rest of its text, and what the parser could not find."""

    sections: list[Section] = field(default_factory=list)
    other: list[OtherBlock] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ----- parsing ----------------------------------------------------------------------------------------------
@dataclass
class _Info:
    line: DocLine
    family: str
    label: str
    kind: PartKind | None = None
    inline: str = ""
    strength: int = -9
    signature: tuple[Any, ...] = ()


def _edge_lines(lines: Sequence[DocLine]) -> set[str]:
    """Running headers/footers: edge lines (digits ignored) repeated on most pages."""
    pages: dict[int, list[str]] = {}
    for ln in lines:
        if not table_row(ln):
            pages.setdefault(ln.page, []).append(ln.text)
    if len(pages) < 2:
        return set()
    counts: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for texts in pages.values():
        counts.update({_DIGITS.sub("#", t) for t in texts[:2] + texts[-2:]})
        total.update(_DIGITS.sub("#", t) for t in texts)
    need = max(2, (len(pages) * 6 + 9) // 10)
    # A running header is once per page; a part heading repeated at page tops is not one.
    return {
        t
        for t, n in counts.items()
        if n >= need and total[t] <= len(pages) and part_kind(strip_marker(t)[1]) is None
    }


def _body_size(lines: Sequence[DocLine]) -> float:
    sizes: Counter[float] = Counter()
    for ln in lines:
        if ln.size and not table_row(ln):
            sizes[round(ln.size)] += len(ln.text)
    return float(sizes.most_common(1)[0][0]) if sizes else 0.0


def _vertical_row(line: DocLine) -> bool:
    """A two-column table row naming a part in its first cell (| 원인 | ... |), read as part text."""
    return len(line.cells) >= 2 and part_kind(line.cells[0]) is not None


def table_row(line: DocLine) -> bool:
    """A row of a defects table (DOCX table, or a PDF line of three or more columns)."""
    return bool(line.cells) and not _vertical_row(line) and (len(line.cells) >= 3 or line.table >= 0)


def _analyse(line: DocLine, body: float) -> _Info:
    family, label = strip_marker(line.text)
    info = _Info(line, family, label)
    if _vertical_row(line):
        info.kind = part_kind(line.cells[0])
        info.label, info.inline = line.cells[0], "\n".join(c for c in line.cells[1:] if c)
        return info
    if m := _BRACKET.match(line.text):
        kind = part_kind(m.group(1))
        if kind is not None:
            info.family, info.kind, info.inline = "bracket", kind, m.group(2).strip()
            info.label = m.group(1).strip()
            return info
        if not m.group(2):
            info.family, info.label = "bracket", m.group(1).strip()
    kind = part_kind(label)
    # A document title in a much larger font ("품질 관리 지침") is not a part heading.
    if kind is not None and not (body and line.size >= body + 3):
        info.kind = kind
        return info
    if (m := _COLON_SPLIT.match(label)) and m.group(2):
        kind = part_kind(m.group(1))
        if kind is not None:
            info.kind, info.inline, info.label = kind, m.group(2).strip(), m.group(1).strip()
            return info
    text = info.label
    if (
        not text
        or len(text) > _MAX_HEADING
        or _SENTENCE_END.search(text)
        or _GENERIC_LABEL.match(text)
        or table_row(line)
    ):
        return info
    strength = 0
    if line.level:
        strength += 4
    if body and line.size >= body + 1:
        strength += 3
    if line.bold:
        strength += 2
    if info.family in ("bullet",):
        strength -= 3
    elif info.family:
        strength += 1
    if _PARENS.search(text):
        strength += 1
    if _DEFECT_WORD.search(text):
        strength += 1
    info.strength = strength
    info.signature = (info.family, line.bold, round(line.size) if line.size else 0, line.level)
    return info


def _tables(lines: Sequence[DocLine]) -> list[list[DocLine]]:
    """Runs of table rows (DOCX tables by index, PDF rows by adjacency)."""
    out: list[list[DocLine]] = []
    key: Any = None
    for ln in lines:
        if not table_row(ln):
            key = None
            continue
        this = ln.table if ln.table >= 0 else "pdf"
        if out and this == key:
            out[-1].append(ln)
        else:
            out.append([ln])
            key = this
    return out


def _table_sections(rows: list[DocLine]) -> list[Section]:
    header = rows[0].cells
    kinds = {i: loose_part_kind(c) for i, c in enumerate(header)}
    parts = {i: k for i, k in kinds.items() if k is not None}
    if not parts:
        return []
    name_col = next(
        (i for i, c in enumerate(header) if i not in parts and _DEFECT_COLUMN.search(c)),
        next((i for i in range(len(header)) if i not in parts), -1),
    )
    if name_col < 0:
        return []
    sections: list[Section] = []
    for row in rows[1:]:
        cells = row.cells + [""] * (len(header) - len(row.cells))
        name = cells[name_col].strip() if name_col < len(cells) else ""
        if not name and sections:
            section = sections[-1]
        elif name:
            section = Section(title=name, page=row.page, source="table")
            sections.append(section)
        else:
            continue
        for i, kind in parts.items():
            if i < len(cells) and cells[i].strip():
                section.add(kind, row.page, cells[i].strip())
                section.labels.setdefault(kind, header[i])
    return sections


def _classify_sentences(section: Section, lines: list[tuple[int, str]]) -> None:
    """No heading names the parts: give each line the part its cues say (the previous one's if none)."""
    previous: PartKind | None = None
    for page, text in lines:
        scores = {k: len(_CUES[k].findall(text)) for k in PART_KINDS}
        best = max(scores.values())
        kind: PartKind | None
        if best == 0:
            kind = previous
        else:
            tied = [k for k in ("prevention", "cause", "action") if scores[k] == best]
            kind = tied[0]  # type: ignore[assignment]
        if kind is None:
            section.description.append(PartText(page, text))
        else:
            section.add(kind, page, text)
            previous = kind
    section.source = "sentences"


def _find_starts(
    flow: Sequence[_Info], style: tuple[Any, ...] | None
) -> tuple[dict[int, int], Counter[tuple[Any, ...]], list[int]]:
    """Section starts (title index -> its first part heading index), title styles and strengths."""
    starts: dict[int, int] = {}
    signatures: Counter[tuple[Any, ...]] = Counter()
    if style is not None:
        signatures[style] = 0  # known before any pick: the first section is found by it too
    strengths: list[int] = []
    seen: list[PartKind] = []
    last_part = -1
    for idx, info in enumerate(flow):
        if info.kind is None:
            continue
        window = range(max(last_part + 1, idx - _WINDOW), idx)
        cands = [j for j in window if flow[j].strength >= 0]
        known = [j for j in cands if flow[j].signature in signatures]
        # A part already seen in this section starts the next one (parts may come in any order).
        new = not seen or info.kind in seen
        pick: int | None = None
        if known:
            pick = known[-1]
        elif new and cands:
            # The nearest line with a real heading signal (style, size, weight, numbering): a document
            # title above the first section is stronger but farther, a plain description line weaker.
            best = max(flow[j].strength for j in cands)
            floor = min(best, 2)
            pick = [j for j in cands if flow[j].strength >= floor][-1]
        elif new and idx > 0 and flow[idx - 1].kind is None and flow[idx - 1].strength >= 0:
            pick = idx - 1
        if pick is not None and pick not in starts:
            starts[pick] = idx
            signatures[flow[pick].signature] += 1
            strengths.append(flow[pick].strength)
            seen = []
        seen.append(info.kind)
        last_part = idx
    return starts, +signatures if style is None else signatures, strengths


def parse_structure(lines: Sequence[DocLine]) -> Structure:
    """Find the defect sections and their parts in a manual's layout lines."""
    edges = _edge_lines(lines)
    kept = [
        ln
        for ln in lines
        if ln.text
        and not (not table_row(ln) and _PAGE_NUMBER.match(ln.text))
        and not (not table_row(ln) and _DIGITS.sub("#", ln.text) in edges)
    ]
    body = _body_size(kept)
    infos = [_analyse(ln, body) for ln in kept]
    flow = [i for i in infos if not table_row(i.line)]

    # Pass 1: each group of part headings is owned by the nearest heading-like line before it. Run again
    # knowing the style most titles share, so a first section under a document title gets its own.
    starts, signatures, strengths = _find_starts(flow, None)
    if signatures:
        style, count = signatures.most_common(1)[0]
        if count >= 2 and any(flow[j].signature != style for j in starts):
            starts, signatures, strengths = _find_starts(flow, style)

    structure = Structure()
    title_strength = min(strengths) if strengths else 99
    if not starts:
        # No part heading anywhere: sections are the most frequent strong heading style, parts by cues.
        styles = Counter(i.signature for i in flow if i.strength >= 1)
        common = [s for s, n in styles.most_common() if n >= 2]
        if common:
            sig = common[0]
            starts = {j: -1 for j, i in enumerate(flow) if i.signature == sig and i.strength >= 1}
            signatures[sig] += 1
            title_strength = min(flow[j].strength for j in starts)

    section: Section | None = None
    part: PartKind | None = None
    loose: list[tuple[int, str]] = []
    other: OtherBlock | None = None
    by_cues = False

    def close() -> None:
        nonlocal loose
        if section is not None and loose:
            _classify_sentences(section, loose)
        loose = []

    for j, info in enumerate(flow):
        ln = info.line
        if j in starts:
            close()
            section = Section(title=info.label.strip(" :："), page=ln.page)
            structure.sections.append(section)
            part, other, by_cues = None, None, starts[j] < 0
            continue
        boundary = info.strength >= 0 and (
            info.signature in signatures
            or info.family == "chapter"
            or info.strength >= max(title_strength, 3)
            or _SUMMARY.search(info.label) is not None
        )
        if boundary:
            close()
            section, part = None, None
            other = OtherBlock(heading=info.label, page=ln.page)
            structure.other.append(other)
            continue
        if section is None:
            if other is None:
                other = OtherBlock(heading="", page=ln.page)
                structure.other.append(other)
            other.lines.append(ln.text)
            continue
        if info.kind is not None:
            part = info.kind
            section.labels.setdefault(part, info.label)
            if info.inline:
                section.add(part, ln.page, info.inline)
            continue
        if part is None:
            if by_cues:
                loose.append((ln.page, ln.text))
            else:
                section.description.append(PartText(ln.page, ln.text))
            continue
        section.add(part, ln.page, ln.text)
    close()

    # Tables: rows are defects; they fill missing parts of the sections above, or are the sections.
    for rows in _tables(kept):
        for row_section in _table_sections(rows):
            match = _same_section(structure.sections, row_section.title)
            if match is None:
                if not [s for s in structure.sections if s.source != "table"]:
                    structure.sections.append(row_section)
                continue
            for kind in PART_KINDS:
                if not match.parts.get(kind) and row_section.parts.get(kind):
                    match.parts[kind] = row_section.parts[kind]
                    match.labels.setdefault(kind, row_section.labels.get(kind, ""))

    # A heading without any part is not a defect section: its text stays searchable as general text.
    for s in structure.sections:
        if not any(s.parts.get(k) for k in PART_KINDS) and s.description:
            structure.other.append(OtherBlock(s.title, s.page, [p.text for p in s.description]))
    structure.sections = [s for s in structure.sections if any(s.parts.get(k) for k in PART_KINDS)]
    if not structure.sections:
        structure.warnings.append("no_sections")
    return structure


def _same_section(sections: Sequence[Section], name: str) -> Section | None:
    """The section a table row names (by shared name tokens), if any."""
    best, score = None, 0.0
    for s in sections:
        value = name_similarity(name, s.title)
        if value > score:
            best, score = s, value
    return best if score >= 0.6 else None
