"""Ingress (issue 14, items 3 and 9): anonymous or oversized bodies are refused before they are read,
with per-route limits; pages carry CSP and no-store; the API docs come from the installed package."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.core.config import MULTIPART_OVERHEAD_BYTES, Settings
from app.core.docs import docs_assets_dir
from app.main import create_app
from tests.conftest import make_settings
from tests.live import live_app, raw_request
from tests.pages import login_page

_MULTIPART_HEAD = (
    "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
    "Content-Type: multipart/form-data; boundary=xx\r\nContent-Length: {length}\r\n"
)


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def _stored_objects(settings: Settings) -> list[Path]:
    root = settings.local_storage_path
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_an_anonymous_upload_is_refused_before_its_body_is_sent(settings: Settings) -> None:
    twenty_mib = 20 * 2**20
    with live_app(settings) as (base, _app):
        # Only the head and 1 KiB of a declared 20 MiB body are sent: the answer must not wait for the rest.
        status, reply = raw_request(
            _port(base),
            _MULTIPART_HEAD.format(path="/api/v1/inspections", auth="", length=twenty_mib),
            b"--xx\r\n" + b"\0" * 1024,
        )
    # Before: the server waited for (and then parsed) the whole body, then answered 401.
    assert status == 401, reply
    assert "로그인이 필요합니다".encode() in reply
    assert _stored_objects(settings) == []


def test_each_route_has_its_own_body_limit(settings: Settings) -> None:
    photo_limit = settings.body_limit("POST", "/api/v1/inspections")
    # one photo per view (several views per inspection), each up to MAX_UPLOAD_BYTES
    assert photo_limit == settings.max_upload_bytes * settings.max_inspection_views + MULTIPART_OVERHEAD_BYTES
    assert settings.body_limit("POST", "/api/v1/products/3/images") > settings.max_zip_bytes
    assert settings.body_limit("POST", "/api/v1/products/3/manuals") > settings.max_manual_bytes
    assert settings.body_limit("POST", "/api/v1/inspections/3/feedback") == settings.max_request_bytes
    with live_app(settings) as (base, _app):
        import httpx

        token = httpx.post(
            f"{base}/api/v1/auth/login", json={"username": "worker1", "password": "worker-pass-123"}
        ).json()["access_token"]
        auth = f"Authorization: Bearer {token}\r\n"
        # A photo body one byte over its route's limit: refused on the declared length alone.
        status, _reply = raw_request(
            _port(base),
            _MULTIPART_HEAD.format(path="/api/v1/inspections", auth=auth, length=photo_limit + 1),
            b"--xx\r\n",
        )
        assert status == 413
        # A JSON route gets the small default (before: every route accepted up to 1 GiB).
        status, reply = raw_request(
            _port(base),
            f"POST /api/v1/inspections/1/feedback HTTP/1.1\r\nHost: x\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {settings.max_request_bytes + 1}\r\n",
            b"{",
        )
        assert status == 413, reply
    assert _stored_objects(settings) == []


def test_pages_are_not_cached_and_carry_a_csp(client: TestClient) -> None:
    login_page(client, "worker1")
    page = client.get("/")
    assert page.status_code == 200
    # Before: no Cache-Control, so the back button on a shared terminal showed the last worker's page.
    assert page.headers["cache-control"] == "no-store"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    # Every inline event handler in the templates is allowed by its hash, and nothing else is inline.
    templates = Path(__file__).resolve().parents[2] / "templates"
    handlers = {
        m for p in templates.rglob("*.html") for m in re.findall(r'\son[a-z]+="([^"]*)"', p.read_text())
    }
    assert handlers <= {"this.form.submit()"}
    assert "strict-transport-security" not in page.headers  # plain HTTP, development


def test_docs_are_served_from_the_package_and_can_be_turned_off(client: TestClient, tmp_path: Path) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower()  # before: Swagger UI came from a public CDN
    assert "<script>" not in docs.text  # no inline script: the CSP allows none
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', docs.text):
        assert client.get(asset).status_code == 200, asset
    assert (docs_assets_dir() / "swagger-ui-bundle.js").is_file()
    redoc = client.get("/redoc")
    assert redoc.status_code == 200
    assert client.get("/docs-assets/redoc.standalone.js").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    off = make_settings(tmp_path / "off", docs_enabled=False)
    run_migrations(off)
    with TestClient(create_app(off)) as closed:
        assert closed.get("/docs").status_code == 404
        assert closed.get("/redoc").status_code == 404
        assert closed.get("/openapi.json").status_code == 404
