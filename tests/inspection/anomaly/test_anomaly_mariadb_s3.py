"""The anomaly step on the production backends (rows in MariaDB, photos and maps in SeaweedFS S3), with two
servers: every picture URL of a check answered by one server works on the other at once (nothing the first
keeps in memory is needed), and a re-check's pictures are drawn from its own map."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.factories import demo_env, mariadb_s3_settings
from tests.inspection.anomaly.test_anomaly_api import (
    PNG_SIGNATURE,
    check,
    demo_file,
    holdout,
    image_ids,
    upload,
)

pytestmark = [pytest.mark.mariadb, pytest.mark.s3]

PICTURE_KEYS = ("heatmap_url", "mask_url", "overlay_url", "comparison_url")


@pytest.fixture
def settings(tmp_path: Path, s3_server: dict[str, str]) -> Iterator[Settings]:
    """Settings on a fresh MariaDB database and an S3 bucket (overrides the embedded defaults here)."""
    yield from mariadb_s3_settings(tmp_path, s3_server, bucket_prefix="anomaly")


def _picture(server: TestClient, headers: dict[str, str], url: str) -> bytes:
    redirect = server.get(url, headers=headers, follow_redirects=False)
    assert redirect.status_code == 307, redirect.text  # to a presigned URL of the S3 server
    served = httpx.get(redirect.headers["location"], timeout=10)
    assert served.status_code == 200
    assert served.content.startswith(PNG_SIGNATURE)
    return served.content


def test_pictures_of_a_check_are_served_by_another_server_right_after_it(settings: Settings) -> None:
    with demo_env(settings, defects_per_type=2, builds=[("anomaly_model", "metal_plate")]) as env:
        plate = env.products["metal_plate"]
        defect = holdout(env, "metal_plate", "defect")[0]
        inspection_id = upload(env, demo_file(env, str(defect["path"])), plate)
        with TestClient(create_app(settings)) as other:
            status, first = check(env, inspection_id)
            assert status == 200, first
            drawn = {key: _picture(other, env.worker, str(first[key])) for key in PICTURE_KEYS}
            status, second = check(env, inspection_id, reference_image_id=image_ids(env, plate, "normal")[-1])
            assert status == 200, second
            assert _picture(other, env.worker, str(second["comparison_url"])) != drawn["comparison_url"]
            # the same photo and model give the same map, so the same mask
            assert _picture(other, env.worker, str(second["mask_url"])) == drawn["mask_url"]
