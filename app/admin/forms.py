"""Helpers shared by the admin screens' form handlers: success notices, redirects, refusal messages."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from app.core.errors import DomainError
from app.core.i18n import translate

# Success notices a redirect may ask for (`?done=`); anything else is ignored.
DONE_KEYS = {"created", "saved", "deactivated", "reactivated", "deleted", "password_reset"}


def done_message(done: str | None) -> str | None:
    """The translated success notice for a `?done=` key, if it is one we know."""
    return translate(f"adm.done.{done}") if done in DONE_KEYS else None


def redirect(path: str, done: str, **params: object) -> RedirectResponse:
    """Post/redirect/get with a success notice."""
    query = {k: v for k, v in params.items() if v is not None}
    query["done"] = done
    return RedirectResponse(f"{path}?{urlencode(query)}", status_code=303)


def error_text(exc: DomainError | ValidationError, invalid_key: str) -> tuple[str, int]:
    """The message and status for a refused form (a schema refusal gets the form's own message)."""
    if isinstance(exc, DomainError):
        return translate(exc.message_key, **exc.params), exc.status_code
    return translate(invalid_key), 422
