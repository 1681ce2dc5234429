"""Guidance and feedback API shapes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class GuidanceCreate(BaseModel):
    """Which generator to use (None = the default) and which defect type (None = the verdict's)."""

    generator: str | None = None
    defect_type_id: int | None = None


class GuidanceSectionsRead(BaseModel):
    """The four answer sections."""

    status: str
    cause: str
    action: str
    prevention: str


class UnsupportedRead(BaseModel):
    """Per section, the sentences of a generated answer that no cited passage supports."""

    status: list[str] = Field(default_factory=list)
    cause: list[str] = Field(default_factory=list)
    action: list[str] = Field(default_factory=list)
    prevention: list[str] = Field(default_factory=list)


class CitationRead(BaseModel):
    """A manual page the answer relies on; ``ref`` is the number the text shows as [자료 n]."""

    ref: int | None = None
    manual_id: int
    page: int
    text: str
    section: str = ""
    manual_name: str = ""
    url: str = ""


class GuidanceRead(BaseModel):
    """A guidance answer as stored on the inspection."""

    sections: GuidanceSectionsRead
    citations: list[CitationRead]
    generator: str
    generator_label: str = ""  # the generator as people read it, in the asker's language
    elapsed_ms: int  # retrieval + generation
    retrieval_ms: int = 0
    generation_ms: int = 0
    is_fallback: bool = False
    fallback_reason: str | None = None
    requested_generator: str | None = None
    product_id: int
    defect_type_id: int | None = None
    defect_name: str = ""
    has_manual: bool = False
    manuals: list[str] = Field(default_factory=list)
    created_at: datetime
    # Grounding check (generated answers only; empty lists for extractive ones) and, beside a generated
    # answer, the manual's own text (the extractive answer) the worker can switch to.
    unsupported: UnsupportedRead = Field(default_factory=UnsupportedRead)
    manual_sections: GuidanceSectionsRead | None = None


class GeneratorRead(BaseModel):
    """One generator and whether it can be used here, by whom."""

    name: str
    label: str
    kind: str
    available: bool
    reason: str
    is_default: bool
    is_allowed: bool
    is_loaded: bool


class FeedbackCreate(BaseModel):
    """The worker's record: what was done and how useful the answer was (1-5, checked by the service).

    An empty ``action_taken`` is refused unless ``no_action`` says explicitly that nothing was done.
    """

    action_taken: str = Field(default="", max_length=5000)
    no_action: bool = False
    score: int


@dataclass(frozen=True)
class GuidanceEvent:
    """One event of a streamed answer ("start", "delta", "result", "error"); the API frames it on the wire."""

    name: Literal["start", "delta", "result", "error"]
    data: dict[str, Any]
