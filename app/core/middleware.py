"""Per-request context: request id, language, CSRF cookie, security headers, access log and metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.i18n import LANG_COOKIE, current_language, negotiate_language
from app.core.observability import Metrics, request_id_var
from app.core.security import CSRF_COOKIE, new_csrf_token

logger = logging.getLogger("defectlens.access")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class RequestContextMiddleware:
    """Pure ASGI middleware (safe with streaming responses such as server-sent events)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, default_language: str, cookie_secure: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.default_language = default_language
        self.cookie_secure = cookie_secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        incoming = conn.headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex[:16]
        lang = negotiate_language(conn, self.default_language)
        csrf = conn.cookies.get(CSRF_COOKIE)
        new_csrf = None if csrf else new_csrf_token()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["csrf_token"] = csrf or new_csrf
        state["request_id"] = request_id
        rid_token = request_id_var.set(request_id)
        lang_token = current_language.set(lang)
        started = time.perf_counter()
        status = 500
        secure = "; Secure" if self.cookie_secure else ""

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "same-origin")
                headers.setdefault("x-frame-options", "DENY")
                if new_csrf:
                    headers.append("set-cookie", f"{CSRF_COOKIE}={new_csrf}; Path=/; SameSite=Lax{secure}")
                if conn.query_params.get("lang") == lang:
                    headers.append(
                        "set-cookie", f"{LANG_COOKIE}={lang}; Path=/; Max-Age=31536000; SameSite=Lax{secure}"
                    )
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route_path, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route_path).observe(elapsed)
            logger.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 1), "route": route_path},
            )
            request_id_var.reset(rid_token)
            current_language.reset(lang_token)


class _BodyTooLargeError(Exception):
    """Raised from receive() when a body without Content-Length grows past the limit."""


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413 before anything parses them (multipart included).

    A declared Content-Length over the limit is refused without reading; a chunked body is counted as it
    streams and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = HTTPConnection(scope).headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLargeError:
            if started:
                raise
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        from app.core.i18n import translate

        lang = negotiate_language(HTTPConnection(scope))
        body = json.dumps(
            {
                "detail": translate("errors.request_too_large", lang, limit_mb=self.max_bytes // 2**20),
                "code": "request_too_large",
            },
            ensure_ascii=False,
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
