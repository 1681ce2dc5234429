"""Services: the long-lived objects one app owns (settings, storage, models), handed to jobs and services."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.observability import Metrics
from app.core.storage import ObjectStorage
from app.ml.registry import ModelRegistry

if TYPE_CHECKING:
    from app.core.images import DecodedPhotos
    from app.core.inference import InferenceGates
    from app.db.tables import ReferenceImage
    from app.ml.batching import ModelBatching

# Told of catalog images added and removed (in that order), after the change is committed.
ImageChangeHook = Callable[[Sequence["ReferenceImage"], Sequence["ReferenceImage"]], None]


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
    # Photos decoded last, shared by the upload's check and the steps after it (None: nothing kept).
    photos: DecodedPhotos | None = None
    # Subscribers to catalog image changes, by owner (the search engine's live galleries): see
    # app.catalog.model_choices.
    image_hooks: dict[str, ImageChangeHook] = field(default_factory=dict)
