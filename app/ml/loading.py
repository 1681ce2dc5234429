"""Startup loading of every engine into the registry (never any embedding or training work)."""

from __future__ import annotations

import logging
from typing import Any

from app.core.config import Settings
from app.ml.registry import ModelRegistry

logger = logging.getLogger(__name__)


def load_models(models: ModelRegistry, *, settings: Settings, session_factory: Any) -> None:
    """Load the configured engines and built artifacts; failures are recorded, not fatal."""
    settings.models_path.mkdir(parents=True, exist_ok=True)
    settings.artifacts_path.mkdir(parents=True, exist_ok=True)
    logger.info("models directory: %s", settings.models_path)
