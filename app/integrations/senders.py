"""Sending one message to one sink: MQTT (QoS 1, waits for the broker's PUBACK) or an HMAC-signed webhook.

A webhook body is signed as Stripe and GitHub do: `X-DefectLens-Signature: sha256=<hex>` is the HMAC-SHA256 of
`{timestamp}.{body}` with the sink's secret, and `X-DefectLens-Timestamp` carries the timestamp, so a receiver
can refuse replays. Each failure raises SinkError with a short reason for the dead-letter list.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
import uuid
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

SEND_TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-DefectLens-Signature"
TIMESTAMP_HEADER = "X-DefectLens-Timestamp"


class SinkError(Exception):
    """The sink did not take the message; the text says why (shown to admins)."""


def encode(payload: dict[str, Any]) -> bytes:
    """The message body: compact UTF-8 JSON."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def topic_for(template: str, payload: dict[str, Any]) -> str:
    """The MQTT topic of a message (placeholders filled from the payload; '/' and wildcards removed)."""
    inspection = payload.get("inspection") or {}
    product = payload.get("product") or (inspection.get("outcome") or {}).get("product") or {}
    values = {
        "product_code": product.get("code") or "none",
        "product_id": product.get("id") or "none",
        "label": (inspection.get("outcome") or {}).get("label") or "pending",
        "event": payload.get("event", ""),
        "inspection_id": inspection.get("id", ""),
    }
    safe = {k: str(v).replace("/", "_").replace("+", "_").replace("#", "_") for k, v in values.items()}
    return template.format(**safe)


def send_webhook(config: dict[str, Any], payload: dict[str, Any], delivery_id: str) -> None:
    """POST the payload; any 2xx is success."""
    body = encode(payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "DefectLens",
        "X-DefectLens-Event": str(payload.get("event", "")),
        "X-DefectLens-Delivery": delivery_id,
        TIMESTAMP_HEADER: timestamp,
    }
    if config.get("secret"):
        headers[SIGNATURE_HEADER] = sign(str(config["secret"]), timestamp, body)
    try:
        response = httpx.post(str(config["url"]), content=body, headers=headers, timeout=SEND_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise SinkError(f"{type(exc).__name__}: {exc}"[:300]) from exc
    if not 200 <= response.status_code < 300:
        raise SinkError(f"HTTP {response.status_code}")


def send_mqtt(config: dict[str, Any], payload: dict[str, Any], delivery_id: str) -> None:
    """Publish with QoS 1 and wait until the broker acknowledged it."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"defectlens-{uuid.uuid4().hex[:12]}"
    )
    client.connect_timeout = SEND_TIMEOUT_S
    if config.get("username"):
        client.username_pw_set(str(config["username"]), str(config.get("password") or "") or None)
    if config.get("tls"):
        client.tls_set_context(ssl.create_default_context())
    try:
        client.connect(str(config["host"]), int(config.get("port") or 1883), keepalive=30)
    except (OSError, ValueError) as exc:
        raise SinkError(f"{type(exc).__name__}: {exc}"[:300]) from exc
    client.loop_start()
    try:
        info = client.publish(topic_for(str(config["topic"]), payload), encode(payload), qos=1)
        info.wait_for_publish(timeout=SEND_TIMEOUT_S)
        if not info.is_published():
            raise SinkError(f"the broker did not acknowledge the message (rc {info.rc})")
    except (RuntimeError, ValueError) as exc:
        raise SinkError(f"{type(exc).__name__}: {exc}"[:300]) from exc
    finally:
        client.disconnect()
        client.loop_stop()


def send(kind: str, config: dict[str, Any], payload: dict[str, Any], delivery_id: str) -> None:
    """Send with the kind's sender."""
    if kind == "mqtt":
        send_mqtt(config, payload, delivery_id)
    elif kind == "webhook":
        send_webhook(config, payload, delivery_id)
    else:
        raise SinkError(f"unknown sink kind {kind!r}")
