"""Watched drop folders: a photo written slowly is taken only once complete, a bad file is moved aside with
its reason, temp names are never read, the result reaches the sinks, folders stay inside the allowed roots.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.core.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, bearer, make_settings, png_bytes, seed_users
from tests.integrations.test_sinks import Receiver
from tests.pages import login_page, page_alert

PHOTO = png_bytes((120, 90), (30, 160, 90))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Fast polling, watched folders allowed under tmp/watch."""
    s = make_settings(tmp_path, watch_poll_s=0.1, sink_poll_s=0.2, watch_folder_roots=str(tmp_path / "watch"))
    run_migrations(s)
    return s


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app with admin1 and worker1."""
    with TestClient(create_app(settings)) as test_client:
        seed_users(settings, test_client)
        yield test_client


def _inspections(client: TestClient, admin: dict[str, str]) -> list[dict[str, Any]]:
    return list(client.get("/api/v1/inspections", headers=admin).json()["items"])


def _product(client: TestClient, admin: dict[str, str]) -> int:
    made = client.post("/api/v1/products", json={"code": "cap", "name": "캡"}, headers=admin)
    return int(made.json()["id"])


def _wait(predicate: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_dropped_photos_become_inspections_and_bad_files_are_set_aside(
    client: TestClient, settings: Settings, tmp_path: Path, receiver: Receiver
) -> None:
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    product_id = client.post("/api/v1/products", json={"code": "cap", "name": "캡"}, headers=admin).json()[
        "id"
    ]
    client.post("/api/v1/sinks", json={"name": "mes", "kind": "webhook", "url": receiver.url}, headers=admin)
    folder = tmp_path / "watch" / "line1"
    made = client.post(
        "/api/v1/watch-folders",
        json={"path": str(folder), "product_id": product_id, "username": "worker1", "settle_s": 1.0},
        headers=admin,
    )
    assert made.status_code == 201, made.text

    # A camera writes the first half, pauses, then the rest: nothing is taken while it is incomplete.
    (folder / "shot-001.png").write_bytes(PHOTO[: len(PHOTO) // 2])
    (folder / "shot-002.png.part").write_bytes(PHOTO)  # a writer's temp name: never read
    (folder / "notes.png").write_bytes(b"this is not a photo")
    time.sleep(0.6)
    assert (folder / "shot-001.png").exists()
    with (folder / "shot-001.png").open("ab") as handle:
        handle.write(PHOTO[len(PHOTO) // 2 :])

    _wait(lambda: len(list((folder / "rejected").glob("notes.png*"))) == 2)
    _wait(lambda: len(_inspections(client, admin)) == 1)
    listed_id = _inspections(client, admin)[0]["id"]
    inspection = client.get(f"/api/v1/inspections/{listed_id}", headers=admin).json()
    assert inspection["original_name"] == "shot-001.png"
    assert inspection["username"] == "worker1"
    assert client.get(inspection["image_url"], headers=admin).content == PHOTO  # the whole file, not half
    _wait(lambda: bool(list((folder / "done").rglob("shot-001.png"))))  # moved once analysed
    assert (folder / "shot-002.png.part").exists()
    reason = (folder / "rejected" / "notes.png.reason.txt").read_text(encoding="utf-8")
    assert reason.strip()
    _, message, _ = receiver.next()
    assert message["event"] == "inspection.analyzed"
    assert message["inspection"]["id"] == inspection["id"]

    listed = client.get("/api/v1/watch-folders", headers=admin).json()
    assert (listed[0]["processed"], listed[0]["rejected"]) == (1, 1)
    # Paused: a new photo waits.
    client.post(f"/api/v1/watch-folders/{listed[0]['id']}/pause", headers=admin)
    (folder / "shot-003.png").write_bytes(PHOTO)
    time.sleep(1.5)
    assert (folder / "shot-003.png").exists()
    assert len(_inspections(client, admin)) == 1


def test_folders_must_lie_inside_the_allowed_roots(client: TestClient, tmp_path: Path) -> None:
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    product_id = client.post("/api/v1/products", json={"code": "cap", "name": "캡"}, headers=admin).json()[
        "id"
    ]
    outside = client.post(
        "/api/v1/watch-folders",
        json={"path": "/etc", "product_id": product_id, "username": "worker1"},
        headers=admin,
    )
    assert outside.status_code == 400
    sneaky = client.post(
        "/api/v1/watch-folders",
        json={
            "path": str(tmp_path / "watch" / ".." / "elsewhere"),
            "product_id": product_id,
            "username": "worker1",
        },
        headers=admin,
    )
    assert sneaky.status_code == 400
    nobody = client.post(
        "/api/v1/watch-folders",
        json={"path": str(tmp_path / "watch" / "a"), "product_id": product_id, "username": "ghost"},
        headers=admin,
    )
    assert nobody.status_code == 400
    csrf = login_page(client, "admin1")
    page = client.post(
        "/admin/watch-folders",
        data={
            "csrf_token": csrf,
            "path": "relative/dir",
            "product_id": str(product_id),
            "username": "worker1",
        },
    )
    assert page.status_code == 400
    assert "절대 경로" in page_alert(page.text)
    assert client.get("/api/v1/watch-folders", headers=admin).json() == []
