"""Domain errors raised by services; one handler maps them to JSON for the API and a page for the UI."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A user-facing error with a translation key and parameters."""

    status_code = 400
    retry_after_s: int | None = None

    def __init__(self, message_key: str, **params: Any) -> None:
        super().__init__(message_key)
        self.message_key = message_key
        self.params = params

    def retry_after(self, seconds: int) -> DomainError:
        """The same error, answered with a Retry-After header (429, 503)."""
        self.retry_after_s = max(1, int(seconds))
        return self


class InvalidInputError(DomainError):
    """Bad input (400)."""

    status_code = 400


class NotAuthenticatedError(DomainError):
    """Not logged in or the session expired (401)."""

    status_code = 401


class PermissionDeniedError(DomainError):
    """Logged in with the wrong role (403)."""

    status_code = 403


class NotFoundError(DomainError):
    """The thing asked for does not exist (404)."""

    status_code = 404


class ConflictError(DomainError):
    """The request conflicts with the current state (409)."""

    status_code = 409


class PayloadTooLargeError(DomainError):
    """An upload over a size limit (413)."""

    status_code = 413


class UnsupportedMediaError(DomainError):
    """An upload of a type we do not accept (415)."""

    status_code = 415


class ValidationFailedError(DomainError):
    """Well-formed input that fails a rule (422)."""

    status_code = 422


class RateLimitedError(DomainError):
    """Too many attempts (429)."""

    status_code = 429


class ServiceUnavailableError(DomainError):
    """A dependency (model, storage, LLM server) is not available (503)."""

    status_code = 503


class JobQueueUnavailableError(DomainError):
    """The job queue (broker) cannot be reached: the job was not started (503)."""

    status_code = 503

    def __init__(self) -> None:
        super().__init__("errors.job_queue_unavailable")
