"""Per-request context (request id, language, CSRF cookie, security headers, access log, metrics) and the
ingress guard that refuses anonymous or oversized bodies before anything reads them."""

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

from app.core.config import Settings
from app.core.i18n import LANG_COOKIE, current_language, negotiate_language
from app.core.observability import Metrics, request_id_var
from app.core.security import CSRF_COOKIE, SESSION_COOKIE, csrf_for_session, new_csrf_token

logger = logging.getLogger("defectlens.access")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class RequestContextMiddleware:
    """Pure ASGI middleware (safe with streaming responses such as server-sent events)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, settings: Settings) -> None:
        self.app = app
        self.metrics = metrics
        self.default_language = settings.default_language
        self.cookie_secure = settings.cookie_secure
        self.csp = content_security_policy(settings)
        self.hsts = f"max-age={settings.hsts_max_age_s}; includeSubDomains" if settings.hsts_max_age_s else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        incoming = conn.headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex[:16]
        lang = negotiate_language(conn, self.default_language)
        csrf = conn.cookies.get(CSRF_COOKIE)
        session_token = conn.cookies.get(SESSION_COOKIE)
        # With a session the CSRF token is derived from it (bound to that session, new at each login);
        # before login it is a random double-submit token.
        expected = csrf_for_session(session_token) if session_token else csrf
        new_csrf = None if csrf and csrf == expected else (expected or new_csrf_token())
        state: dict[str, Any] = scope.setdefault("state", {})
        state["csrf_token"] = csrf or new_csrf
        state["request_id"] = request_id
        rid_token = request_id_var.set(request_id)
        lang_token = current_language.set(lang)
        started = time.perf_counter()
        status = 500
        secure = "; Secure" if self.cookie_secure else ""
        # Behind TLS: the request came over HTTPS (proxy headers) or the site is declared HTTPS-only.
        over_tls = scope.get("scheme") == "https" or self.cookie_secure

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "same-origin")
                headers.setdefault("x-frame-options", "DENY")
                headers.setdefault("content-security-policy", self.csp)
                if headers.get("content-type", "").startswith("text/html"):
                    # A shared line terminal's back button must not show the last worker's pages.
                    headers.setdefault("cache-control", "no-store")
                if over_tls and self.hsts:
                    headers.setdefault("strict-transport-security", self.hsts)
                sets_csrf = any(
                    value.startswith(f"{CSRF_COOKIE}=") for value in headers.getlist("set-cookie")
                )
                if new_csrf and not sets_csrf:
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


_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_PUBLIC_API_POSTS = {"/api/v1/auth/login"}


def content_security_policy(settings: Settings) -> str:
    """The CSP: only our own scripts; images also from the object store's presigned URLs."""
    stores = ""
    if settings.storage_backend == "s3" and settings.s3_endpoint_url and not settings.s3_serve_via_app:
        parts = settings.s3_endpoint_url.split("/")
        stores = " " + "/".join(parts[:3])
    # The select boxes that submit their form on change are the only inline handler ('unsafe-hashes').
    handler = "'sha256-osjxnKEPL/pQJbFk1dKsF7PYFmTyMWGmVSiL9inhxJY='"
    return (
        "default-src 'self'; "
        f"script-src 'self' 'unsafe-hashes' {handler}; "
        "style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob:{stores}; "
        f"connect-src 'self'{stores}; "
        "media-src 'self' blob:; worker-src 'self' blob:; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )


def _has_credentials(conn: HTTPConnection) -> bool:
    auth = conn.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return True
    return bool(conn.cookies.get(SESSION_COOKIE))


class IngressGuardMiddleware:
    """Refuse, before any body is read or parsed (multipart included):

    - a state-changing API call without credentials (no bearer token, no session cookie): 401;
    - a body over its route's limit (`Settings.body_limit`: photos small, ZIPs and manuals large): 413.

    A declared Content-Length over the limit is refused without reading; a chunked body is counted as it
    streams and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        method, path = scope["method"], scope["path"]
        if (
            method in _UNSAFE_METHODS
            and path.startswith("/api/")
            and path not in _PUBLIC_API_POSTS
            and not _has_credentials(conn)
        ):
            await self._refuse(scope, send, 401, "errors.not_authenticated", "errors.not_authenticated", {})
            return
        max_bytes = self.settings.body_limit(method, path)
        declared = conn.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._too_large(scope, send, max_bytes)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
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
            await self._too_large(scope, send, max_bytes)

    async def _too_large(self, scope: Scope, send: Send, max_bytes: int) -> None:
        limit_mb = max(1, round(max_bytes / 2**20))
        await self._refuse(
            scope, send, 413, "errors.request_too_large", "request_too_large", {"limit_mb": limit_mb}
        )

    async def _refuse(
        self, scope: Scope, send: Send, status: int, key: str, code: str, params: dict[str, Any]
    ) -> None:
        from app.core.i18n import translate

        lang = negotiate_language(HTTPConnection(scope), self.settings.default_language)
        body = json.dumps(
            {"detail": translate(key, lang, **params), "code": code}, ensure_ascii=False
        ).encode()
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
