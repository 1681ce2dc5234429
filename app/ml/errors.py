"""Errors shared by the ML engines in app/ml."""

from __future__ import annotations


class ModelNotAvailableError(RuntimeError):
    """A required model or weights file is not available locally."""


class ArtifactError(RuntimeError):
    """A saved model artifact is missing, corrupt or does not match the running code."""


class JobCancelled(Exception):  # noqa: N818 - name fixed by the shared engine interface
    """A long-running job noticed that it was cancelled and stopped early."""
