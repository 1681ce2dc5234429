"""The guidance area's Korean and English texts define the same keys (no screen falls back to a key)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LOCALES = Path(__file__).resolve().parents[3] / "app" / "core" / "locales"


def _keys(node: Any, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return {prefix}
    return {k for key, value in node.items() for k in _keys(value, f"{prefix}.{key}" if prefix else key)}


def test_korean_and_english_guidance_texts_match() -> None:
    ko = json.loads((LOCALES / "ko.guidance.json").read_text(encoding="utf-8"))
    en = json.loads((LOCALES / "en.guidance.json").read_text(encoding="utf-8"))
    assert _keys(ko) == _keys(en)
