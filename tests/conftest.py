"""Shared fixtures: settings in a temporary data directory, a migrated database, the app, logins."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

os.environ.setdefault("LOG_JSON", "false")

import app.ml.torchvision_compat  # noqa: F401 - before anything imports torchvision
from app.auth import service as auth_service
from app.auth.schemas import UserCreate
from app.cli import run_migrations
from app.core.config import Settings
from app.main import create_app
from tests import services

ADMIN_PASSWORD = "admin-pass-123"
WORKER_PASSWORD = "worker-pass-123"


def make_settings(tmp: Path, **overrides: object) -> Settings:
    """Settings isolated in `tmp` (SQLite + local storage unless overridden)."""
    values: dict[str, object] = {
        "environment": "test",
        "base_dir": Path(__file__).resolve().parents[1],
        "data_dir": tmp / "data",
        "models_dir": tmp / "models",
        "manual_store_dir": tmp / "manual_store",
        "log_json": False,
        "load_models": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def mariadb_server_url() -> Iterator[str]:
    """A fresh MariaDB database for this test session."""
    yield from services.mariadb_database()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real SeaweedFS S3 server for this test session."""
    yield from services.seaweedfs_server(tmp_path_factory.mktemp("s3"))


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus server for this test session; yields its URI."""
    yield from services.milvus_server(tmp_path_factory.mktemp("milvus"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-default settings in a temporary directory, with the schema migrated."""
    s = make_settings(tmp_path)
    run_migrations(s)
    return s


def seed_users(app_settings: Settings, client: TestClient) -> None:
    """Create one admin and one worker through the service."""
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        auth_service.create_user(
            session,
            user_in=UserCreate(username="admin1", password=ADMIN_PASSWORD, role="admin"),
            settings=app_settings,
            actor_id=None,
        )
        auth_service.create_user(
            session,
            user_in=UserCreate(username="worker1", password=WORKER_PASSWORD, role="worker"),
            settings=app_settings,
            actor_id=None,
        )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app with an admin (admin1) and a worker (worker1); not logged in."""
    with TestClient(create_app(settings)) as test_client:
        seed_users(settings, test_client)
        yield test_client


def bearer(client: TestClient, username: str, password: str) -> dict[str, str]:
    """Log in over the API and return the Authorization header."""
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()  # keep the client cookie-free: bearer calls only
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def admin_headers(client: TestClient) -> dict[str, str]:
    """Bearer header of admin1."""
    return bearer(client, "admin1", ADMIN_PASSWORD)


@pytest.fixture
def worker_headers(client: TestClient) -> dict[str, str]:
    """Bearer header of worker1."""
    return bearer(client, "worker1", WORKER_PASSWORD)


def png_bytes(
    size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (120, 130, 140), fmt: str = "PNG"
) -> bytes:
    """A small real image."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()
