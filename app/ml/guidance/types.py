"""The guidance contract shared by every backend: request, passages, the four-section result, errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from app.core.reasons import Reason
from app.ml.chunking import SectionKind, section_kind, split_section

Key = int | str
SectionName = Literal["status", "cause", "action", "prevention"]
SECTION_NAMES: tuple[SectionName, ...] = ("status", "cause", "action", "prevention")
SECTION_TITLES: dict[SectionName, str] = {
    "status": "불량 현황",
    "cause": "원인 분석",
    "action": "대응 방안",
    "prevention": "예방 조치",
}
FallbackReason = Literal["timeout", "unparseable", "unavailable", "http_error", "bad_response", "error"]


@dataclass(frozen=True)
class Passage:
    """A manual excerpt handed to a generator (untrusted text).

    Args:
        manual_id: manual it comes from (shown in citations).
        page: 1-based page.
        section: "defect > subsection" path.
        text: the excerpt.
        kind: "cause" / "action" / "prevention" if known (else derived from ``section``).
        chunk_id: optional chunk id for traceability.
        score: retrieval score (informational).
    """

    manual_id: Key
    page: int
    section: str
    text: str
    kind: SectionKind | None = None
    chunk_id: Key | None = None
    score: float = 0.0

    def resolved_kind(self) -> SectionKind | None:
        """``kind`` or the kind of the section's subsection heading."""
        if self.kind is not None:
            return self.kind
        sub = split_section(self.section)[1]
        return section_kind(sub) if sub else None


@dataclass(frozen=True)
class GuidanceRequest:
    """Everything a generator may use for one inspection.

    Args:
        product_code / product_name: the product.
        defect_code / defect_name / defect_description: verdict (empty for unknown defects).
        is_unknown: no known defect type was similar enough.
        similarity: best similarity to a past defect image (0..1) or None.
        anomaly_score / anomaly_threshold / is_anomaly: PatchCore result (None when not computed).
        regions: anomaly regions, dicts with ``bbox`` [x0, y0, x1, y1] (or x, y, w, h), optional
            ``image_width``/``image_height`` when in pixels, optional ``area_ratio`` and ``score``.
        passages: retrieved manual excerpts (untrusted).
        image_png: the inspected image, sent only to vision backends.
        language: answer language ("ko").
    """

    product_code: str
    product_name: str
    defect_code: str = ""
    defect_name: str = ""
    defect_description: str = ""
    is_unknown: bool = False
    similarity: float | None = None
    anomaly_score: float | None = None
    anomaly_threshold: float | None = None
    is_anomaly: bool | None = None
    regions: list[dict[str, Any]] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    image_png: bytes | None = None
    language: str = "ko"
    # Honest text for a part the manual does not have ("no section for this defect", "no prevention
    # part"), by kind; written by the guidance service in the user's language.
    manual_notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GuidanceSections:
    """The four answer sections (plain text / light markdown)."""

    status: str
    cause: str
    action: str
    prevention: str

    def as_dict(self) -> dict[str, str]:
        """{"status": ..., "cause": ..., "action": ..., "prevention": ...}."""
        return {name: getattr(self, name) for name in SECTION_NAMES}

    def to_markdown(self) -> str:
        """The sections under their "## 불량 현황" ... headings."""
        return "\n\n".join(f"## {SECTION_TITLES[n]}\n{getattr(self, n)}" for n in SECTION_NAMES)


@dataclass(frozen=True)
class Citation:
    """A manual location the answer relies on."""

    manual_id: Key
    page: int
    text: str
    section: str = ""
    chunk_id: Key | None = None
    ref: int | None = None  # the per-answer number shown in the text as [자료 n] (set by grounding)


@dataclass(frozen=True)
class GuidanceResult:
    """Generator output.

    Args:
        sections: the four sections.
        citations: manual locations (manual id + page + excerpt).
        generator: name of the backend that produced ``sections``.
        elapsed_ms: wall time including any failed LLM attempt.
        is_fallback: the LLM failed and the extractive answer was used.
        raw_text: the LLM's raw output (None for extractive).
        fallback_reason: why the fallback happened ("timeout", "unparseable", ...).
        requested_generator: the backend originally asked for.
        unsupported: per section, the sentences no cited passage supports (set by app.ml.grounding;
            None until checked, empty lists for extractive answers).
    """

    sections: GuidanceSections
    citations: list[Citation]
    generator: str
    elapsed_ms: int
    is_fallback: bool = False
    raw_text: str | None = None
    fallback_reason: str | None = None
    requested_generator: str | None = None
    unsupported: dict[SectionName, list[str]] | None = None


class GeneratorError(Exception):
    """A backend could not produce a usable answer; ``reason`` is machine-readable."""

    def __init__(self, reason: FallbackReason, detail: str = "", raw_text: str | None = None) -> None:
        self.reason: FallbackReason = reason
        self.detail = detail
        self.raw_text = raw_text
        super().__init__(f"{reason}: {detail}" if detail else reason)


@runtime_checkable
class Generator(Protocol):
    """A guidance backend."""

    name: str

    def generate(self, request: GuidanceRequest) -> GuidanceResult:
        """Produce the four sections (raises GeneratorError on failure)."""
        ...


@runtime_checkable
class StreamingGenerator(Generator, Protocol):
    """A backend that can also hand out its answer piece by piece as it writes."""

    def stream(self, request: GuidanceRequest) -> Iterator[str]:
        """Yield text pieces (raises GeneratorError on failure; parse the joined text)."""
        ...


@dataclass(frozen=True)
class GeneratorInfo:
    """One selectable backend for settings pages: its label and why it can or cannot run, as keys.

    Args:
        name: the backend name ("extractive", a preset key, "local:<dir>", "openai:<model>").
        label: what people call it (translated where shown).
        kind: the backend family.
        is_available: whether it can run on this server.
        reason: why (not), translated where shown.
        path: the local model folder, if any.
    """

    name: str
    label: Reason
    kind: Literal["extractive", "transformers", "openai"]
    is_available: bool
    reason: Reason
    path: Path | None = None
