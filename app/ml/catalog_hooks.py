"""The bridge from catalog changes to loaded engines; later engines (galleries) subscribe here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from app.ml.registry import ModelRegistry

IMAGE_HOOKS = "catalog.image_hooks"


def image_change_hook(models: ModelRegistry) -> Callable[[Sequence[Any], Sequence[Any]], None] | None:
    """A callback that forwards added/removed images to every subscribed engine, or None if none is."""
    hooks: list[Callable[[Sequence[Any], Sequence[Any]], None]] | None = models.get(IMAGE_HOOKS)
    if not hooks:
        return None

    def notify(added: Sequence[Any], removed: Sequence[Any]) -> None:
        for hook in hooks:
            hook(added, removed)

    return notify


def available_choices(models: ModelRegistry) -> dict[str, set[str]]:
    """The model names this server can offer, per settings field (filled in as engines are added)."""
    choices: dict[str, set[str]] | None = models.get("catalog.available_choices")
    return choices or {}
