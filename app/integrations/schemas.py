"""Result sinks in and out of the API (secrets are write-only: reads say whether one is set)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SinkKind = Literal["mqtt", "webhook"]
TOPIC_FIELDS = ("product_code", "product_id", "label", "event", "inspection_id")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def check_topic(template: str) -> str:
    """A publishable MQTT topic template: no wildcards, only the known placeholders."""
    template = template.strip()
    if not template or "+" in template or "#" in template or "\x00" in template or len(template) > 200:
        raise ValueError("topic")
    unknown = {name for name in _PLACEHOLDER.findall(template) if name not in TOPIC_FIELDS}
    if unknown:
        raise ValueError("topic")
    return template


class SinkCreate(BaseModel):
    """A new sink; the fields of its kind are required."""

    name: str = Field(min_length=1, max_length=100)
    kind: SinkKind
    product_id: int | None = None
    is_active: bool = True
    # mqtt
    host: str = Field(default="", max_length=255)
    port: int = Field(default=1883, ge=1, le=65535)
    topic: str = Field(default="defectlens/{product_code}/{label}", max_length=200)
    username: str = Field(default="", max_length=255)
    password: str = Field(default="", max_length=255)
    tls: bool = False
    # webhook
    url: str = Field(default="", max_length=2048)
    secret: str = Field(default="", max_length=255)

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _kind_fields(self) -> SinkCreate:
        if self.kind == "mqtt":
            if not self.host.strip():
                raise ValueError("host")
            self.topic = check_topic(self.topic)
        elif not re.match(r"^https?://[^\s/]+", self.url.strip()):
            raise ValueError("url")
        return self

    def config(self) -> dict[str, Any]:
        """What is stored for the kind."""
        if self.kind == "mqtt":
            return {
                "host": self.host.strip(),
                "port": self.port,
                "topic": self.topic,
                "username": self.username,
                "password": self.password,
                "tls": self.tls,
            }
        return {"url": self.url.strip(), "secret": self.secret}


class SinkUpdate(BaseModel):
    """Switch a sink on or off, or rename it."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    is_active: bool | None = None


class SinkRead(BaseModel):
    """A sink as admins see it (no password or secret, only whether one is set)."""

    id: int
    name: str
    kind: SinkKind
    product_id: int | None
    is_active: bool
    target: str
    topic: str | None
    has_secret: bool
    pending: int = 0
    failed: int = 0
    created_at: datetime


class DeliveryRead(BaseModel):
    """One message to one sink."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    sink_id: int
    inspection_id: int | None
    event: str
    status: str
    attempts: int
    last_error: str
    next_attempt_at: datetime
    delivered_at: datetime | None
    created_at: datetime


class SinkTestResult(BaseModel):
    """What a test message did."""

    ok: bool
    detail: str
