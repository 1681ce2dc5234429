"""Services: the long-lived objects one app owns (settings, storage, models), handed to jobs and services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.observability import Metrics
from app.core.storage import ObjectStorage
from app.ml.registry import ModelRegistry

if TYPE_CHECKING:
    from app.core.inference import InferenceGates
    from app.ml.batching import ModelBatching


@dataclass
class Services:
    """What a request, a deployment job or a CLI command needs besides its own session."""

    settings: Settings
    storage: ObjectStorage
    models: ModelRegistry
    session_factory: sessionmaker[Session]
    metrics: Metrics
    # The bounded queues in front of search and anomaly (None: unbounded, as in jobs and the CLI).
    inference: InferenceGates | None = None
    # Micro-batching of the request-path models (None: each call runs alone, as in jobs and the CLI).
    batching: ModelBatching | None = None
