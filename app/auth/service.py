"""Users, login with rate limiting, sessions and API tokens."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
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
    ServiceUnavailableError,
    ValidationFailedError,
)
from app.core.security import HashLimiter, hash_password, new_token, token_digest, verify_password
from app.db.base import utcnow
from app.db.tables import AuthToken, LoginAttempt, LoginThrottle, User

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
    previous_token: str | None = None,
    hash_limiter: HashLimiter | None = None,
) -> IssuedToken:
    """Check credentials and issue a session or API token.

    Each attempt is claimed atomically before the password is hashed, per username and per client
    address: past the allowance the next attempt must wait a delay that doubles with every failure (429
    with Retry-After), and once it has passed the right password logs in again. At most
    LOGIN_HASH_CONCURRENCY hashes run at once (503 when none frees up). A login from a browser that
    still holds a session revokes that old session.
    """
    name = username.strip().lower()
    _claim_attempt(
        session,
        key=f"ip:{client_ip[:64]}",
        allowance=settings.login_ip_max_attempts,
        max_delay_s=settings.login_ip_max_delay_s,
        settings=settings,
    )
    _claim_attempt(
        session,
        key=f"user:{name[:64]}",
        allowance=settings.login_max_attempts,
        max_delay_s=settings.login_max_delay_s,
        settings=settings,
    )
    user = session.scalar(select(User).where(User.username == username))
    limiter = hash_limiter or _default_limiter(settings)
    with limiter.slot(settings.login_hash_wait_s) as acquired:
        if not acquired:
            raise ServiceUnavailableError("errors.login_busy").retry_after(2)
        matches = verify_password(password, user.password_hash if user else None)
    if not matches or user is None:
        session.add(LoginAttempt(username=name[:64], client_ip=client_ip[:64]))
        session.commit()
        logger.info("login failed", extra={"username": username, "client_ip": client_ip})
        raise NotAuthenticatedError("errors.bad_credentials")
    if not user.is_active:
        raise NotAuthenticatedError("errors.account_disabled")
    if previous_token:
        _revoke_token(session, previous_token)
    ttl = settings.session_ttl_s if kind == "session" else settings.api_token_ttl_s
    issued = _issue_token(session, user=user, kind=kind, ttl_s=ttl)
    user.last_login_at = utcnow()
    # The right password clears the username's failures and gives back the address's claimed attempt.
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == f"user:{name[:64]}"))
    session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == f"ip:{client_ip[:64]}", LoginThrottle.failures > 0)
        .values(failures=LoginThrottle.failures - 1, version=LoginThrottle.version + 1)
    )
    session.commit()
    return issued


def issue_api_token(session: Session, *, user: User, settings: Settings, name: str = "") -> IssuedToken:
    """A bearer token for line systems: API_TOKEN_TTL_S, no idle timeout; commits."""
    issued = _issue_token(session, user=user, kind="api", ttl_s=settings.api_token_ttl_s, name=name)
    session.commit()
    return issued


_limiters: dict[int, HashLimiter] = {}


def _default_limiter(settings: Settings) -> HashLimiter:
    """One hash limiter per process and concurrency setting."""
    return _limiters.setdefault(settings.login_hash_concurrency, HashLimiter(settings.login_hash_concurrency))


def login_delay_s(failures: int, *, allowance: int, base_s: float, max_delay_s: int) -> float:
    """How long the next attempt must wait after `failures` failures (0 within the allowance)."""
    if failures < allowance:
        return 0.0
    return float(min(max_delay_s, base_s * 2 ** min(failures - allowance, 30)))


def _whole_second_after(moment: datetime) -> datetime:
    """`moment` rounded up to a whole second (MariaDB DATETIME keeps no fractions; never shorten a delay)."""
    if moment.microsecond == 0:
        return moment
    return moment.replace(microsecond=0) + timedelta(seconds=1)


def _claim_attempt(
    session: Session, *, key: str, allowance: int, max_delay_s: int, settings: Settings
) -> None:
    """Count one attempt for `key` up front (compare-and-swap on its row) or raise 429 with Retry-After.

    The attempt is counted as a failure before the password is checked, so concurrent attempts see
    each other; a successful login clears the username's row.
    """
    for _try in range(20):
        now = utcnow()
        row = session.get(LoginThrottle, key, populate_existing=True)
        if row is None:
            session.add(LoginThrottle(key=key, failures=0, version=0, next_allowed_at=None, updated_at=now))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
            continue
        failures = row.failures
        if row.updated_at < now - timedelta(seconds=settings.login_window_s) and (
            row.next_allowed_at is None or row.next_allowed_at <= now
        ):
            failures = 0  # the window has passed: start over
        if row.next_allowed_at is not None and row.next_allowed_at > now and failures:
            wait = max(1, math.ceil((row.next_allowed_at - now).total_seconds()))
            session.rollback()
            raise RateLimitedError("errors.login_delayed", seconds=wait).retry_after(wait)
        delay = login_delay_s(
            failures + 1, allowance=allowance, base_s=settings.login_delay_base_s, max_delay_s=max_delay_s
        )
        claimed = session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key, LoginThrottle.version == row.version)
            .values(
                failures=failures + 1,
                version=row.version + 1,
                next_allowed_at=_whole_second_after(now + timedelta(seconds=delay)) if delay else None,
                updated_at=now,
            )
        )
        session.commit()
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            return
    raise ServiceUnavailableError("errors.login_busy").retry_after(1)


def _issue_token(session: Session, *, user: User, kind: str, ttl_s: int, name: str = "") -> IssuedToken:
    token = new_token()
    expires_at = utcnow() + timedelta(seconds=ttl_s)
    session.add(
        AuthToken(
            user_id=user.id, token_hash=token_digest(token), kind=kind, name=name, expires_at=expires_at
        )
    )
    return IssuedToken(token=token, user=user, expires_at=expires_at)


# last_used_at is written at most this often per token (not on every request).
_TOUCH_INTERVAL = timedelta(seconds=60)


def resolve_token(session: Session, *, token: str, idle_timeout_s: int | None = None) -> User | None:
    """The active user of a token, or None if it is unknown, revoked, expired or (a browser session)
    unused for longer than `idle_timeout_s`; records when it was last used."""
    row = session.scalar(select(AuthToken).where(AuthToken.token_hash == token_digest(token)))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now or not row.user.is_active:
        return None
    last = row.last_used_at or row.created_at
    idle = idle_timeout_s is not None and row.kind == "session"
    if idle and last < now - timedelta(seconds=idle_timeout_s or 0):
        row.revoked_at = now
        session.commit()
        return None
    if row.last_used_at is None or row.last_used_at < now - _TOUCH_INTERVAL:
        row.last_used_at = now
        session.commit()
    return row.user


def _revoke_token(session: Session, token: str) -> None:
    row = session.scalar(select(AuthToken).where(AuthToken.token_hash == token_digest(token)))
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()


def logout(session: Session, *, token: str) -> None:
    """Revoke the token (idempotent)."""
    _revoke_token(session, token)
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


def get_user(session: Session, *, user_id: int) -> User:
    """A user or NotFoundError."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError("errors.user_not_found", id=user_id)
    return user


def update_user(
    session: Session, *, user_id: int, user_in: UserUpdate, settings: Settings, actor_id: int | None
) -> User:
    """Change role, active flag, name or password; never leaves the system without an active admin."""
    user = get_user(session, user_id=user_id)
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


def ensure_admin_from_settings(session: Session, *, settings: Settings) -> User | None:
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
