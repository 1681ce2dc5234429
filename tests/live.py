"""A real uvicorn server on a loopback port, for tests that need real concurrent requests or raw sockets."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.conftest import seed_users


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_app(settings: Settings, *, seed: bool = True) -> Iterator[tuple[str, object]]:
    """Serve create_app(settings) with uvicorn; yields (base URL, app). Users admin1/worker1 are seeded."""
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, timeout_keep_alive=5)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        if seed:
            seed_users(settings, TestClient(app))
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(10)


def raw_request(port: int, head: str, body: bytes = b"", *, timeout: float = 3.0) -> tuple[int, bytes]:
    """Send a request head (and part of a body) on a raw socket; the status line's code and what came
    back before `timeout` (0 when nothing came)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            # The body may follow the head in a later packet: read what Content-Length announces.
            head_part, _, rest = data.partition(b"\r\n\r\n")
            match = re.search(rb"(?im)^content-length:\s*(\d+)", head_part)
            while match and len(rest) < int(match.group(1)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
                data += chunk
        except TimeoutError:
            return (int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0), data
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data
