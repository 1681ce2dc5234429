"""Structured logging with request ids, and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import sys
import threading
from contextvars import ContextVar
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line with time, level, logger, message, request id and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str = "INFO", *, json_logs: bool = True) -> None:
    """Send all logs to stderr, as JSON lines or as plain text with the request id."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.addFilter(_RequestIdFilter())
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "botocore", "urllib3", "PIL", "matplotlib", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Metrics:
    """The application's Prometheus metrics, in their own registry (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "defectlens_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "defectlens_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.inspections = Counter(
            "defectlens_inspection_steps_total",
            "Inspection steps run",
            ["step", "outcome"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "defectlens_deployment_jobs_total",
            "Deployment jobs finished",
            ["kind", "status"],
            registry=self.registry,
        )
        self.models_loaded = Gauge(
            "defectlens_models_loaded", "1 when the models are loaded", registry=self.registry
        )
        # Which artifact version this process serves, per kind and product ("" = all products): compare
        # across servers, and with defectlens_artifact_current_info, to see a server that lags behind.
        self._loaded: dict[str, dict[str, str]] = {}
        self._loaded_lock = threading.Lock()
        self.artifact_loaded = Gauge(
            "defectlens_artifact_loaded_info",
            "1 for each artifact version this server has loaded",
            ["kind", "product", "version"],
            registry=self.registry,
        )

    def note_loaded(self, kind: str, versions: dict[str, str]) -> None:
        """Record the artifact versions of one kind this process has just loaded (product -> version)."""
        with self._loaded_lock:
            for product, version in self._loaded.pop(kind, {}).items():
                self.artifact_loaded.remove(kind, product, version)
            for product, version in versions.items():
                self.artifact_loaded.labels(kind, product, version).set(1)
            self._loaded[kind] = dict(versions)
