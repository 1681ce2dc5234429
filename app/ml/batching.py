"""Micro-batching: concurrent calls for the same model run as one batch, each caller gets its own result.

No thread of its own: the first caller of a batch is its leader. It waits up to `wait_s` for more callers
with the same key (or until `max_batch` have joined), closes the batch, runs it in its own thread and hands
each follower its result. A batch that fails is run again one item at a time, so a bad input fails only its
own caller. With `max_batch` 1 (or no concurrent callers) a call runs at once, as without batching.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

from app.ml.patchcore import AnomalyOutput, PatchCore
from app.ml.preprocessing import PreprocessingOptions
from app.ml.search_runtime import SearchEngine, preprocess

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[Sequence[T]], Sequence[R]]


@dataclass(frozen=True)
class BatchPolicy:
    """How long a batch's first caller waits for company, and how many callers one batch takes.

    Args:
        wait_s: Longest wait of the first caller for more callers (0: batch only who is already waiting).
        max_batch: Callers per batch; 1 turns batching off.
    """

    wait_s: float = 0.004
    max_batch: int = 8

    @property
    def is_enabled(self) -> bool:
        """True when calls may be combined."""
        return self.max_batch > 1


@dataclass
class _Batch(Generic[T, R]):
    items: list[T] = field(default_factory=list)
    results: list[R] = field(default_factory=list)
    errors: list[BaseException | None] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class BatchStats:
    """Counters since start: batches run, calls served, the largest batch."""

    batches: int
    calls: int
    largest: int

    @property
    def mean_size(self) -> float:
        """Calls per batch on average."""
        return self.calls / self.batches if self.batches else 0.0


class MicroBatcher(Generic[T, R]):
    """Combines concurrent `run` calls with equal keys into one call of their batch function.

    Args:
        policy: Wait and batch size.
        name: Shown in logs.
    """

    def __init__(self, policy: BatchPolicy | None = None, name: str = "batch") -> None:
        self.policy = policy or BatchPolicy()
        self.name = name
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Batch[T, R]] = {}
        self._batches = 0
        self._calls = 0
        self._largest = 0

    def stats(self) -> BatchStats:
        """Batches run and calls served so far."""
        with self._lock:
            return BatchStats(self._batches, self._calls, self._largest)

    def run(self, key: Hashable, item: T, fn: BatchFn[T, R]) -> R:
        """The result of `fn([item, ...])` for `item`, batched with concurrent calls of the same key.

        Args:
            key: Calls with equal keys may share a batch; `fn` must be the same function for a key.
            item: This caller's input.
            fn: Maps a list of inputs to the list of their results, in order.

        Returns:
            This caller's result.

        Raises:
            Exception: Whatever `fn` raised for this caller's item (run alone after a failed batch).
        """
        if not self.policy.is_enabled:
            self._count(1)
            return fn([item])[0]
        with self._lock:
            batch = self._open.get(key)
            is_leader = batch is None
            if batch is None:
                batch = _Batch()
                self._open[key] = batch
            index = len(batch.items)
            batch.items.append(item)
            if len(batch.items) >= self.policy.max_batch:
                del self._open[key]  # closed: later callers start the next batch
                batch.full.set()
        if is_leader:
            if self.policy.wait_s > 0:
                batch.full.wait(self.policy.wait_s)
            with self._lock:
                if self._open.get(key) is batch:
                    del self._open[key]
            self._execute(batch, fn)
        else:
            batch.done.wait()
        error = batch.errors[index]
        if error is not None:
            raise error
        return batch.results[index]

    def _count(self, size: int) -> None:
        with self._lock:
            self._batches += 1
            self._calls += size
            self._largest = max(self._largest, size)

    def _execute(self, batch: _Batch[T, R], fn: BatchFn[T, R]) -> None:
        size = len(batch.items)
        self._count(size)
        started = time.perf_counter()
        try:
            try:
                results = list(fn(batch.items))
                if len(results) != size:
                    raise RuntimeError(f"{self.name}: {len(results)} results for {size} inputs")
                batch.results = results
                batch.errors = [None] * size
            except Exception:
                if size == 1:
                    raise
                logger.warning("%s: a batch of %d failed; running it one by one", self.name, size)
                self._one_by_one(batch, fn)
        except BaseException as exc:  # the one caller's own error, raised in its own thread
            batch.results = []
            batch.errors = [exc] * size
        finally:
            batch.done.set()
        logger.debug("%s: batch of %d in %.1f ms", self.name, size, (time.perf_counter() - started) * 1000)

    @staticmethod
    def _one_by_one(batch: _Batch[T, R], fn: BatchFn[T, R]) -> None:
        results: list[R | None] = []
        errors: list[BaseException | None] = []
        for item in batch.items:
            try:
                results.append(fn([item])[0])
                errors.append(None)
            except Exception as exc:
                results.append(None)
                errors.append(exc)
        batch.results = results  # type: ignore[assignment]  # None only where errors holds the exception
        batch.errors = errors


class RecentResults(Generic[R]):
    """The last `size` results by key (thread-safe LRU), for work two steps of one request flow share."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, R] = OrderedDict()

    def get(self, key: Hashable) -> R | None:
        """The remembered result, or None."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Hashable, value: R) -> None:
        """Remember a result, forgetting the oldest beyond `size`."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class ModelBatching:
    """Micro-batched calls of the request-path models: the search embedder and PatchCore scoring.

    One per app (`Services.batching`); engines stay unaware of it, so a rebuilt engine or another inference
    runtime behind the same `embed` / `detect_many` is batched the same way. Batches never mix engines: the
    key is the engine object itself.

    Args:
        policy: Wait and batch size; None: no batching (jobs, CLI and tests call the engines directly).
        recent_size: Query vectors remembered per (photo, preprocessing), so the anomaly step's reference
            lookup reuses the vector the search step computed for the same photo.
    """

    def __init__(self, policy: BatchPolicy | None = None, recent_size: int = 256) -> None:
        policy = policy or BatchPolicy(wait_s=0.0, max_batch=1)
        self.policy = policy
        self.embedder: MicroBatcher[Image.Image, np.ndarray] = MicroBatcher(policy, "embed")
        self.anomaly: MicroBatcher[Image.Image, AnomalyOutput] = MicroBatcher(policy, "patchcore")
        self.recent: RecentResults[np.ndarray] = RecentResults(recent_size)

    def embed(
        self,
        engine: SearchEngine,
        image: Image.Image,
        options: PreprocessingOptions,
        *,
        image_key: str | None = None,
    ) -> np.ndarray:
        """One photo's search vector (as `engine.embed([image], [options])[0]`), batched with concurrent
        queries; remembered under `image_key` (the photo's checksum) for this engine's embedder."""
        embedder = engine.embedder
        key = (embedder.embedder_id, image_key, options.key()) if image_key else None
        if key is not None:
            found = self.recent.get(key)
            if found is not None:
                return found
        prepared = preprocess(image, options)
        # By identity: an open batch holds its embedder, so no other object can have its id meanwhile.
        vector = self.embedder.run(id(embedder), prepared, lambda images: list(embedder.embed(images)))
        vector.flags.writeable = False  # shared by the steps that reuse it
        if key is not None:
            self.recent.put(key, vector)
        return vector

    def detect(self, model: PatchCore, image: Image.Image) -> AnomalyOutput:
        """`model.detect(image)`, batched with concurrent calls of the same product model."""
        return self.anomaly.run(model, image, lambda images: model.detect_many(images, len(images)))


# For callers without an app (jobs, CLI, tests): every call runs alone, nothing is remembered.
UNBATCHED = ModelBatching(recent_size=0)
