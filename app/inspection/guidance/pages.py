"""The guidance step page: image comparison, the AI answer (streamed), the worker's record."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.auth.dependencies import CurrentUserDep, get_current_user
from app.core.dependencies import ServicesDep
from app.core.templating import render
from app.db.session import SessionDep
from app.inspection.guidance import service
from app.inspection.guidance.schemas import GuidanceCreate

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])

_TEMPLATE = "worker/inspection/guidance_view.html"


@router.get("/inspect/{inspection_id}/guidance")
def guidance_page(
    inspection_id: int,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUserDep,
    generator: str | None = None,
) -> Response:
    """Step 4: the answer for this inspection and the worker's record."""
    context = service.page_context(
        session, services, inspection_id=inspection_id, user=user, generator=generator
    )
    return render(request, _TEMPLATE, {"step": 4, "inspection_id": inspection_id, **context})


@router.post("/inspect/{inspection_id}/guidance")
def guidance_generate(
    inspection_id: int,
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUserDep,
    generator: Annotated[str, Form()] = "",
) -> Response:
    """Without JavaScript: write the answer, then show the page."""
    service.generate_guidance(
        session,
        services,
        inspection_id=inspection_id,
        user=user,
        body=GuidanceCreate(generator=generator or None),
    )
    return RedirectResponse(f"/inspect/{inspection_id}/guidance", status_code=303)


@router.post("/inspect/{inspection_id}/guidance/feedback")
def guidance_feedback(
    inspection_id: int,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUserDep,
    action_taken: Annotated[str, Form()] = "",
    score: Annotated[str, Form()] = "",
    no_action: Annotated[str, Form()] = "",
) -> Response:
    """Save the worker's record; the page then shows the confirmation."""
    error = None
    if not score.strip().isdigit():
        error = "guidance.pick_score"
    elif not action_taken.strip() and not no_action:
        error = "llm.action_required"
    if error is not None:
        context = service.page_context(
            session, services, inspection_id=inspection_id, user=user, generator=None
        )
        context.update(feedback_error=error, action_taken=action_taken, auto_start=False)
        return render(request, _TEMPLATE, {"step": 4, "inspection_id": inspection_id, **context}, 422)
    service.save_feedback(
        session,
        inspection_id=inspection_id,
        user=user,
        action_taken=action_taken,
        score=int(score),
        no_action=bool(no_action),
    )
    return RedirectResponse(f"/inspect/{inspection_id}/guidance?saved=1", status_code=303)
