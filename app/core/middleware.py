"""Per-request context: request id, language, CSRF cookie, security headers, access log and metrics."""

from __future__ import annotations

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
