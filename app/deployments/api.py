"""Deployment job routes (admin)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from app.auth.dependencies import AdminDep, get_current_user
from app.core.dependencies import RunnerDep
from app.db.session import SessionDep
from app.deployments import service
from app.deployments.schemas import (
    DeploymentCreate,
    DeploymentDetail,
    DeploymentPage,
    DeploymentRead,
    JobKind,
)

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(
    prefix="/api/v1/deployments", tags=["deployments"], dependencies=[Depends(get_current_user)]
)


@router.post("", status_code=202)
def create_deployment(
    body: DeploymentCreate, session: SessionDep, admin: AdminDep, runner: RunnerDep
) -> DeploymentRead:
    """Start a background job; poll it or follow its events."""
    job = service.create_job(
        session, runner=runner, kind=body.kind, product_id=body.product_id, actor_id=admin.id
    )
    return DeploymentRead.model_validate(job)


@router.get("")
def list_deployments(
    session: SessionDep,
    _: AdminDep,
    kind: JobKind | None = None,
    product_id: int | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 20,
) -> DeploymentPage:
    """Jobs, newest first."""
    jobs, total = service.list_jobs(session, kind=kind, product_id=product_id, page=page, page_size=page_size)
    return DeploymentPage(items=[DeploymentRead.model_validate(j) for j in jobs], total=total)


@router.get("/{job_id}")
def get_deployment(job_id: int, session: SessionDep, _: AdminDep) -> DeploymentDetail:
    """One job with its log."""
    return DeploymentDetail.model_validate(service.get_job(session, job_id))


@router.post("/{job_id}/cancel")
def cancel_deployment(job_id: int, session: SessionDep, admin: AdminDep) -> DeploymentRead:
    """Cancel a queued or running job."""
    return DeploymentRead.model_validate(service.cancel_job(session, job_id=job_id, actor_id=admin.id))


def _events(factory: sessionmaker[Session], job_id: int, poll_s: float = 0.5) -> Iterator[str]:
    last, last_beat = "", time.monotonic()
    while True:
        with factory() as session:
            job = service.get_job(session, job_id)
            payload = DeploymentRead.model_validate(job).model_dump(mode="json")
        data = json.dumps(payload, ensure_ascii=False)
        if data != last:
            last = data
            yield f"event: progress\ndata: {data}\n\n"
        if payload["status"] not in service.ACTIVE:
            yield f"event: end\ndata: {data}\n\n"
            return
        if time.monotonic() - last_beat > 15:
            last_beat = time.monotonic()
            yield ": keep-alive\n\n"
        time.sleep(poll_s)


@router.get("/{job_id}/events")
def deployment_events(job_id: int, request: Request, session: SessionDep, _: AdminDep) -> StreamingResponse:
    """Server-sent events with the job's progress until it ends."""
    service.get_job(session, job_id)
    return StreamingResponse(
        _events(request.app.state.session_factory, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
