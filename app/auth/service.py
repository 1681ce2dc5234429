"""Users, login with rate limiting, sessions and API tokens."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.schemas import UserCreate, UserUpdate
from app.core.audit import record_audit
from app.core.config import Settings
from app.core.errors import (
    ConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
    RateLimitedError,
    ValidationFailedError,
)
from app.core.security import hash_password, new_token, token_digest, verify_password
from app.db.base import utcnow
from app.db.tables import AuthToken, LoginAttempt, User

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuedToken:
    """A token secret (shown once) with its user and expiry."""

    token: str
    user: User
    expires_at: datetime


def _check_password_rules(password: str, settings: Settings) -> None:
    if len(password) < settings.min_password_length:
        raise ValidationFailedError("errors.password_too_short", min=settings.min_password_length)


def login(
    session: Session,
    *,
    username: str,
    password: str,
    client_ip: str,
    settings: Settings,
    kind: str = "session",
) -> IssuedToken:
    """Check credentials (rate-limited per username) and issue a session or API token."""
    since = utcnow() - timedelta(seconds=settings.login_window_s)
    failures = session.scalar(
        select(func.count())
        .select_from(LoginAttempt)
        .where(LoginAttempt.username == username.lower(), LoginAttempt.created_at >= since)
    )
    if (failures or 0) >= settings.login_max_attempts:
        raise RateLimitedError("errors.login_rate_limited", seconds=settings.login_window_s)
    user = session.scalar(select(User).where(User.username == username))
    if not verify_password(password, user.password_hash if user else None) or user is None:
        session.add(LoginAttempt(username=username.lower(), client_ip=client_ip[:64]))
        session.commit()
        logger.info("login failed", extra={"username": username, "client_ip": client_ip})
        raise NotAuthenticatedError("errors.bad_credentials")
    if not user.is_active:
        raise NotAuthenticatedError("errors.account_disabled")
    ttl = settings.session_ttl_s if kind == "session" else settings.api_token_ttl_s
    issued = _issue_token(session, user=user, kind=kind, ttl_s=ttl)
    user.last_login_at = utcnow()
    session.execute(delete(LoginAttempt).where(LoginAttempt.username == username.lower()))
    session.commit()
    return issued


def _issue_token(session: Session, *, user: User, kind: str, ttl_s: int, name: str = "") -> IssuedToken:
    token = new_token()
    expires_at = utcnow() + timedelta(seconds=ttl_s)
    session.add(
        AuthToken(
            user_id=user.id, token_hash=token_digest(token), kind=kind, name=name, expires_at=expires_at
        )
    )
    return IssuedToken(token=token, user=user, expires_at=expires_at)


def resolve_token(session: Session, token: str) -> User | None:
    """The active user a token belongs to, or None if it is unknown, revoked or expired."""
    row = session.scalar(select(AuthToken).where(AuthToken.token_hash == token_digest(token)))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now or not row.user.is_active:
        return None
    return row.user


def logout(session: Session, token: str) -> None:
    """Revoke the token (idempotent)."""
    row = session.scalar(select(AuthToken).where(AuthToken.token_hash == token_digest(token)))
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()


def create_user(session: Session, *, user_in: UserCreate, settings: Settings, actor_id: int | None) -> User:
    """Create a user; the username must be new."""
    _check_password_rules(user_in.password, settings)
    user = User(
        username=user_in.username,
        display_name=user_in.display_name or user_in.username,
        password_hash=hash_password(user_in.password),
        role=user_in.role,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise ConflictError("errors.username_taken", username=user_in.username) from exc
    record_audit(
        session,
        user_id=actor_id,
        action="create",
        entity="user",
        entity_id=user.id,
        detail={"username": user.username, "role": user.role},
    )
    session.commit()
    return user


def list_users(session: Session) -> list[User]:
    """Every user, by username."""
    return list(session.scalars(select(User).order_by(User.username)))


def get_user(session: Session, user_id: int) -> User:
    """A user or NotFoundError."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError("errors.user_not_found", id=user_id)
    return user


def update_user(
    session: Session, *, user_id: int, user_in: UserUpdate, settings: Settings, actor_id: int | None
) -> User:
    """Change role, active flag, name or password; never leaves the system without an active admin."""
    user = get_user(session, user_id)
    demotes = (user_in.role == "worker" or user_in.is_active is False) and user.role == "admin"
    if demotes and _active_admin_count(session, excluding=user.id) == 0:
        raise ConflictError("errors.last_admin")
    changes: dict[str, object] = {}
    if user_in.role is not None:
        user.role = changes["role"] = user_in.role
    if user_in.is_active is not None:
        user.is_active = user_in.is_active
        changes["is_active"] = user_in.is_active
    if user_in.display_name is not None:
        user.display_name = changes["display_name"] = user_in.display_name
    if user_in.password is not None:
        _check_password_rules(user_in.password, settings)
        user.password_hash = hash_password(user_in.password)
        changes["password"] = "reset"  # noqa: S105 - audit note, not a secret
    if user_in.password is not None or user_in.is_active is False:
        _revoke_all(session, user.id)
    record_audit(session, user_id=actor_id, action="update", entity="user", entity_id=user.id, detail=changes)
    session.commit()
    return user


def _revoke_all(session: Session, user_id: int) -> None:
    now = utcnow()
    for token in session.scalars(
        select(AuthToken).where(AuthToken.user_id == user_id, AuthToken.revoked_at.is_(None))
    ):
        token.revoked_at = now


def _active_admin_count(session: Session, *, excluding: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == "admin", User.is_active.is_(True), User.id != excluding)
        )
        or 0
    )


def ensure_admin_from_settings(session: Session, settings: Settings) -> User | None:
    """Create the first admin from ADMIN_USERNAME / ADMIN_PASSWORD when no such user exists yet."""
    username = settings.admin_username.strip()
    password = settings.admin_password.get_secret_value()
    if not username or not password:
        return None
    existing = session.scalar(select(User).where(User.username == username))
    if existing is not None:
        return existing
    if len(password) < settings.min_password_length:
        raise InvalidInputError("errors.password_too_short", min=settings.min_password_length)
    return create_user(
        session,
        user_in=UserCreate(username=username, password=password, role="admin", display_name=username),
        settings=settings,
        actor_id=None,
    )
