"""Admin deploy screens: start, watch, cancel jobs; job history and logs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.auth.dependencies import AdminDep, get_current_user
from app.core.dependencies import RunnerDep, ServicesDep
from app.core.errors import DomainError, InvalidInputError
from app.core.i18n import translate
from app.core.services import Services
from app.core.templating import render, templates
from app.db.session import SessionDep
from app.db.tables import JOB_KINDS
from app.deployments import service
from app.deployments.jobs import artifact_states
from app.deployments.schemas import DeploymentRead
from app.deployments.summary import job_summary

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])

PAGE_SIZE = 10
# Job tables (the deploy screens and the admin dashboard) show each finished job's summary, translated.
templates.env.globals["job_summary"] = job_summary


def _job_json(job: object) -> dict[str, object]:
    return DeploymentRead.model_validate(job).model_dump(mode="json")


@router.get("/admin/deploy/jobs")
def job_list_page(
    request: Request,
    session: SessionDep,
    _: AdminDep,
    kind: str = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    """Every deployment job, newest first, filtered by kind."""
    if kind and kind not in JOB_KINDS:
        raise InvalidInputError("errors.deploy_unknown_kind", kind=kind)
    jobs, total = service.list_jobs(
        session, kind=kind or None, product_id=None, page=page, page_size=PAGE_SIZE
    )
    return render(
        request,
        "admin/deployments/job_list.html",
        {
            "active": "",
            "jobs": jobs,
            "total": total,
            "page": page,
            "page_size": PAGE_SIZE,
            "kind": kind,
            "kinds": JOB_KINDS,
            "product_names": service.product_names(session),
            "screens": service.KIND_SCREENS,
        },
    )


@router.get("/admin/deploy/jobs/{job_id}")
def job_detail_page(job_id: int, request: Request, session: SessionDep, _: AdminDep) -> Response:
    """One job: live progress, elapsed time, estimate, cancel, result and log."""
    job = service.get_job(session, job_id)
    return render(
        request,
        "admin/deployments/job_detail.html",
        {
            "active": "deploy_" + service.KIND_SCREENS.get(job.kind, "search"),
            "job": job,
            "job_json": _job_json(job),
            "product_names": service.product_names(session),
            "screen": service.KIND_SCREENS.get(job.kind, "search"),
        },
    )


@router.post("/admin/deploy/jobs/{job_id}/cancel")
def cancel_job_submit(job_id: int, session: SessionDep, admin: AdminDep) -> Response:
    """Cancel from the page (without JavaScript); back to the job page."""
    service.cancel_job(session, job_id=job_id, actor_id=admin.id)
    return RedirectResponse(f"/admin/deploy/jobs/{job_id}", status_code=303)


def _screen(
    request: Request,
    session: SessionDep,
    services: Services,
    runner: RunnerDep,
    *,
    slug: str,
    page: int,
    focus_job: int | None,
    error: str = "",
    status_code: int = 200,
) -> Response:
    kind = service.kind_for_screen(slug)
    screen = service.deploy_screen(
        session,
        kind=kind,
        states=artifact_states(session, services),
        is_available=kind in runner.handlers,
        page=page,
        page_size=PAGE_SIZE,
    )
    watched = list(screen.active_jobs)
    if focus_job is not None and all(j.id != focus_job for j in watched):
        focused = next((j for j in screen.history if j.id == focus_job), None)
        if focused is None:
            try:
                focused = service.get_job(session, focus_job)
            except DomainError:
                focused = None
        if focused is not None and focused.kind == kind:
            watched.insert(0, focused)
    return render(
        request,
        "admin/deployments/deploy_view.html",
        {
            "active": f"deploy_{slug}",
            "slug": slug,
            "screen": screen,
            "watched": [(job, _job_json(job)) for job in watched],
            "page": page,
            "page_size": PAGE_SIZE,
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/admin/deploy/{slug}")
def deploy_page(
    slug: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    runner: RunnerDep,
    _: AdminDep,
    page: Annotated[int, Query(ge=1)] = 1,
    job: int | None = None,
) -> Response:
    """9. CLIP 임베딩 재구축 / 10. PatchCore 메모리뱅크 생성 / 매뉴얼 인덱스 재구축."""
    return _screen(request, session, services, runner, slug=slug, page=page, focus_job=job)


@router.post("/admin/deploy/{slug}/start")
def start_job_submit(
    slug: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    runner: RunnerDep,
    admin: AdminDep,
    product_id: Annotated[str, Form()] = "",
) -> Response:
    """Start a job for one product or all; show it live on the same screen."""
    kind = service.kind_for_screen(slug)
    try:
        pid = int(product_id) if product_id.strip() else None
    except ValueError:
        pid = -1  # not a number: reported like any unknown product
    try:
        job = service.create_job(session, runner=runner, kind=kind, product_id=pid, actor_id=admin.id)
    except DomainError as exc:
        message = translate(exc.message_key, **exc.params)
        return _screen(
            request,
            session,
            services,
            runner,
            slug=slug,
            page=1,
            focus_job=exc.params.get("id") if exc.message_key == "errors.job_already_running" else None,
            error=message,
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/admin/deploy/{slug}?job={job.id}", status_code=303)
