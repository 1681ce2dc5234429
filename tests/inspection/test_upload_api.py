"""Uploading a photo to inspect: stored once, readable back, and bad input stores nothing."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import Settings
from tests.conftest import png_bytes


def _stored_files(settings: Settings) -> list[Path]:
    root = settings.local_storage_path / "inspections"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_upload_stores_the_photo_and_returns_it(
    client: TestClient, worker_headers: dict[str, str], settings: Settings
) -> None:
    data = png_bytes((320, 240), (10, 200, 30))
    response = client.post(
        "/api/v1/inspections", headers=worker_headers, files={"file": ("부품 사진.png", data, "image/png")}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (320, 240)
    assert body["original_name"] == "부품 사진.png"
    assert body["status"] == "uploaded"
    assert body["username"] == "worker1"
    image = client.get(body["image_url"], headers=worker_headers)
    assert image.status_code == 200
    assert image.content == data
    again = client.get(f"/api/v1/inspections/{body['id']}", headers=worker_headers)
    assert again.json()["id"] == body["id"]
    assert len(_stored_files(settings)) == 1


def test_upload_with_wrong_product_is_404_and_stores_nothing(
    client: TestClient, worker_headers: dict[str, str], settings: Settings
) -> None:
    response = client.post(
        "/api/v1/inspections",
        headers=worker_headers,
        files={"file": ("a.png", png_bytes(), "image/png")},
        data={"product_id": "9999"},
    )
    assert response.status_code == 404
    assert _stored_files(settings) == []


def _bomb_png() -> bytes:
    """A valid PNG header declaring 60000x60000 pixels (a decompression bomb)."""
    import struct

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def test_bad_photos_get_clear_4xx_in_korean_and_store_nothing(
    client: TestClient, worker_headers: dict[str, str], settings: Settings
) -> None:
    truncated = png_bytes((200, 200))[:-60]
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 4), (1, 2, 3)).save(buffer, format="PNG")
    cases = {
        "not an image": (b"%PDF-1.4 not an image", 415),
        "truncated": (truncated, 400),
        "bomb": (_bomb_png(), 413),
        "aspect": (buffer.getvalue(), 400),
        "empty": (b"", 400),
    }
    for label, (data, status) in cases.items():
        response = client.post(
            "/api/v1/inspections", headers=worker_headers, files={"file": ("x.png", data, "image/png")}
        )
        assert response.status_code == status, (label, response.text)
        detail = response.json()["detail"]
        assert any("\uac00" <= ch <= "\ud7a3" for ch in detail), (label, detail)  # Korean by default
    assert _stored_files(settings) == []


def test_over_the_upload_limit_is_413(tmp_path: Path) -> None:
    from app.cli import run_migrations
    from tests.conftest import make_settings, seed_users

    settings = make_settings(tmp_path, max_upload_bytes=2048)
    run_migrations(settings)
    from app.main import create_app

    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        token = client.post("/api/v1/auth/login", json={"username": "worker1", "password": "worker-pass-123"})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        big = png_bytes((400, 400), (5, 5, 5)) + b"\0" * 4096
        response = client.post(
            "/api/v1/inspections",
            headers={**headers, "Accept-Language": "en"},
            files={"file": ("big.png", big, "image/png")},
        )
        assert response.status_code == 413
        assert "MB" in response.json()["detail"]
    assert _stored_files(settings) == []


def test_request_bodies_over_the_request_limit_are_refused_before_parsing(tmp_path: Path) -> None:
    from app.cli import run_migrations
    from tests.conftest import make_settings, seed_users

    # The photo routes' limit: MAX_UPLOAD_BYTES plus 64 KiB of multipart framing.
    settings = make_settings(tmp_path, max_upload_bytes=2048)
    run_migrations(settings)
    from app.main import create_app

    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        token = client.post("/api/v1/auth/login", json={"username": "worker1", "password": "worker-pass-123"})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        response = client.post(
            "/api/v1/inspections", headers=headers, files={"file": ("big.png", b"\0" * 80_000, "image/png")}
        )
        assert response.status_code == 413
        assert response.json()["code"] == "request_too_large"
        assert "요청이 너무 큽니다" in response.json()["detail"]


def test_anonymous_callers_cannot_upload_or_read(client: TestClient) -> None:
    assert (
        client.post("/api/v1/inspections", files={"file": ("a.png", png_bytes(), "image/png")}).status_code
        == 401
    )
    assert client.get("/api/v1/inspections/1").status_code == 401
    assert client.get("/api/v1/inspections/1/image").status_code == 401


def test_wrong_ids_and_unsafe_file_names(client: TestClient, worker_headers: dict[str, str]) -> None:
    assert client.get("/api/v1/inspections/424242", headers=worker_headers).status_code == 404
    created = client.post(
        "/api/v1/inspections", headers=worker_headers, files={"file": ("a.png", png_bytes(), "image/png")}
    ).json()
    bad = client.get(
        f"/api/v1/inspections/{created['id']}/files/..%2F..%2Fsecret.png", headers=worker_headers
    )
    assert bad.status_code in (400, 404)
    missing = client.get(f"/api/v1/inspections/{created['id']}/files/heatmap.png", headers=worker_headers)
    assert missing.status_code == 404
