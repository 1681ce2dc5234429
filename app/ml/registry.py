"""ModelRegistry: the engines loaded once at startup, swapped atomically when a deployment finishes.

Each engine sits under a `RegistryKey` that carries its type, declared beside the engine
(`search_runtime.SEARCH`, `anomaly_runtime.ANOMALY`, ...), so `models.get(SEARCH)` is a
`SearchEngine | None` without a cast at the call site. Only engines live here: catalog hooks and model
choices are the catalog's (app/catalog/model_choices.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Generic, TypedDict, TypeVar, cast

logger = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


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


class RegistryKey(Generic[T_co]):
    """The name of one engine in the registry, typed with the engine it holds.

    Args:
        name: The engine's name (shown on /readyz and the admin pages).
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"RegistryKey({self.name!r})"


class RegistryStatus(TypedDict):
    """What /readyz and the admin pages show about the engines."""

    device: str
    loaded: bool
    engines: dict[str, str]
    errors: dict[str, str]


class ModelRegistry:
    """Holds every loaded engine by key.

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
        self._engines: dict[str, object] = {}
        self._errors: dict[str, str] = {}
        self.is_loaded = False

    def get(self, key: RegistryKey[T]) -> T | None:
        """The engine under `key`, or None."""
        with self._lock:
            # `swap` only ever stores a T under a RegistryKey[T]: the one place the type is asserted.
            return cast("T | None", self._engines.get(key.name))

    def swap(self, key: RegistryKey[T], engine: T | None) -> T | None:
        """Install `engine` under `key` (None removes it) and return the previous one."""
        with self._lock:
            previous = cast("T | None", self._engines.get(key.name))
            if engine is None:
                self._engines.pop(key.name, None)
            else:
                self._engines[key.name] = engine
            self._errors.pop(key.name, None)
            return previous

    def set_error(self, name: str | RegistryKey[object], message: str) -> None:
        """Remember why an engine (or a deployment kind's artifacts) could not be loaded."""
        with self._lock:
            self._errors[name if isinstance(name, str) else name.name] = message

    def names(self) -> list[str]:
        """Names of the loaded engines."""
        with self._lock:
            return sorted(self._engines)

    def status(self) -> RegistryStatus:
        """Loaded engines and load errors, for /readyz and the admin pages."""
        with self._lock:
            return {
                "device": self.device,
                "loaded": self.is_loaded,
                "engines": {name: _describe(engine) for name, engine in sorted(self._engines.items())},
                "errors": dict(self._errors),
            }


def _describe(engine: object) -> str:
    describe = getattr(engine, "describe", None)
    if callable(describe):
        return str(describe())
    if isinstance(engine, Mapping):  # a set of engines by name (the generators): their names, not "dict"
        return ", ".join(sorted(str(name) for name in engine))
    return type(engine).__name__
