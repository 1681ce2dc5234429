"""Section-aware chunking of Korean manuals: every chunk knows its page and "defect > subsection" path."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from langchain_text_splitters import RecursiveCharacterTextSplitter

SectionKind = Literal["cause", "action", "prevention"]
SECTION_KINDS: tuple[SectionKind, ...] = ("cause", "action", "prevention")
SECTION_SEP = " > "

# Order matters: "예방 조치" / "재발 방지 대책" are prevention even though they contain 조치/대책.
_KIND_PATTERNS: tuple[tuple[SectionKind, re.Pattern[str]], ...] = (
    ("prevention", re.compile(r"예방|재발\s*방지|prevent", re.IGNORECASE)),
    ("cause", re.compile(r"원인|cause|root", re.IGNORECASE)),
    (
        "action",
        re.compile(r"조치|대응|처리|처치|대책|해결|수리|재작업|action|countermeasure|remed", re.IGNORECASE),
    ),
)
# Subsection labels that are not defect names (they must not replace the defect heading).
_GENERIC_SUB = re.compile(
    r"^(증상|현상|개요|특징|정의|판정\s*기준|검사\s*방법|참고|주의|비고|설명|symptom|overview)", re.IGNORECASE
)

_CHAPTER = re.compile(r"^제\s*\d{1,3}\s*[장편부]\s*(.*)$")
_SUB_NUM = re.compile(r"^\d{1,2}\.\d{1,2}(?:\.\d{1,2})?\.?\s+(\S.*)$")
_TOP_NUM = re.compile(r"^(\d{1,2})[.)]\s+(\S.*)$")
_BULLET_HEAD = re.compile(r"^[■□▶▷●◆◇◎▣]\s*(\S.*)$")
_BRACKET_HEAD = re.compile(r"^[\[【〔]\s*([^\]】〕]{1,30}?)\s*[\]】〕]$")
_PAREN_NAME = re.compile(r"^[가-힣][가-힣\s·/]{0,20}\s*\([A-Za-z][A-Za-z0-9 .&/_-]{0,40}\)$")
_EN_PARENS = re.compile(r"\([A-Za-z][^)]*\)")
_SENTENCE_END = re.compile(r"([.。!?,;:]|다|세요|[아어해]요|있음|없음|됨|함)$")
_PAGE_NUMBER = re.compile(
    r"^(?:[-–—\s]*\d{1,4}\s*(?:/\s*\d{1,4})?[-–—\s]*|page\s*\d+|\d+\s*페이지)$", re.IGNORECASE
)
_DIGITS = re.compile(r"\d+")
_MAX_HEADING_LEN = 40


class _PageLike(Protocol):
    """Anything with a 1-based page ``number`` and its ``text`` (e.g. pdf_text.PageText)."""

    @property
    def number(self) -> int: ...

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class Chunk:
    """A retrievable piece of a manual.

    Args:
        page: 1-based page the text comes from.
        section: "topic > subsection" path (either part may be missing), e.g. "3. 긁힘 (Scratch) > 발생 원인".
        text: body text (headings excluded; they live in ``section``).
        ordinal: 0-based position of the chunk in the document.
        topic: defect-level heading (or chapter when no defect heading), "" if none.
        subsection: subsection label without numbering, "" if none.
        kind: "cause" / "action" / "prevention" when the subsection is one of those.
    """

    page: int
    section: str
    text: str
    ordinal: int
    topic: str = ""
    subsection: str = ""
    kind: SectionKind | None = None


def section_kind(label: str) -> SectionKind | None:
    """Classify a subsection label: 발생 원인 -> cause, 조치 가이드 -> action, 예방 조치 -> prevention."""
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(label):
            return kind
    return None


def split_section(section: str) -> tuple[str, str]:
    """Split a section path into (topic, subsection); a lone part is a subsection only if it is one."""
    parts = section.split(SECTION_SEP, 1)
    if len(parts) == 2:
        return parts[0], parts[1]
    lone = parts[0]
    if section_kind(lone) is not None or _GENERIC_SUB.match(lone):
        return "", lone
    return lone, ""


def _heading_like(text: str) -> bool:
    return 0 < len(text) <= _MAX_HEADING_LEN and not _SENTENCE_END.search(text)


def _is_sub_label(label: str) -> bool:
    return section_kind(label) is not None or bool(_GENERIC_SUB.match(label))


def _clean_label(label: str) -> str:
    return label.replace(">", "›").strip(" :：-")


def _looks_numbered_heading(line: str) -> bool:
    return any(p.match(line) for p in (_CHAPTER, _SUB_NUM, _TOP_NUM, _BULLET_HEAD, _BRACKET_HEAD))


def _edge_lines(pages: Sequence[_PageLike]) -> set[str]:
    """Running headers/footers: edge lines (digits ignored) repeated on at least half of the pages."""
    if len(pages) < 2:
        return set()
    counts: Counter[str] = Counter()
    for p in pages:
        lines = [ln for ln in p.text.split("\n") if ln.strip()]
        counts.update(
            {
                _DIGITS.sub("#", ln.strip())
                for ln in lines[:2] + lines[-2:]
                if not _looks_numbered_heading(ln.strip())
            }
        )
    need = max(2, (len(pages) * 6 + 9) // 10)
    return {ln for ln, n in counts.items() if n >= need}


@dataclass
class _State:
    chapter: str = ""
    topic: str = ""
    sub: str = ""
    last_top: int = 0
    list_num: int = 0

    def path(self) -> tuple[str, str]:
        return (self.topic or self.chapter), self.sub


def _classify(line: str, st: _State) -> bool:
    """Update the heading state if ``line`` is a heading; return True when it was one."""
    if _CHAPTER.match(line):
        if len(line) > _MAX_HEADING_LEN or line.endswith("."):
            return False
        st.chapter, st.topic, st.sub, st.last_top, st.list_num = _clean_label(line), "", "", 0, 0
        return True
    if (m := _SUB_NUM.match(line)) and _heading_like(line):
        st.sub, st.list_num = _clean_label(m.group(1)), 0
        return True
    if (m := _TOP_NUM.match(line)) and _heading_like(line):
        num, label = int(m.group(1)), m.group(2)
        if _is_sub_label(label):
            st.sub, st.list_num = _clean_label(label), 0
            return True
        continues_list = st.list_num > 0 and num == st.list_num + 1
        next_heading = st.last_top == 0 or num == st.last_top + 1 or not st.sub
        if (next_heading and not continues_list) or _EN_PARENS.search(label):
            st.topic, st.sub, st.last_top, st.list_num = _clean_label(line), "", num, 0
            return True
        return False
    for pattern in (_BULLET_HEAD, _BRACKET_HEAD):
        if (m := pattern.match(line)) and _heading_like(m.group(1)):
            label = m.group(1)
            if not _is_sub_label(label) and _EN_PARENS.search(label):
                st.topic, st.sub, st.list_num = _clean_label(label), "", 0
            else:
                st.sub, st.list_num = _clean_label(label), 0
            return True
    if _PAREN_NAME.match(line):
        label = _clean_label(line)
        if _is_sub_label(label.split("(")[0]):
            st.sub = label
        else:
            st.topic, st.sub = label, ""
        st.list_num = 0
        return True
    return False


def chunk_pages(pages: Sequence[_PageLike], *, chunk_size: int = 500, chunk_overlap: int = 80) -> list[Chunk]:
    """Split manual pages into section-aware chunks.

    Args:
        pages: page texts in order (e.g. ``ParsedPdf.pages``).
        chunk_size: maximum characters per chunk.
        chunk_overlap: characters shared by consecutive chunks of the same section block.

    Returns:
        Chunks in document order. A chunk never spans two sections or two pages; the heading state
        (chapter, defect heading, subsection) carries across page breaks.
    """
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size,
        chunk_overlap=min(chunk_overlap, chunk_size // 2),
        separators=["\n\n", "\n", ". ", " ", ""],
    )
    edges = _edge_lines(pages)
    st = _State()
    blocks: list[tuple[int, str, str, list[str]]] = []
    for page in pages:
        current: list[str] | None = None
        for raw in page.text.split("\n"):
            line = raw.strip()
            if not line or _PAGE_NUMBER.match(line) or _DIGITS.sub("#", line) in edges:
                continue
            if _classify(line, st):
                current = None
                continue
            if m := _TOP_NUM.match(line):
                st.list_num = int(m.group(1))
            if current is None:
                topic, sub = st.path()
                current = []
                blocks.append((page.number, topic, sub, current))
            current.append(line)

    chunks: list[Chunk] = []
    for page_no, topic, sub, lines in blocks:
        section = SECTION_SEP.join(p for p in (topic, sub) if p)
        kind = section_kind(sub) if sub else None
        for piece in splitter.split_text("\n".join(lines)):
            text = piece.strip()
            if text:
                chunks.append(
                    Chunk(
                        page=page_no,
                        section=section,
                        text=text,
                        ordinal=len(chunks),
                        topic=topic,
                        subsection=sub,
                        kind=kind,
                    )
                )
    return chunks
