"""Password hashing (argon2id), opaque tokens stored as SHA-256, and double-submit CSRF tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

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


def redact_url(url: str) -> str:
    """A server address fit to show an admin: no user, password, query string or fragment."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url.split("?", 1)[0].split("#", 1)[0]
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def csrf_for_session(session_token: str) -> str:
    """The CSRF token bound to a session: derived from its secret, so it changes at every login."""
    digest = hmac.new(session_token.encode(), b"defectlens-csrf-v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


class HashLimiter:
    """Caps how many password hashes (about a second of CPU each) run at once in this process."""

    def __init__(self, concurrency: int) -> None:
        self._slots = threading.BoundedSemaphore(concurrency)

    @contextmanager
    def slot(self, wait_s: float) -> Iterator[bool]:
        """Yield True once a slot is held (released on exit), False if none freed up within `wait_s`."""
        acquired = self._slots.acquire(timeout=wait_s)
        try:
            yield acquired
        finally:
            if acquired:
                self._slots.release()


def csrf_matches(cookie_value: str | None, submitted: str | None) -> bool:
    """True when the submitted token equals the cookie's, compared in constant time."""
    if not cookie_value or not submitted:
        return False
    return hmac.compare_digest(cookie_value, submitted)
