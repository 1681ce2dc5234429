"""The guidance step API: generators, the four-section answer (plain and streamed), the worker's feedback."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.core.dependencies import ServicesDep
from app.db.session import SessionDep
from app.inspection import service as inspection_service
from app.inspection.guidance import service
from app.inspection.guidance.schemas import (
    FeedbackCreate,
    GeneratorRead,
    GuidanceCreate,
    GuidanceEvent,
    GuidanceRead,
)
from app.inspection.schemas import InspectionRead

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["inspections"], dependencies=[Depends(get_current_user)])


def server_sent_events(events: Iterable[GuidanceEvent]) -> Iterator[str]:
    """The wire format of a streamed answer: "event: <name>" and one JSON "data:" line per event."""
    for event in events:
        yield f"event: {event.name}\ndata: {json.dumps(event.data, ensure_ascii=False)}\n\n"


@router.get("/generators")
def list_generators(session: SessionDep, services: ServicesDep, user: CurrentUserDep) -> list[GeneratorRead]:
    """Every generator: whether it can run here (or why not), the default, and whether you may use it."""
    return service.list_generators(session, services, user=user)


@router.post("/inspections/{inspection_id}/guidance")
def create_guidance(
    inspection_id: int,
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUserDep,
    body: GuidanceCreate | None = None,
) -> GuidanceRead:
    """Write the four-section answer from the product's manual and store it on the inspection."""
    return service.generate_guidance(
        session, services, inspection_id=inspection_id, user=user, body=body or GuidanceCreate()
    )


@router.post("/inspections/{inspection_id}/guidance/stream")
def stream_guidance(
    inspection_id: int,
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUserDep,
    body: GuidanceCreate | None = None,
) -> StreamingResponse:
    """The same answer as server-sent events: "start", "delta" pieces as written, then "result"."""
    prepared = service.prepare_guidance(
        session, services, inspection_id=inspection_id, user=user, body=body or GuidanceCreate()
    )
    return StreamingResponse(
        server_sent_events(service.stream_guidance(services, prepared)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/inspections/{inspection_id}/feedback")
def create_feedback(
    inspection_id: int, body: FeedbackCreate, session: SessionDep, user: CurrentUserDep
) -> InspectionRead:
    """Record the action taken and the usefulness score (1-5); the inspection is completed."""
    inspection = service.save_feedback(
        session,
        inspection_id=inspection_id,
        user=user,
        action_taken=body.action_taken,
        score=body.score,
        no_action=body.no_action,
    )
    return inspection_service.to_read(inspection)
