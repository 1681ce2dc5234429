"""Auth routes: login (public on purpose), me, logout, user management (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from app.auth import service
from app.auth.dependencies import AdminDep, CurrentUserDep, get_current_user, request_token
from app.auth.schemas import LoginRequest, LoginResponse, UserCreate, UserRead, UserUpdate
from app.core.dependencies import SettingsDep
from app.core.security import CSRF_COOKIE, SESSION_COOKIE, csrf_for_session
from app.db.session import SessionDep

public_router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["auth"], dependencies=[Depends(get_current_user)])


def client_ip(request: Request) -> str:
    """The caller's address (the direct peer; put the app behind a proxy that sets it right)."""
    return request.client.host if request.client else ""


def set_session_cookie(response: Response, token: str, *, max_age: int, secure: bool) -> None:
    """The browser's session (HttpOnly, SameSite=Lax, Secure in production) and its new CSRF token."""
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="lax", secure=secure, path="/"
    )
    response.set_cookie(CSRF_COOKIE, csrf_for_session(token), samesite="lax", secure=secure, path="/")


@public_router.post("/login")
def login(
    body: LoginRequest, request: Request, response: Response, session: SessionDep, settings: SettingsDep
) -> LoginResponse:
    """Exchange a username and password for a bearer token (API_TOKEN_TTL_S) and a session cookie."""
    previous, from_cookie = request_token(request)
    issued = service.login(
        session,
        username=body.username,
        password=body.password,
        client_ip=client_ip(request),
        settings=settings,
        previous_token=previous if from_cookie else None,
    )
    set_session_cookie(response, issued.token, max_age=settings.session_ttl_s, secure=settings.cookie_secure)
    api_token = service.issue_api_token(session, user=issued.user, settings=settings, name="api login")
    return LoginResponse(
        access_token=api_token.token,
        expires_at=api_token.expires_at,
        user=UserRead.model_validate(issued.user),
    )


@router.get("/auth/me")
def me(user: CurrentUserDep) -> UserRead:
    """The logged-in user."""
    return UserRead.model_validate(user)


@router.post("/auth/logout", status_code=204)
def logout(request: Request, session: SessionDep, _: CurrentUserDep) -> Response:
    """Revoke the current token and clear the cookie."""
    token, _from_cookie = request_token(request)
    if token:
        service.logout(session, token=token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/users")
def list_users(session: SessionDep, _: AdminDep) -> list[UserRead]:
    """Every user."""
    return [UserRead.model_validate(u) for u in service.list_users(session)]


@router.post("/users", status_code=201)
def create_user(user_in: UserCreate, session: SessionDep, settings: SettingsDep, admin: AdminDep) -> UserRead:
    """Create a worker or an admin."""
    return UserRead.model_validate(
        service.create_user(session, user_in=user_in, settings=settings, actor_id=admin.id)
    )


@router.patch("/users/{user_id}")
def update_user(
    user_id: int, user_in: UserUpdate, session: SessionDep, settings: SettingsDep, admin: AdminDep
) -> UserRead:
    """Change a user's role, name or active flag, or reset the password."""
    user = service.update_user(
        session, user_id=user_id, user_in=user_in, settings=settings, actor_id=admin.id
    )
    return UserRead.model_validate(user)
