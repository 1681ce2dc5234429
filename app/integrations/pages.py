"""Admin page of the result sinks: the list, a form per kind, test, switch, delete, and the dead letters."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.admin.forms import error_text, form_id, redirect, render_admin
from app.auth.dependencies import AdminDep, get_current_user
from app.catalog import service as catalog_service
from app.core.dependencies import SettingsDep
from app.core.errors import DomainError
from app.db.session import SessionDep
from app.integrations import service, watch
from app.integrations.schemas import SinkCreate, SinkUpdate

router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])


def _page(
    request: Request,
    session: SessionDep,
    *,
    folder_form: dict[str, str] | None = None,
    error: str | None = None,
    form: dict[str, str] | None = None,
    tested: dict[str, object] | None = None,
    status_code: int = 200,
) -> Response:
    return render_admin(
        request,
        "admin/integrations/sink_list.html",
        {
            "active": "sinks",
            "sinks": service.list_sinks(session),
            "products": catalog_service.list_products(session),
            "dead_letters": service.list_deliveries(session, status="failed", sink_id=None, limit=50),
            "error": error,
            "form": form or {"kind": "mqtt", "port": "1883", "topic": "defectlens/{product_code}/{label}"},
            "tested": tested,
            "folders": watch.list_folders(session),
            "folder_form": folder_form or {"settle_s": "2"},
            "roots": watch.allowed_roots(
                request.app.state.settings.watch_folder_roots, request.app.state.settings.data_path
            ),
            "s3_prefixes": watch.allowed_s3_prefixes(request.app.state.settings.watch_s3_prefixes),
        },
        status_code=status_code,
    )


@router.get("/admin/sinks")
def sinks_page(request: Request, session: SessionDep, _: AdminDep) -> Response:
    """결과 전송: where finished inspections go (MQTT, webhooks)."""
    return _page(request, session)


@router.post("/admin/sinks")
def create_sink_submit(
    request: Request,
    session: SessionDep,
    admin: AdminDep,
    name: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "mqtt",
    product_id: Annotated[str, Form()] = "",
    host: Annotated[str, Form()] = "",
    port: Annotated[str, Form()] = "1883",
    topic: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    url: Annotated[str, Form()] = "",
    secret: Annotated[str, Form()] = "",
) -> Response:
    """Add a sink; a refused form comes back with what was typed (never the secrets) and why."""
    form = {"name": name, "kind": kind, "product_id": product_id, "host": host, "port": port}
    form |= {"topic": topic, "username": username, "url": url}
    try:
        sink_in = SinkCreate.model_validate(
            {
                "name": name,
                "kind": kind,
                "product_id": form_id(product_id) if product_id else None,
                "host": host,
                "port": form_id(port) or 0,
                "topic": topic or "defectlens/{product_code}/{label}",
                "username": username,
                "password": password,
                "url": url,
                "secret": secret,
            }
        )
        service.create_sink(session, sink_in=sink_in, actor_id=admin.id)
    except (ValidationError, DomainError) as exc:
        session.rollback()
        message, status = error_text(exc, "errors.sink_form_invalid")
        return _page(request, session, error=message, form=form, status_code=status)
    return redirect("/admin/sinks", "created")


@router.post("/admin/sinks/{sink_id}/{action}")
def sink_action_submit(
    sink_id: int,
    action: Literal["enable", "disable", "delete", "test"],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminDep,
) -> Response:
    """Switch a sink on or off, delete it, or send a test message."""
    try:
        if action == "test":
            result = service.test_sink(session, sink_id=sink_id, base_url=settings.public_base_url or "")
            return _page(
                request, session, tested={"sink_id": sink_id, "ok": result.ok, "detail": result.detail}
            )
        if action == "delete":
            service.delete_sink(session, sink_id=sink_id, actor_id=admin.id)
            return redirect("/admin/sinks", "deleted")
        update = SinkUpdate(is_active=action == "enable")
        service.update_sink(session, sink_id=sink_id, sink_in=update, actor_id=admin.id)
    except DomainError as exc:
        session.rollback()
        message, status = error_text(exc, "errors.sink_form_invalid")
        return _page(request, session, error=message, status_code=status)
    return redirect("/admin/sinks", "saved")


@router.post("/admin/sinks/deliveries/{delivery_id}/retry")
def retry_submit(delivery_id: int, request: Request, session: SessionDep, admin: AdminDep) -> Response:
    """Send a dead letter again."""
    try:
        service.retry_delivery(session, delivery_id=delivery_id, actor_id=admin.id)
    except DomainError as exc:
        session.rollback()
        message, status = error_text(exc, "errors.sink_form_invalid")
        return _page(request, session, error=message, status_code=status)
    return redirect("/admin/sinks", "saved")


@router.post("/admin/watch-folders")
def create_folder_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminDep,
    path: Annotated[str, Form()] = "",
    product_id: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    settle_s: Annotated[str, Form()] = "2",
) -> Response:
    """Watch a drop folder; a refused form comes back with what was typed and why."""
    form = {"path": path, "product_id": product_id, "username": username, "settle_s": settle_s}
    try:
        folder_in = watch.WatchFolderCreate.model_validate(
            {"path": path, "product_id": form_id(product_id) or 0, "username": username, "settle_s": settle_s}
        )
        roots = watch.allowed_roots(settings.watch_folder_roots, settings.data_path)
        watch.create_folder(
            session,
            folder_in=folder_in,
            roots=roots,
            actor_id=admin.id,
            s3_prefixes=watch.allowed_s3_prefixes(settings.watch_s3_prefixes),
        )
    except (ValidationError, DomainError) as exc:
        session.rollback()
        message, status = error_text(exc, "errors.watch_form_invalid")
        return _page(request, session, error=message, folder_form=form, status_code=status)
    return redirect("/admin/sinks", "created")


@router.post("/admin/watch-folders/{folder_id}/{action}")
def folder_action_submit(
    folder_id: int,
    action: Literal["pause", "resume", "delete"],
    request: Request,
    session: SessionDep,
    admin: AdminDep,
) -> Response:
    """Pause, resume or stop watching a folder."""
    try:
        if action == "delete":
            watch.delete_folder(session, folder_id=folder_id, actor_id=admin.id)
            return redirect("/admin/sinks", "deleted")
        watch.set_active(session, folder_id=folder_id, is_active=action == "resume", actor_id=admin.id)
    except DomainError as exc:
        session.rollback()
        message, status = error_text(exc, "errors.watch_form_invalid")
        return _page(request, session, error=message, status_code=status)
    return redirect("/admin/sinks", "saved")
