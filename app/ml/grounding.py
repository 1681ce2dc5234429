"""Grounding check for generated answers: every sentence against the passages it cites and the facts.

A small model writes fluent corrective actions with numbers that are not in the manual ("압력을 3.0 bar로").
Here each sentence of an answer is split off and checked:

- numbers (with their unit), and part / form codes ("QF-102", "P7") must appear in a cited passage or in
  the inspection facts;
- a manual section sentence with none of those must share enough of its wording with a cited passage.

"Cited" means the passages named by the sentence's own tags; a sentence without tags is checked against
the tags of its section, else (its section cites nothing) against every passage given.

Citations are also renumbered per answer: ``[매뉴얼 <db id> p.<page>]`` becomes ``[자료 <n>]`` where ``n``
is the passage's 1-based position in the request, the number the page's legend shows with the file name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.ml.guidance.prompt import inspection_facts
from app.ml.guidance.types import (
    SECTION_NAMES,
    Citation,
    GuidanceRequest,
    GuidanceResult,
    GuidanceSections,
    Passage,
    SectionName,
)

# Tags as the prompt asks for them ([자료 2]) and as the extractive generator / older models write them.
_REF_TAG = re.compile(r"\[\s*자료\s*(\d{1,3})(?:\s*,?\s*p\.?\s*\d+)?\s*\]")
_DB_TAG = re.compile(r"\[\s*매뉴얼\s*([^\]\s]+)\s*p\.?\s*(\d+)\s*\]")
_ANY_TAG = re.compile(rf"{_REF_TAG.pattern}|{_DB_TAG.pattern}")

_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+")
_BULLET = re.compile(r"^\s*(?:[-•·*▪◦]|\d{1,2}[.)]|[①-⑳])\s*")
# Part and form codes: letters then digits, optionally joined by - or _ ("QF-102", "P7", "MP-01-A").
_CODE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{1,6}[-_]?\d{1,6}(?:[-_][A-Za-z0-9]{1,6})*(?![A-Za-z0-9])")
_UNITS = (
    r"mm|cm|㎜|㎝|μm|um|nm|m|km|°C|℃|°|%|bar|MPa|kPa|Pa|psi|kgf|kg|g|N·m|Nm|N|rpm|Hz|kHz|V|mV|A|mA|W|kW"
    r"|ms|s|sec|min|h|초|분|시간|일|주|개월|회|번|매|개|장|배|도|곳|단계|교대|로트|lot"
)
_NUMBER = re.compile(rf"(?<![\w.])(\d+(?:[.,]\d+)?)\s*({_UNITS})?(?![A-Za-z])")
_HANGUL_OR_WORD = re.compile(r"[가-힣A-Za-z0-9]+")
# Sentences that say the manual has nothing on this (the prompt asks for exactly that) claim nothing.
_ABSENCE = re.compile(
    r"(?:매뉴얼|자료|발췌)[^.]{0,30}(?:없습니다|없음|없다|찾지 못)|not (?:in|found in) the manual"
)
# Minimum share of a sentence's character bigrams found in its cited passages.
MIN_OVERLAP = 0.35
_MIN_BIGRAMS = 6


@dataclass(frozen=True)
class Claim:
    """A checkable token of a sentence: a number with its unit, or a code."""

    text: str
    value: float | None = None
    unit: str = ""


@dataclass(frozen=True)
class SentenceCheck:
    """One sentence of an answer and whether its cited passages support it."""

    section: SectionName
    sentence: str
    is_supported: bool
    missing: tuple[str, ...] = ()  # claims found in no cited passage nor in the facts
    overlap: float | None = None


@dataclass(frozen=True)
class GroundingReport:
    """Per-sentence checks of one answer."""

    checks: tuple[SentenceCheck, ...]

    @property
    def unsupported(self) -> dict[SectionName, list[str]]:
        """Per section, the sentences no cited passage supports (empty lists when all are)."""
        out: dict[SectionName, list[str]] = {name: [] for name in SECTION_NAMES}
        for check in self.checks:
            if not check.is_supported:
                out[check.section].append(check.sentence)
        return out

    @property
    def supported_share(self) -> float:
        """Share of checked sentences that are supported (1.0 for an answer with no sentences)."""
        return sum(c.is_supported for c in self.checks) / len(self.checks) if self.checks else 1.0

    @property
    def missing_claims(self) -> int:
        """Numbers and codes found neither in a cited passage nor in the facts."""
        return sum(len(c.missing) for c in self.checks)


def empty_unsupported() -> dict[SectionName, list[str]]:
    """The ``unsupported`` value of an answer with nothing to flag (extractive answers)."""
    return {name: [] for name in SECTION_NAMES}


# ----- citations ------------------------------------------------------------------------------------------
def _ref_for(passages: Sequence[Passage], manual_id: str, page: int) -> int | None:
    for i, p in enumerate(passages, start=1):
        if str(p.manual_id) == manual_id and p.page == page:
            return i
    return None


def renumber_citations(text: str, passages: Sequence[Passage]) -> str:
    """``[매뉴얼 <id> p.<page>]`` -> ``[자료 <n>]`` (n = the passage's position); unknown tags stay.

    Several passages can share a manual page (cause, action and prevention of one defect): the tag goes
    to the one whose text shares most wording with the line it ends.
    """

    def renumber_line(line: str) -> str:
        words = _bigrams(line)

        def swap(m: re.Match[str]) -> str:
            matching = [
                i
                for i, p in enumerate(passages, start=1)
                if str(p.manual_id) == m.group(1) and p.page == int(m.group(2))
            ]
            if not matching:
                return m.group(0)
            best = max(matching, key=lambda i: (len(words & _bigrams(passages[i - 1].text)), -i))
            return f"[자료 {best}]"

        return _DB_TAG.sub(swap, line)

    return "\n".join(renumber_line(line) for line in text.split("\n"))


def cited_refs(text: str, passages: Sequence[Passage]) -> list[int]:
    """1-based passage numbers a text cites, in order, without repeats (invented numbers dropped)."""
    refs: list[int] = []
    for m in _ANY_TAG.finditer(text):
        if m.group(1) is not None:
            ref: int | None = int(m.group(1))
        else:
            ref = _ref_for(passages, m.group(2), int(m.group(3)))
        if ref is not None and 1 <= ref <= len(passages) and ref not in refs:
            refs.append(ref)
    return refs


def _numbered(citations: Sequence[Citation], passages: Sequence[Passage]) -> list[Citation]:
    out: list[Citation] = []
    for c in citations:
        ref = next(
            (
                i
                for i, p in enumerate(passages, start=1)
                if str(p.manual_id) == str(c.manual_id) and p.page == c.page and p.section == c.section
            ),
            None,
        )
        if ref is None:
            ref = _ref_for(passages, str(c.manual_id), c.page)
        out.append(dataclasses.replace(c, ref=ref))
    return out


# ----- claims ---------------------------------------------------------------------------------------------
_UNIT_ALIASES = {"㎜": "mm", "㎝": "cm", "℃": "°C", "um": "μm", "sec": "s", "번": "회", "Nm": "N·m"}


def _to_float(raw: str) -> float:
    return float(raw.replace(",", "."))


def _normal_unit(unit: str) -> str:
    return _UNIT_ALIASES.get(unit, unit)


def claims(text: str) -> list[Claim]:
    """Numbers (with unit) and codes in ``text``, citation tags excluded."""
    text = _ANY_TAG.sub(" ", text)
    found = [Claim(m.group(0).upper()) for m in _CODE.finditer(text) if re.search(r"\d", m.group(0))]
    rest = _CODE.sub(" ", text)
    for m in _NUMBER.finditer(rest):
        found.append(Claim(m.group(0).strip(), _to_float(m.group(1)), _normal_unit(m.group(2) or "")))
    return found


def _decimals(raw: str) -> int:
    number = re.match(r"\d+(?:[.,](\d+))?", raw)
    return len(number.group(1)) if number and number.group(1) else 0


def _number_matches(claim: Claim, source: Claim) -> bool:
    if claim.value is None or source.value is None:
        return False
    if claim.unit and source.unit and claim.unit != source.unit:
        return False
    if claim.value == source.value:
        return True
    # "0.82" stands for a fact written "0.823"; "91%" for "91.0%" (rounded, never invented).
    return round(source.value, _decimals(claim.text)) == claim.value


def is_supported_claim(claim: Claim, sources: Sequence[Claim]) -> bool:
    """Whether a number (same value, compatible unit, or rounded) or code appears among ``sources``."""
    return _supported_claim(claim, sources)


def _supported_claim(claim: Claim, sources: Sequence[Claim]) -> bool:
    if claim.value is None:
        return any(s.value is None and s.text == claim.text for s in sources)
    if claim.unit == "%" and any(s.unit == "%" for s in sources):
        return any(_number_matches(claim, s) for s in sources if s.unit == "%")
    return any(_number_matches(claim, s) for s in sources)


def _bigrams(text: str) -> set[str]:
    grams: set[str] = set()
    for word in _HANGUL_OR_WORD.findall(_ANY_TAG.sub(" ", text).lower()):
        if len(word) == 1:
            grams.add(word)
        grams.update(word[i : i + 2] for i in range(len(word) - 1))
    return grams


# ----- sentences ------------------------------------------------------------------------------------------
def sentences(section_text: str) -> list[str]:
    """The sentences of a section as displayed (bullets stripped, "(매뉴얼 항목: …)" lines skipped)."""
    out: list[str] = []
    for line in section_text.replace("\r\n", "\n").split("\n"):
        line = _BULLET.sub("", line).strip()
        if not line or (line.startswith("(") and line.endswith(")")) or line.startswith("#"):
            continue
        for piece in _SENTENCE_END.split(line):
            piece = piece.strip()
            # A tag split off on its own belongs to the sentence before it.
            if out and _ANY_TAG.fullmatch(piece):
                out[-1] = f"{out[-1]} {piece}"
            elif len(_ANY_TAG.sub("", piece).strip()) >= 2:
                out.append(piece)
    return out


def _texts(refs: Iterable[int], passages: Sequence[Passage]) -> list[str]:
    return [passages[r - 1].text for r in refs]


def check_answer(
    sections: dict[SectionName, str], passages: Sequence[Passage], facts: Sequence[str]
) -> GroundingReport:
    """Check every sentence of the four sections against its cited passages and the facts.

    Args:
        sections: the answer's sections (citation tags either ``[자료 n]`` or ``[매뉴얼 id p.n]``).
        passages: the passages the generator was given, in prompt order.
        facts: the inspection fact lines (true by construction).

    Returns:
        A report with one check per sentence.
    """
    fact_claims = [c for line in facts for c in claims(line)]
    checks: list[SentenceCheck] = []
    for name in SECTION_NAMES:
        section_refs = cited_refs(sections.get(name, ""), passages)
        for sentence in sentences(sections.get(name, "")):
            own = cited_refs(sentence, passages)
            refs = own or section_refs or list(range(1, len(passages) + 1))
            cited = _texts(refs, passages)
            sources = fact_claims + [c for text in cited for c in claims(text)]
            missing = tuple(c.text for c in claims(sentence) if not _supported_claim(c, sources))
            overlap: float | None = None
            ok = not missing
            if ok and name != "status" and not _ABSENCE.search(sentence):
                grams = _bigrams(sentence)
                if len(grams) >= _MIN_BIGRAMS:
                    pool = _bigrams(" ".join([*cited, *facts]))
                    overlap = len(grams & pool) / len(grams)
                    ok = overlap >= MIN_OVERLAP
            checks.append(SentenceCheck(name, sentence, ok, missing, overlap))
    return GroundingReport(tuple(checks))


def ground_result(result: GuidanceResult, request: GuidanceRequest) -> GuidanceResult:
    """Renumber citations per answer and, for generated answers, list the unsupported sentences.

    Extractive answers quote the manual itself: their ``unsupported`` lists are empty.
    """
    passages = request.passages
    sections = GuidanceSections(
        **{name: renumber_citations(text, passages) for name, text in result.sections.as_dict().items()}
    )
    citations = _numbered(result.citations, passages)
    if result.raw_text is None or result.is_fallback:
        return dataclasses.replace(
            result, sections=sections, citations=citations, unsupported=empty_unsupported()
        )
    report = check_answer(sections.as_dict(), passages, inspection_facts(request))  # type: ignore[arg-type]
    return dataclasses.replace(result, sections=sections, citations=citations, unsupported=report.unsupported)
