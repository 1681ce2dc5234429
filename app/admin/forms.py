"""Helpers shared by the admin screens' form handlers: one-off success notices, redirects, refusals."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from app.core.errors import DomainError
from app.core.i18n import translate
from app.core.templating import render

# The notice a redirect leaves for the next admin page (a known key, nothing else; never sensitive).
FLASH_COOKIE = "dl_flash"
DONE_KEYS = {"created", "saved", "deactivated", "reactivated", "deleted", "password_reset"}


def redirect(path: str, done: str, **params: object) -> RedirectResponse:
    """Post/redirect/get; the next page shows the success notice once (URL stays clean for reloads)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    response = RedirectResponse(f"{path}?{query}" if query else path, status_code=303)
    response.set_cookie(FLASH_COOKIE, done, max_age=60, path="/admin", httponly=True, samesite="lax")
    return response


def render_admin(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """Render an admin page with the pending success notice (if any), then forget the notice."""
    key = request.cookies.get(FLASH_COOKIE)
    context.setdefault("done", translate(f"adm.done.{key}") if key in DONE_KEYS else None)
    response = render(request, name, context, status_code=status_code)
    if key is not None:
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return response


def error_text(exc: DomainError | ValidationError, invalid_key: str) -> tuple[str, int]:
    """The message and status for a refused form (a schema refusal gets the form's own message)."""
    if isinstance(exc, DomainError):
        return translate(exc.message_key, **exc.params), exc.status_code
    return translate(invalid_key), 422


def form_id(value: str) -> int | None:
    """An id typed into / carried by a form, or None when it is not a plain in-range number."""
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)
