"""`defectlens serve` in a process of its own (real uvicorn), for multi-server tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes `get_settings()` in a child process equal `settings` (what tests set)."""
    env = {
        **os.environ,
        "ENVIRONMENT": settings.environment,
        "LOG_JSON": "false",
        "DATABASE_URL": settings.database_url,
        "DATA_DIR": str(settings.data_path),
        "MODELS_DIR": str(settings.models_path),
        "MANUAL_STORE_DIR": str(settings.manual_store_path),
        "LOAD_MODELS": "true" if settings.load_models else "false",
        "ARTIFACT_POLL_S": str(settings.artifact_poll_s),
        "STORAGE_BACKEND": settings.storage_backend,
        "JOB_BROKER_URL": settings.job_broker_url,
        "OMP_NUM_THREADS": "1",
    }
    if settings.storage_backend == "s3":
        env.update(
            S3_ENDPOINT_URL=settings.s3_endpoint_url,
            S3_BUCKET=settings.s3_bucket,
            S3_ACCESS_KEY=settings.s3_access_key.get_secret_value(),
            S3_SECRET_KEY=settings.s3_secret_key.get_secret_value(),
            S3_REGION=settings.s3_region,
            S3_CREATE_BUCKET="true" if settings.s3_create_bucket else "false",
        )
    if settings.vector_backend == "milvus":
        env.update(
            VECTOR_BACKEND="milvus",
            MILVUS_URI=settings.milvus_uri,
            MILVUS_COLLECTION_PREFIX=settings.milvus_collection_prefix,
        )
    env.update(extra)
    return env


class ServerProcess:
    """One `python -m app.cli serve` process on a free loopback port; its output goes to `log`."""

    def __init__(self, settings: Settings, log: Path, **extra_env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._handle = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=settings_env(settings, **extra_env),
            stdout=self._handle,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 240) -> None:
        """Wait until /readyz answers 200 (models loaded); raise with the log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server on {self.url} did not become ready:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        """The end of the server's log."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def client(self) -> httpx.Client:
        """An HTTP client bound to this server."""
        return httpx.Client(base_url=self.url, timeout=120)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._handle.close()
