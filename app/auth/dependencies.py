"""Who is calling: the current user from a bearer token or the session cookie, role checks, CSRF."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.auth import service
from app.core.dependencies import SettingsDep
from app.core.errors import NotAuthenticatedError, PermissionDeniedError
from app.core.security import (
    CSRF_COOKIE,
    CSRF_FORM_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    csrf_for_session,
    csrf_matches,
)
from app.db.session import SessionDep
from app.db.tables import User

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def request_token(request: Request) -> tuple[str | None, bool]:
    """The caller's token and whether it came from the (ambient) session cookie."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None, False
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie or None), bool(cookie)


async def _submitted_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FORM_FIELD)
        return value if isinstance(value, str) else None
    return None


async def csrf_protect(request: Request) -> None:
    """Refuse state-changing requests that ride on the session cookie without the CSRF token.

    Bearer-token calls carry no ambient credentials and need none; page forms always do.
    """
    if request.method in _SAFE_METHODS:
        return
    token, from_cookie = request_token(request)
    is_page = not request.url.path.startswith("/api/")
    if token is not None and not from_cookie:
        return
    if not (from_cookie or is_page):
        return
    # With a session the token must be the one bound to it (a planted CSRF cookie does not help);
    # before login (the login form) it is the double-submit cookie.
    expected = csrf_for_session(token) if token is not None else request.cookies.get(CSRF_COOKIE)
    if not csrf_matches(expected, await _submitted_csrf(request)):
        raise PermissionDeniedError("errors.csrf_failed")


def get_current_user(request: Request, session: SessionDep, settings: SettingsDep) -> User:
    """The logged-in user, or 401."""
    token, _ = request_token(request)
    if token is None:
        raise NotAuthenticatedError("errors.not_authenticated")
    user = service.resolve_token(session, token=token, idle_timeout_s=settings.session_idle_timeout_s)
    if user is None:
        raise NotAuthenticatedError("errors.session_expired")
    request.state.user = user
    return user


def require_admin(user: Annotated[User, Depends(get_current_user)]) -> User:
    """The logged-in user if an admin, else 403."""
    if user.role != "admin":
        raise PermissionDeniedError("errors.admin_only")
    return user


CurrentUserDep = Annotated[User, Depends(get_current_user)]
AdminDep = Annotated[User, Depends(require_admin)]
CsrfDep = Depends(csrf_protect)
