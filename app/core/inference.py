"""A bounded queue in front of the inference steps (search, anomaly): a few run at once, a few more wait,
and a caller beyond that gets 503 with Retry-After at once instead of everyone slowing down.

Queue depth, running steps, waiting time and refusals are Prometheus metrics. One gate per process; a
scale-out puts one process per GPU / core group behind a balancer, each with its own gate.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.orm import Session

from app.core.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.core.observability import Metrics

P = ParamSpec("P")
R = TypeVar("R")


class InferenceGate:
    """At most `concurrency` steps run and `queue_size` wait (each at most `max_wait_s`); the rest: 503."""

    def __init__(
        self, *, concurrency: int, queue_size: int, max_wait_s: float, metrics: Metrics | None = None
    ) -> None:
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.max_wait_s = max_wait_s
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self._mean_s = 1.0  # moving average of a step's run time, for Retry-After
        registry = metrics.registry if metrics is not None else None
        self._depth = Gauge(
            "defectlens_inference_queue_depth", "Inference steps waiting for a slot", registry=registry
        )
        self._active = Gauge("defectlens_inference_running", "Inference steps running", registry=registry)
        self._wait = Histogram(
            "defectlens_inference_queue_wait_seconds",
            "Time an inference step waited for a slot",
            ["step"],
            registry=registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self._refused = Counter(
            "defectlens_inference_refused_total",
            "Inference steps refused (queue full)",
            ["step"],
            registry=registry,
        )

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> InferenceGate:
        """The gate INFERENCE_CONCURRENCY / INFERENCE_QUEUE_SIZE / INFERENCE_QUEUE_WAIT_S describe."""
        return cls(
            concurrency=settings.inference_concurrency,
            queue_size=settings.inference_queue_size,
            max_wait_s=settings.inference_queue_wait_s,
            metrics=metrics,
        )

    def retry_after_s(self) -> int:
        """A fair guess of when a slot frees up: the queue ahead divided over the slots."""
        ahead = self._waiting + self._running + 1
        return max(1, math.ceil(self._mean_s * ahead / self.concurrency))

    def _busy(self, step: str) -> ServiceUnavailableError:
        self._refused.labels(step).inc()
        seconds = self.retry_after_s()
        error = ServiceUnavailableError("errors.inference_busy", seconds=seconds)
        error.retry_after(seconds)
        return error

    def admit(self, step: str) -> None:
        """Raise the 503 now if the queue is full (before a request stores anything)."""
        with self._lock:
            if self._waiting >= self.queue_size and self._running >= self.concurrency:
                raise self._busy(step)

    @contextmanager
    def slot(self, step: str) -> Iterator[None]:
        """Run the body in a slot, waiting in the queue if needed; 503 when the queue is full."""
        with self._lock:
            if self._waiting >= self.queue_size and self._running >= self.concurrency:
                raise self._busy(step)
            self._waiting += 1
            self._depth.set(self._waiting)
        started = time.monotonic()
        acquired = self._slots.acquire(timeout=self.max_wait_s)
        waited = time.monotonic() - started
        with self._lock:
            self._waiting -= 1
            self._depth.set(self._waiting)
            if acquired:
                self._running += 1
                self._active.set(self._running)
        self._wait.labels(step).observe(waited)
        if not acquired:
            raise self._busy(step)
        run_started = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - run_started
            with self._lock:
                self._running -= 1
                self._active.set(self._running)
                self._mean_s = 0.8 * self._mean_s + 0.2 * elapsed
            self._slots.release()


def gated(step: str, services_of: Callable[..., object]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run a service function inside its app's inference gate (found with `services_of(*args, **kwargs)`)."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            gate = getattr(services_of(*args, **kwargs), "inference", None)
            if gate is None:
                return func(*args, **kwargs)
            session = args[0] if args and isinstance(args[0], Session) else None
            if session is not None and not (session.new or session.dirty or session.deleted):
                # A queued step must not hold a database connection: the pool is smaller than the queue,
                # and it would become a second, hidden queue that times out with errors.
                session.rollback()
            with gate.slot(step):
                return func(*args, **kwargs)

        return wrapper

    return decorate
