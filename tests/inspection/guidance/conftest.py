"""Guidance test setup: demo products with indexed manuals, inspections, an OpenAI-compatible double."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.db.tables import Inspection
from app.main import create_app
from tests.conftest import make_settings, png_bytes, seed_users
from tests.manual_library import demo_dataset, install_library

GOOD_ANSWER = (
    "## 불량 현황\n- 금속 판재에서 긁힘 불량이 확인되었습니다.\n"
    "## 원인 분석\n- 이송 롤러의 이물이 표면을 긁습니다. [매뉴얼 {manual_id} p.{page}]\n"
    "## 대응 방안\n- 해당 로트를 격리합니다. [매뉴얼 {manual_id} p.{page}]\n"
    "## 예방 조치\n- 롤러를 교대마다 청소합니다.\n"
)


class ChatDouble(BaseHTTPRequestHandler):
    """Test double of an OpenAI-compatible /chat/completions server (no real LLM server runs here).

    The requested ``model`` picks the behaviour: "good" answers (streaming too), "slow" waits 3 s.
    """

    answer: ClassVar[str] = GOOD_ANSWER
    bodies: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.bodies.append(body)
            if body["model"] == "slow":
                time.sleep(3.0)
            text = self.answer
            if body.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i in range(0, len(text), 9):
                    chunk = {"choices": [{"delta": {"content": text[i : i + 9]}}]}
                    self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                return
            payload = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)


@pytest.fixture(scope="session")
def chat_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatDouble)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "demo-manuals"
    demo_dataset(root)
    return root


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[AppFactory]:
    """Build a client for settings overrides (e.g. an OpenAI-compatible server); closed at the end."""
    stack = contextlib.ExitStack()

    def build(**overrides: Any) -> TestClient:
        settings = make_settings(tmp_path / f"app{len(stack._exit_callbacks)}", **overrides)
        run_migrations(settings)
        client = stack.enter_context(TestClient(create_app(settings)))
        seed_users(settings, client)
        install_library(client.app.state.services)  # type: ignore[attr-defined]
        return client

    yield build
    stack.close()


def add_demo_product(
    client: TestClient, headers: dict[str, str], root: Path, index: int = 0, *, with_manual: bool = True
) -> tuple[int, dict[str, int]]:
    """Create a demo product with its defect types (and its manual, indexed); returns ids."""
    product = demo_dataset(root).products[index]
    pid = int(
        client.post(
            "/api/v1/products", json={"code": product.code, "name": product.name}, headers=headers
        ).json()["id"]
    )
    types: dict[str, int] = {}
    for dt in product.defect_types:
        types[dt.code] = client.post(
            f"/api/v1/products/{pid}/defect-types",
            json={"code": dt.code, "name": dt.name, "description": dt.description},
            headers=headers,
        ).json()["id"]
    if with_manual:
        pdf = (root / product.manual_pdf).read_bytes()
        response = client.post(
            f"/api/v1/products/{pid}/manuals",
            files={"file": ("대응 매뉴얼.pdf", pdf, "application/pdf")},
            headers=headers,
        )
        assert response.status_code == 201
        assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    return pid, types


def make_inspection(
    client: TestClient,
    headers: dict[str, str],
    *,
    product_id: int,
    defect_type_id: int | None = None,
    score: float = 0.91,
) -> int:
    """An uploaded inspection whose search step found ``defect_type_id`` (None = unknown defect).

    The search step belongs to another area, so its stored verdict is written directly here.
    """
    response = client.post(
        "/api/v1/inspections",
        files={"file": ("part.png", png_bytes(), "image/png")},
        data={"product_id": str(product_id)},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    inspection_id = int(response.json()["id"])
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        row.verdict_product_id = product_id
        row.verdict_defect_type_id = defect_type_id
        row.verdict_score = score
        row.is_unknown = defect_type_id is None
        row.status = "searched"
        session.commit()
    return inspection_id
