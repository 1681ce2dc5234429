"""Errors raised by ML engines (no web or database code here)."""


class ModelNotAvailableError(Exception):
    """The weights or artifact a model needs are not present on this server."""


class ArtifactError(Exception):
    """A built artifact is missing, corrupt, or was built for other settings."""


class JobCancelled(Exception):  # noqa: N818 - it is a signal, not a failure
    """A long build was cancelled by an admin."""
