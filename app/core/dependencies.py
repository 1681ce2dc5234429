"""Annotated dependencies shared by all domains: settings, storage, models, job runner."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.core.services import Services
from app.core.storage import ObjectStorage
from app.deployments.runner import JobRunner
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


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StorageDep = Annotated[ObjectStorage, Depends(get_storage)]
ModelsDep = Annotated[ModelRegistry, Depends(get_models)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
ServicesDep = Annotated[Services, Depends(get_services)]
