"""Photos by URL: only listed hosts, never internal addresses unless listed, redirects re-checked, bounded.

A real HTTP server on loopback plays the camera gateway; loopback is internal, so it is reachable only when
its address is listed, which is exactly the rule under test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.core.errors import DomainError
from app.core.url_fetch import UrlPolicy, fetch_url
from app.main import create_app
from tests.conftest import bearer, make_settings, png_bytes, seed_users

PHOTO = png_bytes((80, 60), (200, 40, 40))


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/part.png":
            self._send(200, PHOTO, "image/png")
        elif self.path == "/big.png":
            self._send(200, b"\x89PNG" + b"0" * 300_000, "image/png")
        elif self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
        elif self.path == "/slow.png":
            time.sleep(3)
            self._send(200, PHOTO, "image/png")
        elif self.path == "/page":
            self._send(200, b"<html>not a photo</html>", "text/html")
        else:
            self._send(404, b"", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def camera() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1; yields 'host:port'."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def policy(*hosts: str, max_bytes: int = 100_000, timeout_s: float = 5.0) -> UrlPolicy:
    return UrlPolicy(allowed_hosts=hosts, max_bytes=max_bytes, timeout_s=timeout_s)


def refused(url: str, rules: UrlPolicy) -> DomainError:
    with pytest.raises(DomainError) as caught:
        fetch_url(url, rules)
    return caught.value


def test_a_listed_address_is_fetched(camera: str) -> None:
    fetched = fetch_url(f"http://{camera}/part.png", policy("127.0.0.1"))
    assert fetched.data == PHOTO
    assert fetched.file_name == "part.png"


def test_unlisted_hosts_and_internal_addresses_are_refused(camera: str) -> None:
    port = camera.split(":")[1]
    assert refused(f"http://{camera}/part.png", policy()).message_key == "errors.url_fetch_disabled"
    assert refused(f"http://{camera}/part.png", policy("cameras.example")).status_code == 403
    # Listing the name is not enough: it resolves to loopback, which must be listed itself.
    internal = refused(f"http://localhost:{port}/part.png", policy("localhost"))
    assert internal.message_key == "errors.url_internal_address"
    assert fetch_url(f"http://localhost:{port}/part.png", policy("localhost", "127.0.0.0/8")).data == PHOTO
    assert refused("file:///etc/passwd", policy("127.0.0.1")).message_key == "errors.url_bad_scheme"
    assert refused(f"http://user:pw@{camera}/part.png", policy("127.0.0.1")).status_code == 400


def test_redirects_are_checked_again(camera: str) -> None:
    port = camera.split(":")[1]
    to_unlisted = f"http://{camera}/redirect?to=http://127.0.0.2:{port}/part.png"
    assert refused(to_unlisted, policy("127.0.0.1")).message_key == "errors.url_host_not_allowed"
    to_listed = f"http://{camera}/redirect?to=/part.png"
    assert fetch_url(to_listed, policy("127.0.0.1")).data == PHOTO
    loop = f"http://{camera}/redirect?to=/redirect?to=/redirect?to=/redirect?to=/part.png"
    assert refused(loop, policy("127.0.0.1")).message_key == "errors.url_too_many_redirects"


def test_size_time_and_status_are_bounded(camera: str) -> None:
    assert refused(f"http://{camera}/big.png", policy("127.0.0.1")).status_code == 413
    assert refused(f"http://{camera}/slow.png", policy("127.0.0.1", timeout_s=0.5)).status_code == 408
    assert refused(f"http://{camera}/missing.png", policy("127.0.0.1")).message_key == "errors.url_bad_status"


def test_inspection_by_url_over_the_api(tmp_path: Path, camera: str) -> None:
    settings = make_settings(tmp_path, url_fetch_allowed_hosts="127.0.0.1")
    run_migrations(settings)
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        worker = bearer(client, "worker1", "worker-pass-123")
        made = client.post("/api/v1/inspections", data={"url": f"http://{camera}/part.png"}, headers=worker)
        assert made.status_code == 201, made.text
        assert (made.json()["width"], made.json()["height"]) == (80, 60)
        photo = client.get(made.json()["image_url"], headers=worker)
        assert photo.content == PHOTO

        page = client.post("/api/v1/inspections", data={"url": f"http://{camera}/page"}, headers=worker)
        assert page.status_code == 415
        elsewhere = client.post(
            "/api/v1/inspections", data={"url": "http://127.0.0.2:9/x.png"}, headers=worker
        )
        assert elsewhere.status_code == 403
        assert "허용되지 않은 호스트" in elsewhere.json()["detail"]
        neither = client.post("/api/v1/inspections", data={}, headers=worker)
        assert neither.status_code == 400
        listed = client.get("/api/v1/inspections", headers=worker).json()
        assert listed["total"] == 1  # refused requests stored nothing
