"""Result sink routes (admin): configure MQTT and webhook sinks, test them, read and retry dead letters."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import AdminDep, get_current_user
from app.core.dependencies import SettingsDep
from app.db.session import SessionDep
from app.integrations import service, watch
from app.integrations.schemas import DeliveryRead, SinkCreate, SinkRead, SinkTestResult, SinkUpdate
from app.integrations.watch import WatchFolderCreate, WatchFolderRead

router = APIRouter(prefix="/api/v1/sinks", tags=["sinks"], dependencies=[Depends(get_current_user)])
folders_router = APIRouter(
    prefix="/api/v1/watch-folders", tags=["watch folders"], dependencies=[Depends(get_current_user)]
)


@router.get("")
def list_sinks(session: SessionDep, _: AdminDep) -> list[SinkRead]:
    """Every sink with its pending and failed message counts."""
    return service.list_sinks(session)


@router.post("", status_code=201)
def create_sink(sink_in: SinkCreate, session: SessionDep, admin: AdminDep) -> SinkRead:
    """Add an MQTT or webhook sink."""
    return service.create_sink(session, sink_in=sink_in, actor_id=admin.id)


@router.get("/deliveries")
def list_deliveries(
    session: SessionDep,
    _: AdminDep,
    status: Literal["pending", "sending", "delivered", "failed"] | None = None,
    sink_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[DeliveryRead]:
    """Messages newest first; `status=failed` is the dead-letter list."""
    return service.list_deliveries(session, status=status, sink_id=sink_id)


@router.post("/deliveries/{delivery_id}/retry")
def retry_delivery(delivery_id: int, session: SessionDep, admin: AdminDep) -> DeliveryRead:
    """Queue a dead letter again."""
    return service.retry_delivery(session, delivery_id=delivery_id, actor_id=admin.id)


@router.patch("/{sink_id}")
def update_sink(sink_id: int, sink_in: SinkUpdate, session: SessionDep, admin: AdminDep) -> SinkRead:
    """Rename a sink or switch it on or off."""
    return service.update_sink(session, sink_id=sink_id, sink_in=sink_in, actor_id=admin.id)


@router.delete("/{sink_id}", status_code=204)
def delete_sink(sink_id: int, session: SessionDep, admin: AdminDep) -> Response:
    """Remove a sink and its messages."""
    service.delete_sink(session, sink_id=sink_id, actor_id=admin.id)
    return Response(status_code=204)


@router.post("/{sink_id}/test")
async def send_test_message(
    sink_id: int, session: SessionDep, settings: SettingsDep, _: AdminDep
) -> SinkTestResult:
    """Send a test message now and report the result."""
    return await run_in_threadpool(
        service.test_sink, session, sink_id=sink_id, base_url=settings.public_base_url or ""
    )


@folders_router.get("")
def list_watch_folders(session: SessionDep, _: AdminDep) -> list[WatchFolderRead]:
    """Every watched drop folder with its counts."""
    return watch.list_folders(session)


@folders_router.post("", status_code=201)
def create_watch_folder(
    folder_in: WatchFolderCreate, session: SessionDep, settings: SettingsDep, admin: AdminDep
) -> WatchFolderRead:
    """Watch a folder (in WATCH_FOLDER_ROOTS) or an S3 prefix (in WATCH_S3_PREFIXES) for one product."""
    roots = watch.allowed_roots(settings.watch_folder_roots, settings.data_path)
    return watch.create_folder(
        session,
        folder_in=folder_in,
        roots=roots,
        actor_id=admin.id,
        s3_prefixes=watch.allowed_s3_prefixes(settings.watch_s3_prefixes),
    )


@folders_router.post("/{folder_id}/{action}")
def switch_watch_folder(
    folder_id: int, action: Literal["pause", "resume"], session: SessionDep, admin: AdminDep
) -> WatchFolderRead:
    """Pause or resume a folder."""
    return watch.set_active(session, folder_id=folder_id, is_active=action == "resume", actor_id=admin.id)


@folders_router.delete("/{folder_id}", status_code=204)
def delete_watch_folder(folder_id: int, session: SessionDep, admin: AdminDep) -> Response:
    """Stop watching a folder (its files stay)."""
    watch.delete_folder(session, folder_id=folder_id, actor_id=admin.id)
    return Response(status_code=204)
