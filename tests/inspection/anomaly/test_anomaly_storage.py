"""What the anomaly step keeps and where: its map stored before the result is recorded, a map that cannot be
stored is a 503 with nothing recorded or left behind, maps stored by earlier versions still draw, and a photo
decoded once at upload gives the same answer as one decoded from the storage.

Real parts throughout (the demo model built by the job, SQLite, local storage). The storage failure is a real
one: the photo's folder is made immutable (`chattr +i`), which refuses new files even to root; where the
file system has no such attribute the failure test is skipped.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app.catalog import service as catalog_service
from app.core.i18n import translate
from app.core.images import open_rgb
from app.db.tables import Inspection, InspectionEvent
from app.inspection.anomaly import pictures
from app.ml.anomaly_runtime import current_models, prepare
from tests.inspection.anomaly.conftest import AnomalyEnv
from tests.inspection.anomaly.test_anomaly_api import (
    PNG_SIGNATURE,
    check,
    demo_file,
    holdout,
    image_ids,
    upload,
)

PICTURE_KEYS = ("heatmap_url", "mask_url", "overlay_url", "comparison_url")


def _row(env: AnomalyEnv, inspection_id: int) -> Inspection:
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        assert row is not None
        session.expunge(row)
        return row


def _folder(env: AnomalyEnv, inspection_id: int) -> Path:
    key = _row(env, inspection_id).image_key
    return env.settings.local_storage_path / key.rsplit("/", 1)[0]


def _anomaly_events(env: AnomalyEnv, inspection_id: int) -> int:
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        return len(
            list(
                session.scalars(
                    select(InspectionEvent).where(
                        InspectionEvent.inspection_id == inspection_id, InspectionEvent.kind == "anomaly"
                    )
                )
            )
        )


@contextmanager
def _immutable(folder: Path) -> Iterator[None]:
    """No new file can be made in `folder` while inside (a full or read-only disk, as root sees it)."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {made.stderr.decode(errors='replace').strip()}")
    try:
        probe = folder / "probe"
        try:
            probe.write_bytes(b"x")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("an immutable folder still takes new files here")
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def _fetch_pictures(env: AnomalyEnv, result: dict[str, object]) -> None:
    for key in PICTURE_KEYS:
        picture = env.client.get(str(result[key]), headers=env.worker)
        assert picture.status_code == 200, (key, picture.text)
        assert picture.content.startswith(PNG_SIGNATURE)


def test_a_map_that_cannot_be_stored_is_a_503_and_the_previous_result_stays(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    plate = env.products["metal_plate"]
    defect = holdout(env, "metal_plate", "defect")[0]
    inspection_id = upload(env, demo_file(env, str(defect["path"])), plate)
    status, first = check(env, inspection_id)
    assert status == 200, first
    folder = _folder(env, inspection_id)
    files_before = sorted(p.name for p in folder.iterdir())

    with _immutable(folder):
        response = env.client.post(
            f"/api/v1/inspections/{inspection_id}/anomaly",
            json={"reference_image_id": image_ids(env, plate, "normal")[-1]},
            headers=env.worker,
        )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "step_speed.errors.map_not_stored"
    # said in the viewer's language (an earlier test may have left the shared client on English)
    key = "step_speed.errors.map_not_stored"
    assert response.json()["detail"] in {translate(key, "ko"), translate(key, "en")} - {key}
    assert int(response.headers["Retry-After"]) > 0
    # nothing recorded, nothing left behind: the first check's result, map and pictures stay as they were
    assert sorted(p.name for p in folder.iterdir()) == files_before
    record = env.client.get(f"/api/v1/inspections/{inspection_id}", headers=env.worker).json()
    assert record["anomaly_score"] == pytest.approx(first["score"])
    assert record["anomaly"]["reference_image"] == first["reference_image"]
    assert _anomaly_events(env, inspection_id) == 1
    _fetch_pictures(env, first)

    # A first check that fails leaves the inspection as uploaded, with no result to show.
    fresh = upload(env, demo_file(env, str(defect["path"])), plate)
    fresh_folder = _folder(env, fresh)
    with _immutable(fresh_folder):
        status, body = check(env, fresh)
    assert status == 503, body
    record = env.client.get(f"/api/v1/inspections/{fresh}", headers=env.worker).json()
    assert record["status"] == "uploaded"
    assert record["anomaly"] is None
    assert [p.name for p in fresh_folder.iterdir()] == [_row(env, fresh).image_key.rsplit("/", 1)[1]]
    assert _anomaly_events(env, fresh) == 0


def test_every_picture_is_served_right_after_the_check_from_the_stored_map(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    plate = env.products["metal_plate"]
    defect = holdout(env, "metal_plate", "defect")[1]
    inspection_id = upload(env, demo_file(env, str(defect["path"])), plate)
    status, result = check(env, inspection_id)
    assert status == 200, result
    render = _row(env, inspection_id).anomaly_result["render"]  # type: ignore[index]
    stored = env.client.app.state.storage.get(  # type: ignore[attr-defined]
        pictures.map_key(_row(env, inspection_id), render["token"], render["map_format"])
    )
    amap = np.load(io.BytesIO(stored), allow_pickle=False)
    assert amap.shape == (render["height"], render["width"])
    assert amap.dtype == np.float16
    _fetch_pictures(env, result)


def test_a_map_stored_compressed_by_an_earlier_version_still_draws(anomaly_env: AnomalyEnv) -> None:
    env = anomaly_env
    plate = env.products["metal_plate"]
    defect = holdout(env, "metal_plate", "defect")[0]
    inspection_id = upload(env, demo_file(env, str(defect["path"])), plate)
    status, result = check(env, inspection_id)
    assert status == 200, result
    storage = env.client.app.state.storage  # type: ignore[attr-defined]
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        assert row is not None
        render = dict(row.anomaly_result["render"])  # type: ignore[index]
        new_key = pictures.map_key(row, render["token"], render.pop("map_format"))
        amap = np.load(io.BytesIO(storage.get(new_key)), allow_pickle=False)
        # As the earlier version stored it: np.savez_compressed under "map", no map_format in the render.
        old = io.BytesIO()
        np.savez_compressed(old, map=amap)
        storage.put(pictures.map_key(row, render["token"], "npz"), old.getvalue(), "application/octet-stream")
        storage.delete(new_key)
        row.anomaly_result = {**row.anomaly_result, "render": render}  # type: ignore[dict-item]
        session.commit()
    _fetch_pictures(env, result)
    with Image.open(io.BytesIO(env.client.get(str(result["mask_url"]), headers=env.worker).content)) as mask:
        assert mask.size == (amap.shape[1], amap.shape[0])


def _rotated_jpeg(data: bytes) -> tuple[bytes, tuple[int, int]]:
    """The photo turned a quarter, with EXIF saying "rotate 90 CW to view": upright it is the photo again."""
    with Image.open(io.BytesIO(data)) as image:
        upright = image.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue(), upright.size


@pytest.mark.parametrize("kind", ["png", "rotated jpeg"])
def test_the_step_scores_the_photo_as_stored_whichever_step_decoded_it(
    anomaly_env: AnomalyEnv, kind: str
) -> None:
    env = anomaly_env
    plate = env.products["metal_plate"]
    data = demo_file(env, str(holdout(env, "metal_plate", "defect")[0]["path"]))
    size = Image.open(io.BytesIO(data)).size
    if kind == "rotated jpeg":
        data, size = _rotated_jpeg(data)
    inspection_id = upload(env, data, plate, name=f"photo.{'png' if kind == 'png' else 'jpg'}")
    status, result = check(env, inspection_id)
    assert status == 200, result
    assert (result["image_width"], result["image_height"]) == size  # upright
    state = env.client.app.state  # type: ignore[attr-defined]
    row = _row(env, inspection_id)
    with state.session_factory() as session:
        options = catalog_service.preprocessing_options(session, product_ids=[plate])[plate]
    model = current_models(state.services.models).get(plate)
    assert model is not None
    stored = open_rgb(state.storage.get(row.image_key), max_side=env.settings.max_decode_side)
    assert result["score"] == pytest.approx(model.detect(prepare(stored, options)).score, rel=1e-6)
