"""Reasons shown to people, as a translation key and its parameters (translated where they are shown).

Engines (app/ml) say why a model can or cannot run without knowing the reader's language; pages and
API responses translate the key with `app.core.i18n.translate(reason.key, **reason.params)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PLAIN_KEY = "engines.plain"

ReasonParam = str | int | float


@dataclass(frozen=True)
class Reason:
    """A translation key with its parameters, e.g. ``Reason("engines.embedder.not_found", {"path": ...})``."""

    key: str
    params: Mapping[str, ReasonParam] = field(default_factory=dict)

    @classmethod
    def plain(cls, text: str) -> Reason:
        """Text that reads the same in every language (a model's own name), under the pass-through key."""
        return cls(PLAIN_KEY, {"text": text})
