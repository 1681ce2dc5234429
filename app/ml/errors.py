"""Exceptions shared by the ML engines (kept tiny: the web layer maps them to responses and job states)."""

from __future__ import annotations


class ModelNotAvailableError(Exception):
    """A model or its weights file is not present locally (DefectLens never downloads weights)."""


class ArtifactError(Exception):
    """A saved artifact (index, metadata) is corrupt, incomplete or built with other settings."""


class JobCancelled(Exception):  # noqa: N818 - reads naturally at the raise site, like CancelledError
    """A long-running build was cancelled by its caller's should_cancel callback."""
