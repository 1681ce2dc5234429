"""Operations routes, public on purpose: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> Response:
    """Models loaded, database and object storage reachable (503 otherwise)."""
    state = request.app.state
    checks: dict[str, Any] = {}
    ok = True
    try:
        with state.session_factory() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        ok, checks["database"] = False, f"error: {type(exc).__name__}"
    try:
        state.storage.check()
        checks["storage"] = f"ok ({state.storage.backend})"
    except Exception as exc:
        ok, checks["storage"] = False, f"error: {type(exc).__name__}"
    models = state.models.status()
    checks["models"] = models
    ok = ok and bool(models["loaded"])
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
