"""Password hashing (argon2id), opaque tokens stored as SHA-256, and double-submit CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# A real hash verified against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = _hasher.hash("defectlens-dummy-password")

SESSION_COOKIE = "dl_session"
CSRF_COOKIE = "dl_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FORM_FIELD = "csrf_token"


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """True when the password matches; constant work when there is no user."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A fresh opaque secret for a session or API token."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored for a token: its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_csrf_token() -> str:
    """A random double-submit CSRF token."""
    return secrets.token_urlsafe(24)


def csrf_matches(cookie_value: str | None, submitted: str | None) -> bool:
    """True when the submitted token equals the cookie's, compared in constant time."""
    if not cookie_value or not submitted:
        return False
    return hmac.compare_digest(cookie_value, submitted)
