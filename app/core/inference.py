"""Bounded queues in front of the inference steps (search, anomaly): the one place where capacity is decided.

Each step has its own gate: a few of its calls run at once, a few more wait, and a caller beyond that gets
503 with Retry-After at once instead of everyone slowing down. Separate gates because the steps differ ~10x
in cost: with one shared gate a 0.1 s search waited behind 1-7 s anomaly steps (docs/benchmarks/load.md).
The model work inside a running step may be combined with other running steps' (app.ml.batching), so the
number of running steps is also the largest batch that can form. Nothing else queues in front of a gate:
the server's thread pool is sized from the gates (`thread_pool_size`), and a waiting step holds no database
connection (`gated`).

Queue depth, running steps, waiting time and refusals are Prometheus metrics, labelled by step. One set of
gates per process; a scale-out puts one process per GPU / core group behind a balancer, each with its own.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.orm import Session

from app.core.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.core.observability import Metrics

P = ParamSpec("P")
R = TypeVar("R")

STEPS = ("search", "anomaly")
# /analyze runs every step: it is admitted only when no step's queue is full.
ALL_STEPS = "analyze"


@dataclass(frozen=True)
class GateLimits:
    """How many calls of one step run at once and how many more may wait."""

    concurrency: int
    queue_size: int


class _GateMetrics:
    """The Prometheus series of all gates (one registration per registry, a `step` label each)."""

    def __init__(self, metrics: Metrics | None) -> None:
        registry = metrics.registry if metrics is not None else None
        self.depth = Gauge(
            "defectlens_inference_queue_depth",
            "Inference steps waiting for a slot",
            ["step"],
            registry=registry,
        )
        self.active = Gauge(
            "defectlens_inference_running", "Inference steps running", ["step"], registry=registry
        )
        self.wait = Histogram(
            "defectlens_inference_queue_wait_seconds",
            "Time an inference step waited for a slot",
            ["step"],
            registry=registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.refused = Counter(
            "defectlens_inference_refused_total",
            "Inference steps refused (queue full)",
            ["step"],
            registry=registry,
        )


class InferenceGate:
    """At most `concurrency` calls run and `queue_size` wait (each at most `max_wait_s`); the rest: 503."""

    def __init__(
        self,
        step: str,
        limits: GateLimits,
        *,
        max_wait_s: float,
        metrics: _GateMetrics,
    ) -> None:
        self.step = step
        self.concurrency = limits.concurrency
        self.queue_size = limits.queue_size
        self.max_wait_s = max_wait_s
        self._slots = threading.BoundedSemaphore(limits.concurrency)
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self._mean_s = 1.0  # moving average of a call's run time, for Retry-After
        self._depth = metrics.depth.labels(step)
        self._active = metrics.active.labels(step)
        self._wait = metrics.wait.labels(step)
        self._refused = metrics.refused.labels(step)

    def retry_after_s(self) -> int:
        """A fair guess of when a slot frees up: the queue ahead divided over the slots."""
        ahead = self._waiting + self._running + 1
        return max(1, math.ceil(self._mean_s * ahead / self.concurrency))

    def is_full(self) -> bool:
        """True when a new caller would be refused now."""
        with self._lock:
            return self._waiting >= self.queue_size and self._running >= self.concurrency

    def busy(self) -> ServiceUnavailableError:
        """The 503 a refused caller gets (counted as a refusal)."""
        self._refused.inc()
        seconds = self.retry_after_s()
        error = ServiceUnavailableError("errors.inference_busy", seconds=seconds)
        error.retry_after(seconds)
        return error

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Run the body in a slot, waiting in the queue if needed; 503 when the queue is full."""
        with self._lock:
            if self._waiting >= self.queue_size and self._running >= self.concurrency:
                raise self.busy()
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
        self._wait.observe(waited)
        if not acquired:
            raise self.busy()
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


class InferenceGates:
    """One gate per inference step (`STEPS`), sharing one maximum wait and one set of metrics."""

    def __init__(
        self, limits: Mapping[str, GateLimits], *, max_wait_s: float, metrics: Metrics | None = None
    ) -> None:
        series = _GateMetrics(metrics)
        self.gates = {
            step: InferenceGate(step, limit, max_wait_s=max_wait_s, metrics=series)
            for step, limit in limits.items()
        }

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> InferenceGates:
        """The gates INFERENCE_CONCURRENCY / INFERENCE_<STEP>_CONCURRENCY / INFERENCE_QUEUE_SIZE describe."""
        return cls(
            {step: settings.inference_limits(step) for step in STEPS},
            max_wait_s=settings.inference_queue_wait_s,
            metrics=metrics,
        )

    def gate(self, step: str) -> InferenceGate:
        """The gate of one step (KeyError for a step without one)."""
        return self.gates[step]

    @property
    def running_max(self) -> int:
        """Calls of all steps that may run at once (what the CPU threads are shared by)."""
        return sum(g.concurrency for g in self.gates.values())

    def thread_pool_size(self, headroom: int = 40) -> int:
        """Threads the server needs so that only the gates queue: every slot and queue place, plus
        `headroom` for everything else (uploads, pages, reads)."""
        return sum(g.concurrency + g.queue_size for g in self.gates.values()) + headroom

    def admit(self, step: str) -> None:
        """Raise the 503 now if the step's queue (for "analyze": any step's) is full, before anything is
        stored."""
        for gate in self.gates.values() if step == ALL_STEPS else [self.gate(step)]:
            if gate.is_full():
                raise gate.busy()

    @contextmanager
    def slot(self, step: str) -> Iterator[None]:
        """Run the body in a slot of the step's gate (see `InferenceGate.slot`)."""
        with self.gate(step).slot():
            yield


def gated(step: str, services_of: Callable[..., object]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run a service function inside its app's gate for `step` (found with `services_of(*args, **kwargs)`)."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            gates = getattr(services_of(*args, **kwargs), "inference", None)
            if gates is None:
                return func(*args, **kwargs)
            session = args[0] if args and isinstance(args[0], Session) else None
            if session is not None and not (session.new or session.dirty or session.deleted):
                # A queued step must not hold a database connection: the pool is smaller than the queue,
                # and it would become a second, hidden queue that times out with errors.
                session.rollback()
            with gates.slot(step):
                return func(*args, **kwargs)

        return wrapper

    return decorate
