"""Results to line systems: a real Mosquitto broker and a real HTTP receiver get every finished inspection;
a receiver that is down never slows an inspection, and its messages end in the dead-letter list to be resent.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from app.cli import run_migrations
from app.integrations.senders import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from app.main import create_app
from tests import services
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, png_bytes, seed_users
from tests.pages import login_page, page_alert, post_form

MQTT_PORT = 1883


class Receiver:
    """A real HTTP server that records what it is sent; `failing` makes it answer 503."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        self.failing = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.failing:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.received.put((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 10) -> tuple[dict[str, str], dict[str, Any], bytes]:
        headers, body = self.received.get(timeout=timeout)
        return headers, json.loads(body), body


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    """The app with a fast outbox (0.2 s) and two tries before a message is dead-lettered."""
    settings = make_settings(tmp_path, sink_poll_s=0.2, sink_max_attempts=2)
    run_migrations(settings)
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        yield client


def _product(client: TestClient, admin: dict[str, str]) -> int:
    made = client.post("/api/v1/products", json={"code": "cap", "name": "배터리 캡"}, headers=admin)
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def _analyze(client: TestClient, worker: dict[str, str], product_id: int) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    response = client.post(
        "/api/v1/analyze",
        files={"file": ("part.png", png_bytes((96, 96)), "image/png")},
        data={"product_id": str(product_id)},
        headers=worker,
    )
    assert response.status_code == 200, response.text
    return response.json(), time.monotonic() - started


@pytest.mark.mqtt
def test_every_analysed_inspection_reaches_the_mqtt_topic(app_client: TestClient) -> None:
    if not services._port_open(MQTT_PORT):
        services.unavailable(f"Mosquitto not reachable at 127.0.0.1:{MQTT_PORT}")
    admin = bearer(app_client, "admin1", ADMIN_PASSWORD)
    worker = bearer(app_client, "worker1", WORKER_PASSWORD)
    product_id = _product(app_client, admin)
    root = f"dltest/{uuid.uuid4().hex[:8]}"
    made = app_client.post(
        "/api/v1/sinks",
        json={
            "name": "MES",
            "kind": "mqtt",
            "host": "127.0.0.1",
            "port": MQTT_PORT,
            "topic": root + "/{product_code}/{event}",
        },
        headers=admin,
    )
    assert made.status_code == 201, made.text
    assert "password" not in made.json()

    messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    listener = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    listener.on_message = lambda _c, _u, message: messages.put(message)
    listener.on_subscribe = lambda *_: subscribed.set()
    listener.connect("127.0.0.1", MQTT_PORT)
    listener.loop_start()
    try:
        listener.subscribe(f"{root}/#", qos=1)
        assert subscribed.wait(5)
        body, _ = _analyze(app_client, worker, product_id)
        message = messages.get(timeout=10)
    finally:
        listener.loop_stop()
        listener.disconnect()
    assert message.topic == f"{root}/cap/inspection.analyzed"
    assert message.qos == 1
    payload = json.loads(message.payload)
    assert payload["inspection"]["id"] == body["inspection"]["id"]
    assert payload["product"]["code"] == "cap"
    assert payload["links"]["api"].endswith(f"/api/v1/inspections/{body['inspection']['id']}")


def test_a_webhook_gets_a_signed_message_when_the_worker_saves_the_record(
    app_client: TestClient, receiver: Receiver
) -> None:
    admin = bearer(app_client, "admin1", ADMIN_PASSWORD)
    worker = bearer(app_client, "worker1", WORKER_PASSWORD)
    product_id = _product(app_client, admin)
    secret = "s3cret-" + uuid.uuid4().hex
    made = app_client.post(
        "/api/v1/sinks",
        json={
            "name": "MES hook",
            "kind": "webhook",
            "url": receiver.url,
            "secret": secret,
            "product_id": product_id,
        },
        headers=admin,
    )
    assert made.status_code == 201, made.text
    assert made.json()["has_secret"] is True
    assert secret not in json.dumps(app_client.get("/api/v1/sinks", headers=admin).json())

    body, _ = _analyze(app_client, worker, product_id)
    headers, analysed, raw = receiver.next()
    assert analysed["event"] == "inspection.analyzed"
    assert headers[SIGNATURE_HEADER] == sign(secret, headers[TIMESTAMP_HEADER], raw)
    assert sign("wrong", headers[TIMESTAMP_HEADER], raw) != headers[SIGNATURE_HEADER]

    inspection_id = body["inspection"]["id"]
    saved = app_client.post(
        f"/api/v1/inspections/{inspection_id}/feedback",
        json={"action_taken": "로트 격리", "score": 4},
        headers=worker,
    )
    assert saved.status_code == 200, saved.text
    _, completed, _ = receiver.next()
    assert completed["event"] == "inspection.completed"
    assert completed["inspection"]["action_taken"] == "로트 격리"
    assert completed["inspection"]["feedback_score"] == 4


def test_a_down_receiver_never_slows_inspections_and_its_messages_can_be_resent(
    app_client: TestClient, receiver: Receiver
) -> None:
    admin = bearer(app_client, "admin1", ADMIN_PASSWORD)
    worker = bearer(app_client, "worker1", WORKER_PASSWORD)
    product_id = _product(app_client, admin)
    app_client.post(
        "/api/v1/sinks", json={"name": "down", "kind": "webhook", "url": receiver.url}, headers=admin
    )
    dead = app_client.post(
        "/api/v1/sinks",
        json={"name": "nobody", "kind": "webhook", "url": "http://127.0.0.1:9/x"},
        headers=admin,
    )
    assert dead.status_code == 201
    receiver.failing = True
    _, elapsed_down = _analyze(app_client, worker, product_id)

    deadline = time.monotonic() + 20
    failed: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(failed) < 2:
        failed = app_client.get("/api/v1/sinks/deliveries?status=failed", headers=admin).json()
        time.sleep(0.2)
    assert len(failed) == 2, failed
    assert all(d["attempts"] == 2 for d in failed)
    assert {d["last_error"][:8] for d in failed} >= {"HTTP 503"}
    # The inspection did not wait for either receiver (sending is in the background).
    assert elapsed_down < 5

    # The admin sees the dead letters, fixes the receiver and sends again.
    csrf = login_page(app_client, "admin1")
    page = app_client.get("/admin/sinks")
    assert page.status_code == 200
    assert "전송 실패 목록" in page.text
    assert "HTTP 503" in page.text
    receiver.failing = False
    to_resend = next(d for d in failed if d["last_error"].startswith("HTTP 503"))
    resent = post_form(app_client, f"/admin/sinks/deliveries/{to_resend['id']}/retry", csrf)
    assert resent.status_code == 200  # type: ignore[attr-defined]
    _, message, _ = receiver.next()
    assert message["event"] == "inspection.analyzed"
    again = app_client.post(f"/api/v1/sinks/deliveries/{to_resend['id']}/retry", headers=admin)
    assert again.status_code == 409


def test_sink_settings_are_checked_and_admin_only(app_client: TestClient) -> None:
    admin = bearer(app_client, "admin1", ADMIN_PASSWORD)
    worker = bearer(app_client, "worker1", WORKER_PASSWORD)
    wildcard = {"name": "x", "kind": "mqtt", "host": "127.0.0.1", "topic": "plant/#"}
    assert app_client.post("/api/v1/sinks", json=wildcard, headers=admin).status_code == 422
    no_url = {"name": "x", "kind": "webhook", "url": "ftp://mes"}
    assert app_client.post("/api/v1/sinks", json=no_url, headers=admin).status_code == 422
    ok = {"name": "x", "kind": "webhook", "url": "http://127.0.0.1:9/x"}
    assert app_client.post("/api/v1/sinks", json=ok, headers=worker).status_code == 403
    assert app_client.get("/api/v1/sinks", headers=admin).json() == []

    csrf = login_page(app_client, "admin1")
    refused = post_form(app_client, "/admin/sinks", csrf, name="bad", kind="mqtt", host="", port="1883")
    assert refused.status_code == 422  # type: ignore[attr-defined]
    assert "올바르지 않습니다" in page_alert(refused.text)  # type: ignore[attr-defined]
    created = app_client.post(
        "/admin/sinks",
        data={"csrf_token": csrf, "name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/"},
    )
    assert created.status_code == 200
    assert "hook" in created.text
    sink_id = app_client.get("/api/v1/sinks", headers=admin).json()[0]["id"]
    result = post_form(app_client, f"/admin/sinks/{sink_id}/test", csrf)
    assert "테스트 전송 실패" in result.text  # type: ignore[attr-defined]
