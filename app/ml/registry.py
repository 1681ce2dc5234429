"""ModelRegistry: the engines loaded once at startup, swapped atomically when a deployment finishes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def resolve_device(preference: str) -> str:
    """'cuda' when asked for (or 'auto') and available, else 'cpu'."""
    if preference == "cpu":
        return "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if preference == "cuda":
        logger.warning("DEVICE=cuda but no CUDA device is available; using the CPU")
    return "cpu"


class ModelRegistry:
    """Holds every loaded engine by name.

    Engines are replaced whole (`swap`), never mutated in place by a rebuild, so a request that already
    took an engine keeps using it while a deployment installs the next one.

    Args:
        models_dir: where weights and built artifacts live.
        device: "cpu" or "cuda".
    """

    def __init__(self, models_dir: Path, device: str = "cpu") -> None:
        self.models_dir = models_dir
        self.device = device
        self._lock = threading.RLock()
        self._engines: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self.is_loaded = False

    def get(self, name: str) -> Any | None:
        """The engine under `name`, or None."""
        with self._lock:
            return self._engines.get(name)

    def swap(self, name: str, engine: Any | None) -> Any | None:
        """Install `engine` under `name` (None removes it) and return the previous one."""
        with self._lock:
            previous = self._engines.get(name)
            if engine is None:
                self._engines.pop(name, None)
            else:
                self._engines[name] = engine
            self._errors.pop(name, None)
            return previous

    def set_error(self, name: str, message: str) -> None:
        """Remember why an engine could not be loaded (shown on /readyz and admin pages)."""
        with self._lock:
            self._errors[name] = message

    def names(self) -> list[str]:
        """Names of the loaded engines."""
        with self._lock:
            return sorted(self._engines)

    def status(self) -> dict[str, Any]:
        """Loaded engines and load errors, for /readyz and the admin pages."""
        with self._lock:
            return {
                "device": self.device,
                "loaded": self.is_loaded,
                "engines": {name: _describe(engine) for name, engine in sorted(self._engines.items())},
                "errors": dict(self._errors),
            }


def _describe(engine: Any) -> str:
    describe = getattr(engine, "describe", None)
    if callable(describe):
        return str(describe())
    if isinstance(engine, Mapping):  # a set of engines by name (the generators): their names, not "dict"
        return ", ".join(sorted(str(name) for name in engine))
    return type(engine).__name__
