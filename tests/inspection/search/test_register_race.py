"""Registering one inspection photo (issue 14, item 4): concurrent requests against a real server give
exactly one catalog image (a unique constraint, not check-then-act), on SQLite and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.cli import run_migrations
from app.db.tables import ReferenceImage
from tests import services
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, make_settings, png_bytes
from tests.live import live_app


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """SQLite (embedded default) or a fresh MariaDB database for this test."""
    if request.param == "sqlite":
        yield None
        return
    yield from services.mariadb_database()


def _bearer(base: str, username: str, password: str) -> dict[str, str]:
    body = {"username": username, "password": password}
    token = httpx.post(f"{base}/api/v1/auth/login", json=body, timeout=30).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_concurrent_registrations_store_one_image(tmp_path: Path, db_url: str | None) -> None:
    settings = make_settings(tmp_path, **({"database_url": db_url} if db_url else {}))
    run_migrations(settings)
    with live_app(settings) as (base, app):
        admin = _bearer(base, "admin1", ADMIN_PASSWORD)
        worker = _bearer(base, "worker1", WORKER_PASSWORD)
        product = httpx.post(f"{base}/api/v1/products", json={"code": "plate", "name": "판"}, headers=admin)
        product_id = product.json()["id"]
        defect = httpx.post(
            f"{base}/api/v1/products/{product_id}/defect-types",
            json={"code": "scratch", "name": "긁힘"},
            headers=admin,
        ).json()
        inspection = httpx.post(
            f"{base}/api/v1/inspections",
            files={"file": ("part.png", png_bytes((96, 96), (90, 80, 70)), "image/png")},
            headers=worker,
        ).json()
        url = f"{base}/api/v1/inspections/{inspection['id']}/register"
        body = {"product_id": product_id, "defect_type_id": defect["id"]}
        with ThreadPoolExecutor(4) as pool:
            responses = list(
                pool.map(lambda _i: httpx.post(url, json=body, headers=worker, timeout=60), range(4))
            )
        codes = sorted(r.status_code for r in responses)
        # Before: four concurrent registrations gave four catalog images.
        assert codes == [201, 409, 409, 409], [r.text for r in responses]
        refused = next(r for r in responses if r.status_code == 409)
        assert "이미 등록" in refused.json()["detail"]
        with app.state.session_factory() as session:  # type: ignore[attr-defined]
            rows = list(
                session.scalars(
                    select(ReferenceImage).where(ReferenceImage.source_inspection_id == inspection["id"])
                )
            )
        assert len(rows) == 1
    if db_url is None:
        stored = [
            p for p in settings.local_storage_path.rglob("*") if p.is_file() and "images/defect" in str(p)
        ]
        assert len(stored) == 1  # no orphan objects from the refused requests
