"""Annotated dependencies shared by all domains: settings, storage, models, job runner, artifact states."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.artifacts import ArtifactStateReader
from app.core.config import Settings
from app.core.jobs import JobRunner
from app.core.services import Services
from app.core.storage import ObjectStorage
from app.ml.registry import ModelRegistry


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_storage(request: Request) -> ObjectStorage:
    """The object store."""
    storage: ObjectStorage = request.app.state.storage
    return storage


def get_models(request: Request) -> ModelRegistry:
    """The loaded models."""
    models: ModelRegistry = request.app.state.models
    return models


def get_runner(request: Request) -> JobRunner:
    """The deployment job runner."""
    runner: JobRunner = request.app.state.runner
    return runner


def get_services(request: Request) -> Services:
    """Settings, storage, models and the session factory of this app (what jobs get as ctx.services)."""
    services: Services = request.app.state.services
    return services


def get_artifact_states(request: Request) -> ArtifactStateReader:
    """Every deployment kind's artifact state reader (wired in by the application: app.main)."""
    reader: ArtifactStateReader = request.app.state.artifact_states
    return reader


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StorageDep = Annotated[ObjectStorage, Depends(get_storage)]
ModelsDep = Annotated[ModelRegistry, Depends(get_models)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
ServicesDep = Annotated[Services, Depends(get_services)]
ArtifactStatesDep = Annotated[ArtifactStateReader, Depends(get_artifact_states)]
