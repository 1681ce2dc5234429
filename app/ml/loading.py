"""Directories the engines need; the engines themselves are loaded by app.deployments.jobs.load_artifacts."""

from __future__ import annotations

import logging

from app.core.config import Settings

logger = logging.getLogger(__name__)


def prepare_directories(settings: Settings) -> None:
    """Create the models and artifacts directories (weights are never downloaded)."""
    settings.models_path.mkdir(parents=True, exist_ok=True)
    settings.artifacts_path.mkdir(parents=True, exist_ok=True)
    logger.info("models directory: %s", settings.models_path)
