"""Anomaly pictures drawn when someone looks at them, then kept in the storage.

The anomaly step stores only the anomaly map (float16 `.npy`, 2 bytes a pixel: 128 KB for a 256 px map) and
what drawing needs (the pixel threshold, the reference image, the preprocessing used), map first, so no
result is recorded (and no picture URL answered) before its map is stored. The heat map, mask, overlay and
comparison PNGs are drawn on their first request and cached beside the photo under keys that carry the
check's token, so a re-check can never serve the previous check's pictures. The URLs of the API contract
(`/inspections/{id}/files/heatmap.png`, ...) do not change. Results stored before this (no `render` in the
result) keep their pictures under the plain names; maps stored before as `.npz` are still read.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import uuid
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from app.core.errors import ServiceUnavailableError
from app.core.i18n import current_language, translate
from app.core.services import Services
from app.db.tables import ReferenceImage
from app.inspection import service as inspection_service
from app.inspection.service import Photo
from app.ml import anomaly_viz
from app.ml.anomaly_runtime import load_prepared
from app.ml.preprocessing import PreprocessingOptions

logger = logging.getLogger(__name__)

PICTURES = ("heatmap.png", "mask.png", "overlay.png", "comparison.png")
COMPARISON_HEIGHT = 384


def _folder(inspection: Photo) -> str:
    return inspection.image_key.rsplit("/", 1)[0]


# Maps stored before this are zip-compressed `.npz` (render info without "map_format").
MAP_FORMAT = "npy"
# Seconds a client is asked to wait before retrying a check whose map could not be stored.
RETRY_AFTER_S = 5


def map_key(inspection: Photo, token: str, map_format: str = MAP_FORMAT) -> str:
    """Where a check's anomaly map is kept (never served as a file)."""
    return f"{_folder(inspection)}/anomaly_map_{token}.{map_format}"


def store_map(services: Services, inspection: Photo, anomaly_map: np.ndarray) -> str:
    """Keep the map for later drawing, uncompressed; returns the check's token. A failed write leaves
    nothing behind and is a 503 (zlib, even at level 1, took 10-40 ms of CPU per map for 40 % fewer bytes).
    """
    token = uuid.uuid4().hex[:12]
    buffer = io.BytesIO()
    np.save(buffer, anomaly_map.astype(np.float16), allow_pickle=False)
    try:
        services.storage.put(map_key(inspection, token), buffer.getvalue(), "application/octet-stream")
    except Exception as exc:
        logger.warning("the anomaly map of %s could not be stored", inspection.id, exc_info=True)
        forget(services, inspection, {"token": token})  # an S3 put can land although the client gave up
        raise ServiceUnavailableError("step_speed.errors.map_not_stored").retry_after(RETRY_AFTER_S) from exc
    return token


def render_info(
    *,
    token: str,
    shape: tuple[int, int],
    pixel_threshold: float,
    min_area: int,
    reference_image_id: int | None,
    options: PreprocessingOptions,
) -> dict[str, Any]:
    """What is stored in the anomaly result so the pictures can be drawn later exactly as at check time."""
    return {
        "token": token,
        "map_format": MAP_FORMAT,
        "height": shape[0],
        "width": shape[1],
        "pixel_threshold": pixel_threshold,
        "min_area": min_area,
        "reference_image_id": reference_image_id,
        "options": dataclasses.asdict(options),
    }


def _picture_key(inspection: Photo, name: str, render: dict[str, Any], lang: str) -> str:
    stem = name.removesuffix(".png")
    # The comparison carries translated labels, so each language has its own copy.
    suffix = f"_{lang}" if name == "comparison.png" else ""
    return f"{_folder(inspection)}/{stem}_{render['token']}{suffix}.png"


def file_key(session: Session, *, services: Services, inspection: Photo, name: str) -> str:
    """The storage key to serve for a derived file, drawing and caching an anomaly picture first if needed."""
    render = (inspection.anomaly_result or {}).get("render")
    if name not in PICTURES or not render:
        return inspection_service.file_key(inspection, name)
    key = _picture_key(inspection, name, render, current_language.get())
    if not services.storage.exists(key):
        services.storage.put(
            key,
            draw(session, services=services, inspection=inspection, name=name, render=render),
            "image/png",
        )
    return key


def draw(
    session: Session, *, services: Services, inspection: Photo, name: str, render: dict[str, Any]
) -> bytes:
    """Draw one picture from the stored map, the photo and (for the comparison) the reference image."""
    storage = services.storage
    amap = _load_map(storage.get(map_key(inspection, render["token"], render.get("map_format", "npz"))))
    threshold = float(render["pixel_threshold"])
    height, width = amap.shape
    photo = inspection_service.photo_rgb(services, inspection)
    display = photo.resize((width, height)) if photo.size != (width, height) else photo
    if name == "heatmap.png":
        return anomaly_viz.to_png(anomaly_viz.heatmap_overlay(display, amap, threshold))
    if name == "mask.png":
        return anomaly_viz.to_png(anomaly_viz.binary_mask(amap, threshold))
    found = anomaly_viz.regions(amap, threshold, min_area=int(render["min_area"]))
    overlay = anomaly_viz.draw_regions(anomaly_viz.overlay(display, amap, threshold), found)
    if name == "overlay.png":
        return anomaly_viz.to_png(overlay)
    reference: Image.Image = display
    reference_id = render.get("reference_image_id")
    row = session.get(ReferenceImage, reference_id) if reference_id is not None else None
    if row is not None:
        options = PreprocessingOptions(**render.get("options", {}))
        reference = load_prepared(storage, row.object_key, options)
    labels = (translate("anomaly.reference_label"), translate("anomaly.inspected_label"))
    return anomaly_viz.to_png(anomaly_viz.comparison(reference, overlay, labels, height=COMPARISON_HEIGHT))


def _load_map(data: bytes) -> np.ndarray:
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return loaded.astype(np.float32)
    with loaded as archive:  # an `.npz` stored before maps were written uncompressed
        return np.asarray(archive["map"], dtype=np.float32)


def forget(services: Services, inspection: Photo, render: dict[str, Any] | None) -> None:
    """Delete a superseded check's map and cached pictures (best effort: they are never served again)."""
    if not render:
        return
    prefix = f"{_folder(inspection)}/"
    token = render["token"]
    try:
        keys = [k for k in services.storage.list(prefix) if f"_{token}" in k.rsplit("/", 1)[-1]]
        for key in keys:
            services.storage.delete(key)
    except Exception:
        logger.warning("could not delete the superseded anomaly pictures of %s", inspection.id, exc_info=True)
