"""The extractive backend: inspection facts plus the manual's own sentences, each cited (no model)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from app.ml.chunking import SECTION_KINDS, SectionKind
from app.ml.guidance.prompt import citation_of, citation_tag, inspection_facts
from app.ml.guidance.types import (
    SECTION_TITLES,
    Citation,
    GuidanceRequest,
    GuidanceResult,
    GuidanceSections,
    Passage,
)

_SENT_SPLIT = re.compile(r"(?<=[.!?。])\s+|\n+")
# "1." / "2)" numbering needs a space or the end after it: "0.05 mm 이상이면" continues a wrapped sentence.
_BULLET = re.compile(r"^\s*(?:[-•·*▪◦■□○●]\s*|\d{1,2}[.)](?!\d)\s*|[가-하][.)]\s+|[①-⑳]\s*)")
_KIND_WORDS: dict[SectionKind, re.Pattern[str]] = {
    "cause": re.compile(r"원인|때문|발생|마모|과다|부족|불량"),
    "action": re.compile(r"조치|격리|교체|점검|제거|측정|폐기|재검사|정지"),
    "prevention": re.compile(r"예방|정기|관리|준수|매\s*(?:교대|일|주|월)|방지"),
}


_LINE_END = re.compile(r"[.!?。:：]$")


def _unwrap(text: str) -> str:
    """Join PDF line wraps inside a sentence; keep breaks before bullets and after finished sentences."""
    lines: list[str] = []
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if lines and not _BULLET.match(line) and not _LINE_END.search(lines[-1]):
            lines[-1] = f"{lines[-1]} {line}"
        else:
            lines.append(line)
    return "\n".join(lines)


class ExtractiveGenerator:
    """Offline, model-free guidance: inspection facts plus the manual's own sentences, each cited.

    Always available and fast; also the fallback of every LLM backend.

    Args:
        max_sentences: sentences quoted per section.
        max_chars: characters per section (quoted text is cut at sentence boundaries).
    """

    name = "extractive"

    def __init__(self, *, max_sentences: int = 4, max_chars: int = 420) -> None:
        self.max_sentences = max_sentences
        self.max_chars = max_chars

    @classmethod
    def load(cls) -> ExtractiveGenerator:
        """Create the generator (nothing to load)."""
        return cls()

    def _sentences(
        self, passages: Sequence[Passage], kind: SectionKind, seen: set[str]
    ) -> tuple[list[str], list[Passage]]:
        lines: list[str] = []
        used: list[Passage] = []
        total = 0
        for p in passages:
            took = False
            for raw in _SENT_SPLIT.split(_unwrap(p.text)):
                sent = _BULLET.sub("", raw).strip()
                if len(sent) < 4 or sent in seen:
                    continue
                if p.resolved_kind() is None and not _KIND_WORDS[kind].search(sent):
                    continue  # untyped passages contribute only sentences that talk about this kind
                if len(lines) >= self.max_sentences or total + len(sent) > self.max_chars:
                    break
                seen.add(sent)
                total += len(sent)
                lines.append(f"- {sent} {citation_tag(p.manual_id, p.page)}")
                took = True
            if took:
                used.append(p)
        return lines, used

    def generate(self, request: GuidanceRequest) -> GuidanceResult:
        """Build the four sections from facts and retrieved passages."""
        t0 = time.perf_counter()
        status = "\n".join(f"- {line}" for line in inspection_facts(request))
        texts: dict[SectionKind, str] = {}
        citations: list[Citation] = []
        cited: set[tuple[str, int, str]] = set()
        if not request.passages and request.manual_notes:
            texts.update({k: request.manual_notes.get(k, "") for k in SECTION_KINDS})
        elif not request.passages:
            texts["cause"] = (
                "이 제품에는 등록된 대응 매뉴얼이 없어 매뉴얼 근거의 원인 분석을 "
                "제공할 수 없습니다. "
                "제품 매뉴얼(PDF)을 등록하면 해당 불량의 원인을 인용해 안내합니다."
            )
            texts["action"] = (
                "등록된 매뉴얼이 없습니다. 일반 절차로, 해당 부품을 격리하고 품질 담당자에게 보고하세요."
            )
            texts["prevention"] = "등록된 매뉴얼이 없어 예방 조치를 안내할 수 없습니다."
        else:
            seen: set[str] = set()  # a sentence quoted once is never repeated in another section
            for kind in SECTION_KINDS:
                typed = [p for p in request.passages if p.resolved_kind() == kind]
                pool = typed or [p for p in request.passages if p.resolved_kind() is None]
                lines, used = self._sentences(pool, kind, seen)
                if lines:
                    # Name the manual section quoted so a worker can spot a mismatch at a glance.
                    where = ", ".join(dict.fromkeys(p.section for p in used if p.section))
                    texts[kind] = (f"(매뉴얼 항목: {where})\n" if where else "") + "\n".join(lines)
                else:
                    texts[kind] = request.manual_notes.get(kind) or (
                        f"매뉴얼에서 이 불량의 {SECTION_TITLES[kind]} 내용을 찾지 못했습니다."
                    )
                for p in used:
                    key = (str(p.manual_id), p.page, p.section)
                    if key not in cited:
                        cited.add(key)
                        citations.append(citation_of(p))
        sections = GuidanceSections(
            status=status, cause=texts["cause"], action=texts["action"], prevention=texts["prevention"]
        )
        return GuidanceResult(
            sections=sections,
            citations=citations,
            generator=self.name,
            elapsed_ms=int((time.perf_counter() - t0) * 1000),
        )
