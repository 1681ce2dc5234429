"""Watched S3 prefixes on the real SeaweedFS: a photo put under the prefix becomes an analysed inspection
and moves to done/, a non-image moves to rejected/ with its reason, two servers scanning at once take each
photo exactly once (the watch_claim row), and prefixes outside WATCH_S3_PREFIXES are refused, translated.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.catalog.service import get_model_settings
from app.cli import run_migrations
from app.core.config import Settings
from app.core.storage import make_s3_client
from app.db.tables import WatchClaim
from app.integrations.watch import FolderWatcher
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, bearer, make_settings, png_bytes, seed_users
from tests.pages import login_page, page_alert

BUCKET = "watchdrop"
PHOTO = png_bytes((120, 90), (30, 160, 90))


def _settings(tmp_path: Path, s3_server: dict[str, str], *, poll_s: float, prefixes: str) -> Settings:
    s = make_settings(
        tmp_path,
        watch_poll_s=poll_s,
        sink_poll_s=0.2,
        watch_folder_roots=str(tmp_path / "watch"),
        watch_s3_prefixes=prefixes,
        s3_endpoint_url=s3_server["endpoint"],
        s3_access_key=s3_server["access_key"],
        s3_secret_key=s3_server["secret_key"],
        s3_region="us-east-1",
    )
    run_migrations(s)
    return s


@pytest.fixture
def s3(s3_server: dict[str, str]) -> Any:
    """A boto3 client on the SeaweedFS server, with the drop bucket made."""
    client = make_s3_client(
        endpoint_url=s3_server["endpoint"],
        access_key=s3_server["access_key"],
        secret_key=s3_server["secret_key"],
        region="us-east-1",
    )
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def run() -> str:
    """A prefix of this test's own in the shared bucket."""
    return f"t{uuid.uuid4().hex[:10]}/"


def _app(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        seed_users(settings, test_client)
        yield test_client


def _keys(s3: Any, prefix: str) -> set[str]:
    found = s3.list_objects(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {str(item["Key"])[len(prefix) :] for item in found}


def _body(s3: Any, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


def _wait(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _watch(client: TestClient, admin: dict[str, str], path: str) -> Any:
    made = client.post("/api/v1/products", json={"code": "cap", "name": "캡"}, headers=admin)
    product_id = made.json()["id"]
    return client.post(
        "/api/v1/watch-folders",
        json={"path": path, "product_id": product_id, "username": "worker1"},
        headers=admin,
    )


def test_a_photo_put_under_the_prefix_is_analysed_and_a_bad_file_is_set_aside(
    tmp_path: Path, s3_server: dict[str, str], s3: Any, run: str
) -> None:
    settings = _settings(tmp_path, s3_server, poll_s=0.1, prefixes=f"s3://{BUCKET}/{run}")
    prefix = f"{run}line1/"
    for client in _app(settings):
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        made = _watch(client, admin, f"s3://{BUCKET}/{run}line1")
        assert made.status_code == 201, made.text
        assert made.json()["path"] == f"s3://{BUCKET}/{prefix}"

        s3.put_object(Bucket=BUCKET, Key=f"{prefix}done/2026-01-01/old.png", Body=PHOTO)  # our own output
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}.processing/stray.png", Body=PHOTO)
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}shot-002.png.part", Body=PHOTO)  # a writer's temp name
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}notes.png", Body=b"this is not a photo")
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}shot-001.png", Body=PHOTO)

        _wait(lambda: {"rejected/notes.png", "rejected/notes.png.reason.txt"} <= _keys(s3, prefix))
        _wait(lambda: any(k.startswith("done/") and k.endswith("/shot-001.png") for k in _keys(s3, prefix)))
        items = client.get("/api/v1/inspections", headers=admin).json()["items"]
        assert len(items) == 1
        inspection = client.get(f"/api/v1/inspections/{items[0]['id']}", headers=admin).json()
        assert inspection["original_name"] == "shot-001.png"
        assert inspection["username"] == "worker1"
        assert client.get(inspection["image_url"], headers=admin).content == PHOTO

        keys = _keys(s3, prefix)
        assert "shot-001.png" not in keys  # moved, not copied
        assert "notes.png" not in keys
        assert {"shot-002.png.part", "done/2026-01-01/old.png", ".processing/stray.png"} <= keys
        done = next(k for k in keys if k.startswith("done/2") and k.endswith("/shot-001.png"))
        assert _body(s3, prefix + done) == PHOTO
        assert _body(s3, f"{prefix}rejected/notes.png") == b"this is not a photo"
        assert _body(s3, f"{prefix}rejected/notes.png.reason.txt").decode("utf-8").strip()

        listed = client.get("/api/v1/watch-folders", headers=admin).json()
        assert (listed[0]["processed"], listed[0]["rejected"], listed[0]["last_error"]) == (1, 1, "")
        with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
            assert session.scalar(select(func.count()).select_from(WatchClaim)) == 0  # released once moved


def test_two_servers_scanning_one_prefix_take_each_photo_exactly_once(
    tmp_path: Path, s3_server: dict[str, str], s3: Any, run: str
) -> None:
    # The app's own watcher never scans (poll once an hour): the two below are the servers.
    settings = _settings(tmp_path, s3_server, poll_s=3600, prefixes=f"s3://{BUCKET}/{run}")
    prefix = f"{run}race/"
    for client in _app(settings):
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        assert _watch(client, admin, f"s3://{BUCKET}/{prefix}").status_code == 201
        photos = {f"cam-{i}.png": png_bytes((80 + i, 60), (20 * i, 90, 200 - 20 * i)) for i in range(4)}
        for name, data in photos.items():
            s3.put_object(Bucket=BUCKET, Key=prefix + name, Body=data)

        services = client.app.state.services  # type: ignore[attr-defined]
        with services.session_factory() as session:  # made on first use; two first uses at once would race
            get_model_settings(session)
        servers = [FolderWatcher(services, poll_s=3600), FolderWatcher(services, poll_s=3600)]
        first = _scan_at_once(servers)
        assert sum(first) == len(photos), first  # each photo taken by one server only
        assert _scan_at_once(servers) == [0, 0]  # nothing left, nothing taken twice

        items = client.get("/api/v1/inspections", headers=admin).json()["items"]
        names = [
            client.get(f"/api/v1/inspections/{i['id']}", headers=admin).json()["original_name"] for i in items
        ]
        assert sorted(names) == sorted(photos)
        done = sorted(k.rpartition("/")[2] for k in _keys(s3, prefix) if k.startswith("done/"))
        assert done == sorted(photos)  # one copy each, no "(2)"
        assert not [k for k in _keys(s3, prefix) if not k.startswith("done/")]
        listed = client.get("/api/v1/watch-folders", headers=admin).json()
        assert (listed[0]["processed"], listed[0]["rejected"]) == (len(photos), 0)
        with services.session_factory() as session:
            assert session.scalar(select(func.count()).select_from(WatchClaim)) == 0


def test_prefixes_outside_watch_s3_prefixes_are_refused(
    tmp_path: Path, s3_server: dict[str, str], s3: Any, run: str
) -> None:
    settings = _settings(tmp_path, s3_server, poll_s=3600, prefixes=f"s3://{BUCKET}/{run}allowed/")
    for client in _app(settings):
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        outside = _watch(client, admin, f"s3://{BUCKET}/{run}other/")
        assert outside.status_code == 400
        assert "허용된 위치 밖" in outside.json()["detail"]
        assert f"s3://{BUCKET}/{run}allowed/" in outside.json()["detail"]
        english = client.post(
            "/api/v1/watch-folders",
            json={"path": f"s3://{BUCKET}/{run}other/", "product_id": 1, "username": "worker1"},
            headers={**admin, "Accept-Language": "en"},
        )
        assert english.status_code == 400
        assert "outside the allowed places" in english.json()["detail"]
        sneaky = _watch_again(client, admin, f"s3://{BUCKET}/{run}allowed/../other/")
        assert sneaky.status_code == 400
        assert "s3://버킷/접두사/" in sneaky.json()["detail"]
        csrf = login_page(client, "admin1")
        page = client.post(
            "/admin/watch-folders",
            data={
                "csrf_token": csrf,
                "path": f"s3://{BUCKET}/elsewhere/",
                "product_id": "1",
                "username": "worker1",
            },
        )
        assert page.status_code == 400
        assert "허용된 위치 밖" in page_alert(page.text)
        assert _watch_again(client, admin, f"s3://{BUCKET}/{run}allowed/line2/").status_code == 201

    off = _settings(tmp_path / "off", s3_server, poll_s=3600, prefixes="")
    for client in _app(off):
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        refused = _watch(client, admin, f"s3://{BUCKET}/{run}allowed/")
        assert refused.status_code == 400
        assert "WATCH_S3_PREFIXES" in refused.json()["detail"]
        assert client.get("/api/v1/watch-folders", headers=admin).json() == []


def _scan_at_once(servers: list[FolderWatcher]) -> list[int]:
    """Every server scans once, all starting together; how many objects each took."""
    start = threading.Barrier(len(servers))
    taken: list[int] = []

    def scan(server: FolderWatcher) -> None:
        start.wait()
        taken.append(server.scan_once())

    threads = [threading.Thread(target=scan, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(taken) == len(servers)
    return taken


def _watch_again(client: TestClient, admin: dict[str, str], path: str) -> Any:
    return client.post(
        "/api/v1/watch-folders", json={"path": path, "product_id": 1, "username": "worker1"}, headers=admin
    )
