"""create_app(): settings, database, storage, models and job runner wired into one FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.auth import api as auth_api
from app.auth import pages as auth_pages
from app.auth import service as auth_service
from app.auth.dependencies import CsrfDep
from app.catalog import api as catalog_api
from app.catalog import pages as catalog_pages
from app.core.config import BASE_DIR, Settings, get_settings
from app.core.docs import docs_assets_dir
from app.core.docs import router as docs_router
from app.core.error_handlers import register_error_handlers
from app.core.health import router as health_router
from app.core.images import DecodedPhotos
from app.core.inference import InferenceGates
from app.core.middleware import IngressGuardMiddleware, RequestContextMiddleware
from app.core.observability import Metrics, configure_logging
from app.core.services import Services
from app.core.storage import make_storage
from app.db.session import make_engine, make_session_factory
from app.deployments import api as deployments_api
from app.deployments import metrics as deployment_metrics
from app.deployments import pages as deployments_pages
from app.deployments import search_index
from app.deployments.jobs import artifact_states, load_artifacts, make_runner, reload_kind
from app.deployments.watcher import ArtifactWatcher
from app.history import api as history_api
from app.history import pages as history_pages
from app.inspection import api as inspection_api
from app.inspection import pages as inspection_pages
from app.inspection.anomaly import api as anomaly_api
from app.inspection.anomaly import pages as anomaly_pages
from app.inspection.guidance import api as guidance_api
from app.inspection.guidance import pages as guidance_pages
from app.inspection.guidance.service import load_generators
from app.inspection.search import api as search_api
from app.inspection.search import pages as search_pages
from app.integrations import api as integrations_api
from app.integrations import pages as integrations_pages
from app.integrations.dispatcher import SinkDispatcher
from app.integrations.watch import FolderWatcher
from app.manuals import api as manuals_api
from app.manuals import pages as manuals_pages
from app.ml.loading import batch_policy, prepare_directories, set_inference_threads

logger = logging.getLogger(__name__)


def _load_generators(services: Services) -> None:
    """Load the answer generators once (a local LLM too); a failure leaves the extractive one to answer."""
    try:
        load_generators(services)
    except Exception as exc:  # a broken LLM must not keep the server from starting
        logger.exception("loading generators failed")
        services.models.set_error("generators", str(exc))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load models once, create the first admin, start the job runner; stop it on shutdown."""
    settings: Settings = app.state.settings
    gates: InferenceGates = app.state.services.inference
    # The gates are the only queue: the thread pool (40 by default) must hold every running and waiting
    # step plus the other requests, or it becomes a second, hidden limit.
    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = max(limiter.total_tokens, gates.thread_pool_size())
    with app.state.session_factory() as session:
        auth_service.ensure_admin_from_settings(session, settings=settings)
    prepare_directories(settings)
    if settings.load_models:
        load_artifacts(app.state.services)
        _load_generators(app.state.services)
    app.state.models.is_loaded = True
    app.state.metrics.models_loaded.set(1)
    app.state.runner.start()
    watcher: ArtifactWatcher | None = None
    if settings.load_models:
        # Job workers and other servers build artifacts and change the catalog: load what they record.
        watcher = ArtifactWatcher(
            app.state.session_factory,
            lambda kind: reload_kind(app.state.services, kind),
            poll_s=settings.artifact_poll_s,
            sync=lambda: search_index.sync_changes(app.state.services),
        )
        watcher.start()
    dispatcher = SinkDispatcher(
        app.state.session_factory,
        poll_s=settings.sink_poll_s,
        max_attempts=settings.sink_max_attempts,
        base_url=settings.public_base_url,
    )
    dispatcher.start()
    folder_watcher = FolderWatcher(app.state.services, poll_s=settings.watch_poll_s)
    folder_watcher.start()
    logger.info(
        "DefectLens ready", extra={"storage": app.state.storage.backend, "device": app.state.models.device}
    )
    try:
        yield
    finally:
        folder_watcher.stop()
        dispatcher.stop()
        if watcher is not None:
            watcher.stop()
        app.state.runner.stop()
        app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application (migrations are run beforehand by `defectlens migrate`)."""
    from app.ml.batching import ModelBatching
    from app.ml.registry import ModelRegistry, resolve_device

    settings = settings or get_settings()
    configure_logging(settings.log_level, json_logs=settings.log_json)
    problems = settings.production_problems()
    if problems:
        raise RuntimeError("refusing to start in production: " + "; ".join(problems))
    app = FastAPI(
        title="DefectLens",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[CsrfDep],
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.database_url, echo=settings.database_echo)
    app.state.session_factory = make_session_factory(app.state.engine)
    app.state.storage = make_storage(settings)
    app.state.metrics = Metrics()
    app.state.models = ModelRegistry(settings.models_path, resolve_device(settings.device))
    gates = InferenceGates.from_settings(settings, app.state.metrics)
    set_inference_threads(settings.inference_threads, running=gates.running_max)
    app.state.services = Services(
        settings=settings,
        storage=app.state.storage,
        models=app.state.models,
        session_factory=app.state.session_factory,
        metrics=app.state.metrics,
        inference=gates,
        batching=ModelBatching(batch_policy(settings, app.state.models.device)),
        photos=DecodedPhotos(settings.decoded_photo_cache_mb * 2**20)
        if settings.decoded_photo_cache_mb
        else None,
    )
    app.state.runner = make_runner(app.state.services)
    # Pages of other domains read artifact states through this (they do not import app.deployments).
    app.state.artifact_states = artifact_states
    app.state.runner.on_finished.append(
        lambda kind, status: app.state.metrics.jobs.labels(kind, status).inc()
    )

    def record_served(kind: str, status: str) -> None:
        # A job this server ran in its own threads swapped its artifact in: the version it now serves.
        if status == "succeeded":
            deployment_metrics.note_loaded(app.state.services, kind)

    app.state.runner.on_finished.append(record_served)
    deployment_metrics.register(app.state.services)

    register_error_handlers(app)
    app.add_middleware(IngressGuardMiddleware, settings=settings)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics, settings=settings)
    app.mount("/static", StaticFiles(directory=str(BASE_DIR / "static")), name="static")
    if settings.docs_enabled:
        app.mount("/docs-assets", StaticFiles(directory=str(docs_assets_dir())), name="docs-assets")
        app.include_router(docs_router)
    for router in (
        health_router,
        auth_api.public_router,
        auth_api.router,
        catalog_api.router,
        deployments_api.router,
        integrations_api.router,
        integrations_api.folders_router,
        manuals_api.router,
        # history first: /inspections and /inspections/stats must win over /inspections/{id}
        history_api.router,
        inspection_api.router,
        search_api.router,
        anomaly_api.router,
        guidance_api.router,
        auth_pages.router,
        inspection_pages.router,
        search_pages.router,
        anomaly_pages.router,
        guidance_pages.router,
        history_pages.router,
        catalog_pages.router,
        manuals_pages.router,
        deployments_pages.router,
        integrations_pages.router,
    ):
        app.include_router(router)
    return app
