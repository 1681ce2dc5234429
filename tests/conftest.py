"""Shared fixtures: settings in a temporary data directory, a migrated database, the app, logins (the data
they seed is made in tests/factories.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

os.environ.setdefault("LOG_JSON", "false")

import app.ml.torchvision_compat  # noqa: F401 - before anything imports torchvision
from app.cli import run_migrations
from app.core.config import Settings
from app.main import create_app
from tests import services

# Re-exported: many tests import these from here; they are made in tests/factories.py.
from tests.factories import ADMIN_PASSWORD as ADMIN_PASSWORD
from tests.factories import WORKER_PASSWORD as WORKER_PASSWORD
from tests.factories import bearer as bearer
from tests.factories import png_bytes as png_bytes
from tests.factories import seed_users as seed_users


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


@pytest.fixture(autouse=True)
def _drop_s3_buckets_made_by_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the S3 server, delete the buckets it made (see `services.drop_buckets`)."""
    if "s3_server" not in request.fixturenames:
        yield
        return
    client = services.s3_client(request.getfixturevalue("s3_server"))
    before = services.bucket_names(client)
    yield
    services.drop_buckets(client, services.bucket_names(client) - before)


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


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app with an admin (admin1) and a worker (worker1); not logged in."""
    with TestClient(create_app(settings)) as test_client:
        seed_users(settings, test_client)
        yield test_client


@pytest.fixture
def admin_headers(client: TestClient) -> dict[str, str]:
    """Bearer header of admin1."""
    return bearer(client, "admin1", ADMIN_PASSWORD)


@pytest.fixture
def worker_headers(client: TestClient) -> dict[str, str]:
    """Bearer header of worker1."""
    return bearer(client, "worker1", WORKER_PASSWORD)
