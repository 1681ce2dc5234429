"""Several views per inspection on the production backends: rows in MariaDB, photos in SeaweedFS S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.config import Settings
from app.db.tables import Inspection, InspectionView
from tests.conftest import png_bytes
from tests.factories import mariadb_s3_settings

pytestmark = [pytest.mark.mariadb, pytest.mark.s3]


@pytest.fixture
def settings(tmp_path: Path, s3_server: dict[str, str]) -> Iterator[Settings]:
    """Settings on a fresh MariaDB database and an S3 bucket (overrides the embedded defaults here)."""
    yield from mariadb_s3_settings(tmp_path, s3_server, bucket_prefix="views", max_inspection_views=3)


def _objects(client: TestClient) -> list[str]:
    return list(client.app.state.storage.list("inspections/"))  # type: ignore[attr-defined]


def _counts(client: TestClient) -> tuple[int, int]:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        return (
            session.scalar(select(func.count()).select_from(Inspection)) or 0,
            session.scalar(select(func.count()).select_from(InspectionView)) or 0,
        )


def test_views_are_stored_in_s3_and_refusals_leave_nothing(
    client: TestClient, worker_headers: dict[str, str]
) -> None:
    photos = [png_bytes((70 + i, 50), (40 * i, 90, 10)) for i in range(3)]
    files = [("files", (f"cam{i}.png", data, "image/png")) for i, data in enumerate(photos)]
    created = client.post(
        "/api/v1/inspections", headers=worker_headers, files=files, data={"views": "top,side,ct"}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert [v["view"] for v in body["views"]] == ["top", "side", "ct"]
    for view, data in zip(body["views"], photos, strict=True):
        # a redirect to a short-lived presigned URL of the S3 server, which serves that view's bytes
        redirect = client.get(view["image_url"], headers=worker_headers, follow_redirects=False)
        assert redirect.status_code == 307, redirect.text
        served = httpx.get(redirect.headers["location"], timeout=10)
        assert served.status_code == 200
        assert served.content == data
    assert len(_objects(client)) == 3
    assert _counts(client) == (1, 3)

    refusals = [
        ({"views": "top,top,ct"}, files, "'top'"),
        ({"views": "top,side"}, files, "사진 수(3)"),
        ({"views": "a,b,c,d"}, [*files, ("files", ("x.png", photos[0], "image/png"))], "최대 3장"),
        ({"views": "top,side,back"}, [*files[:2], ("files", ("bad.png", b"%PDF-1.4", "image/png"))], ""),
    ]
    for form, parts, fragment in refusals:
        refused = client.post("/api/v1/inspections", headers=worker_headers, files=parts, data=form)
        assert 400 <= refused.status_code < 500, refused.text
        assert fragment in refused.json()["detail"]
    # nothing half-written: the first inspection's rows and objects only
    assert _counts(client) == (1, 3)
    assert len(_objects(client)) == 3
