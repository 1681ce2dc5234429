"""Login and logout pages, and the language switch."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from app.admin.forms import error_text, redirect, render_admin
from app.auth import service
from app.auth.api import client_ip, set_session_cookie
from app.auth.dependencies import AdminDep, get_current_user, request_token
from app.auth.schemas import UserCreate, UserUpdate
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
        previous, from_cookie = request_token(request)
        issued = service.login(
            session,
            username=username,
            password=password,
            client_ip=client_ip(request),
            settings=settings,
            previous_token=previous if from_cookie else None,
        )
    except DomainError as exc:
        message = translate(exc.message_key, **exc.params)
        status = exc.status_code if exc.status_code in {401, 429, 503} else 400
        page = render(
            request,
            "auth/login_form.html",
            {"next": safe_next(next), "error": message, "username": username},
            status_code=status,
        )
        if exc.retry_after_s is not None:
            page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    default = "/admin" if issued.user.role == "admin" else "/"
    response = RedirectResponse(safe_next(next, default) if next != "/" else default, status_code=303)
    set_session_cookie(response, issued.token, max_age=settings.session_ttl_s, secure=settings.cookie_secure)
    return response


@router.post("/logout")
def logout_submit(request: Request, session: SessionDep) -> Response:
    """Revoke the session and return to the login page."""
    token, _ = request_token(request)
    if token:
        service.logout(session, token=token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- Admin: users -----------------------------------------------------------------------------------


def _users_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    *,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render_admin(
        request,
        "admin/auth/user_list.html",
        {
            "active": "users",
            "users": service.list_users(session),
            "min_password": settings.min_password_length,
            "error": error,
            "form": form or {"role": "worker"},
        },
        status_code=status_code,
    )


@router.get("/admin/users", dependencies=[Depends(get_current_user)])
def users_page(request: Request, session: SessionDep, settings: SettingsDep, _: AdminDep) -> Response:
    """사용자 관리: create workers and admins, reset passwords, change roles, disable accounts."""
    return _users_page(request, session, settings)


@router.post("/admin/users", dependencies=[Depends(get_current_user)])
def create_user_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminDep,
    username: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "worker",
) -> Response:
    """Create a user; a refused form comes back with what was typed (never the password) and why."""
    form = {"username": username, "display_name": display_name, "role": role}
    try:
        user_in = UserCreate.model_validate(
            {
                "username": username.strip(),
                "display_name": display_name.strip(),
                "password": password,
                "role": role,
            }
        )
        service.create_user(session, user_in=user_in, settings=settings, actor_id=admin.id)
    except (ValidationError, DomainError) as exc:
        message, status = error_text(exc, "errors.admin_user_form_invalid")
        return _users_page(request, session, settings, error=message, form=form, status_code=status)
    return redirect("/admin/users", "created")


@router.post("/admin/users/{user_id}/{action}", dependencies=[Depends(get_current_user)])
def update_user_submit(
    user_id: int,
    action: Literal["role", "password", "disable", "enable"],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminDep,
    role: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    """Change a role, reset a password, or disable / enable an account (never the last admin)."""
    try:
        if action == "role":
            user_in = UserUpdate.model_validate({"role": role})
        elif action == "password":
            user_in = UserUpdate(password=password)
        else:
            user_in = UserUpdate(is_active=action == "enable")
        service.update_user(session, user_id=user_id, user_in=user_in, settings=settings, actor_id=admin.id)
    except (ValidationError, DomainError) as exc:
        session.rollback()
        key = "errors.password_too_short" if action == "password" else "errors.validation"
        if isinstance(exc, ValidationError):
            return _users_page(
                request,
                session,
                settings,
                error=translate(key, min=settings.min_password_length),
                status_code=422,
            )
        message, status = error_text(exc, key)
        return _users_page(request, session, settings, error=message, status_code=status)
    done = {"role": "saved", "password": "password_reset", "disable": "deactivated", "enable": "reactivated"}
    return redirect("/admin/users", done[action])
