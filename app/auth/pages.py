"""Login and logout pages, and the language switch."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.auth import service
from app.auth.api import client_ip, set_session_cookie
from app.auth.dependencies import request_token
from app.core.dependencies import SettingsDep
from app.core.errors import DomainError
from app.core.i18n import translate
from app.core.security import SESSION_COOKIE
from app.core.templating import render
from app.db.session import SessionDep

router = APIRouter(tags=["pages"], include_in_schema=False)


def safe_next(target: str | None, default: str = "/") -> str:
    """Only same-site relative paths may be redirect targets."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    """The login form."""
    return render(request, "auth/login_form.html", {"next": safe_next(next), "error": None})


@router.post("/login")
def login_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the form; on success set the session cookie and go where the user was headed."""
    try:
        if not username or not password:
            raise DomainError("errors.bad_credentials")
        issued = service.login(
            session, username=username, password=password, client_ip=client_ip(request), settings=settings
        )
    except DomainError as exc:
        message = translate(exc.message_key, **exc.params)
        status = exc.status_code if exc.status_code in {401, 429} else 400
        return render(
            request,
            "auth/login_form.html",
            {"next": safe_next(next), "error": message, "username": username},
            status_code=status,
        )
    default = "/admin" if issued.user.role == "admin" else "/"
    response = RedirectResponse(safe_next(next, default) if next != "/" else default, status_code=303)
    set_session_cookie(response, issued.token, max_age=settings.session_ttl_s, secure=settings.cookie_secure)
    return response


@router.post("/logout")
def logout_submit(request: Request, session: SessionDep) -> Response:
    """Revoke the session and return to the login page."""
    token, _ = request_token(request)
    if token:
        service.logout(session, token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
