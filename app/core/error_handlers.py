"""Map domain errors, validation errors and unknown routes to JSON (API) or a page / login redirect (UI)."""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import DomainError
from app.core.i18n import translate
from app.core.templating import render

logger = logging.getLogger(__name__)

_HTTP_KEYS = {
    400: "errors.bad_request",
    401: "errors.not_authenticated",
    403: "errors.forbidden",
    404: "errors.not_found",
    405: "errors.method_not_allowed",
    413: "errors.too_large",
    415: "errors.unsupported_media",
    422: "errors.validation",
}


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return (
        path.startswith("/api/")
        or path in {"/healthz", "/readyz", "/metrics"}
        or (
            "application/json" in request.headers.get("accept", "")
            and "text/html" not in request.headers.get("accept", "")
        )
    )


def _respond(
    request: Request, status: int, message: str, code: str, extra: dict[str, object] | None = None
) -> Response:
    if _wants_json(request):
        body: dict[str, object] = {"detail": message, "code": code}
        body.update(extra or {})
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(body, status_code=status, headers=headers)
    if status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return render(
        request, "common/error_page.html", {"status": status, "message": message}, status_code=status
    )


def register_error_handlers(app: FastAPI) -> None:
    """Install the handlers on the app."""

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        response = _respond(
            request, exc.status_code, translate(exc.message_key, **exc.params), exc.message_key
        )
        if exc.retry_after_s is not None:
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            loc = ".".join(
                str(part) for part in err.get("loc", ()) if part not in {"body", "query", "path", "form"}
            )
            problems.append({"field": loc, "message": str(err.get("msg", ""))})
        fields = ", ".join(p["field"] for p in problems if p["field"]) or "-"
        message = translate("errors.validation_fields", fields=fields)
        return _respond(request, 422, message, "errors.validation", {"errors": problems})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        key = _HTTP_KEYS.get(exc.status_code, "errors.bad_request")
        return _respond(request, exc.status_code, translate(key), key)

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> Response:
        # An id past the database's integer range (SQLite raises while binding it) names nothing.
        return _respond(request, 404, translate("errors.not_found"), "errors.not_found")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", exc_info=exc)
        return _respond(request, 500, translate("errors.internal"), "errors.internal")
