"""Generator names as people read them: the translated label of a stored generator name."""

from __future__ import annotations

from app.core.i18n import translate
from app.ml.guidance.local_llm import LLM_PRESETS


def generator_label(name: str | None) -> str:
    """The label of a generator name as stored on an inspection ("extractive", "openai:<model>", ...)."""
    if not name:
        return "-"
    if name == "extractive":
        return translate("guidance.generator_label.extractive")
    if name.startswith("openai:"):
        return translate("guidance.generator_label.openai", model=name.split(":", 1)[1])
    if name == "openai":
        return translate("guidance.generator_label.openai_unset")
    if name in LLM_PRESETS:
        return LLM_PRESETS[name].label
    if name.startswith("local:"):
        return translate("llm.generator_label.local", name=name.split(":", 1)[1])
    return name


FALLBACK_REASONS = ("timeout", "unparseable", "unavailable", "http_error", "bad_response", "error")


def fallback_reason_label(reason: str | None) -> str:
    """Why a generated answer was replaced by the manual excerpts, in the user's language."""
    if reason in FALLBACK_REASONS:
        return translate(f"llm.fallback_reason.{reason}")
    return reason or "-"
