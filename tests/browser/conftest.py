"""A live server and the system Chromium for browser tests (no browser download, ever)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from app.core.config import Settings
from app.main import create_app
from tests import services

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(settings: Settings) -> Iterator[tuple[str, Settings]]:
    """The real app served by uvicorn on a loopback port, loading its models at startup as in production.

    (With lazy loading, the first job loaded Kiwi inside the server process and held the GIL for
    seconds; the polling test client then lost a kept-alive connection: connection reset by peer.)
    """
    settings = settings.model_copy(update={"load_models": True})
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", settings
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser_page() -> Iterator[object]:
    """A Playwright page in the system Chromium."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        services.unavailable("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        # Playwright's wait_for_function compiles its predicate with eval, which the app's CSP forbids;
        # the CSP itself is checked in a context of its own (test_security_headers.py).
        context = browser.new_context(
            viewport={"width": 1366, "height": 900}, locale="ko-KR", bypass_csp=True
        )
        yield context.new_page()
        context.close()
        browser.close()


def screenshot(page: object, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path
