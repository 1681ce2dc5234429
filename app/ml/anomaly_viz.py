"""Pictures of a PatchCore result: heat map, defect mask, red overlay, side-by-side comparison, regions.

All functions take the (H, W) float anomaly map returned by ``PatchCore.detect`` (original image size)
and the product's ``Calibration.pixel_threshold``; images are PIL RGB (PNG-ready via ``to_png``).
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

_RED = (230, 30, 30)


@dataclass(frozen=True)
class Region:
    """One connected anomalous area.

    Args:
        x: Left edge in pixels.
        y: Top edge in pixels.
        width: Box width in pixels.
        height: Box height in pixels.
        score: Peak anomaly-map value inside the area.
        area: Number of pixels above the threshold.
    """

    x: int
    y: int
    width: int
    height: int
    score: float
    area: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def jet(values: np.ndarray) -> np.ndarray:
    """Jet colormap of values in [0, 1] -> uint8 RGB (..., 3)."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return (np.stack([r, g, b], axis=-1) * 255.0 + 0.5).astype(np.uint8)


def normalize_map(anomaly_map: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Map to [0, 1]: minimum -> 0, maximum (at least 1.5 x threshold when given) -> 1.

    Keeping the top of the scale above the threshold stops a normal image's highest noise from being
    painted as red as a real defect.
    """
    a = np.asarray(anomaly_map, dtype=np.float32)
    lo = float(a.min())
    hi = float(a.max())
    if threshold is not None:
        hi = max(hi, 1.5 * threshold)
    out: np.ndarray = np.clip((a - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return out


def heatmap(anomaly_map: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Jet heat map of the anomaly map, uint8 RGB (H, W, 3)."""
    return jet(normalize_map(anomaly_map, threshold))


def heatmap_overlay(
    image: Image.Image, anomaly_map: np.ndarray, threshold: float | None = None
) -> Image.Image:
    """Heat map blended 50/50 over the image."""
    base = image.convert("RGB").resize(anomaly_map.shape[::-1])
    return Image.blend(base, Image.fromarray(heatmap(anomaly_map, threshold)), 0.5)


def binary_mask(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean defect mask: map > threshold."""
    return np.asarray(anomaly_map) > threshold


def overlay(
    image: Image.Image,
    anomaly_map: np.ndarray,
    threshold: float,
    *,
    alpha: float = 0.45,
    color: tuple[int, int, int] = _RED,
    outline: bool = True,
) -> Image.Image:
    """The image with defect areas tinted semi-transparent red and outlined.

    Args:
        image: Original photo (any mode; the map's size is used if they differ).
        anomaly_map: (H, W) anomaly map.
        threshold: Pixel threshold (``Calibration.pixel_threshold``).
        alpha: Tint opacity inside the defect area.
        color: Tint and outline colour.
        outline: Draw a 2-px solid border around each area.

    Returns:
        RGB image of the map's size.
    """
    h, w = anomaly_map.shape
    rgb = np.asarray(image.convert("RGB").resize((w, h)), dtype=np.float32)
    mask = binary_mask(anomaly_map, threshold)
    tint = np.array(color, dtype=np.float32)
    rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * tint
    if outline and mask.any():
        edge = ndimage.binary_dilation(mask, iterations=2) & ~mask
        rgb[edge] = tint
    return Image.fromarray(rgb.astype(np.uint8))


def _font(size: int, font_path: Path | None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Given TTF, else NanumGothic from koreanize_matplotlib (Hangul labels), else PIL's default font."""
    candidates = [font_path] if font_path is not None else []
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "fonts" / "NanumGothic.ttf")
    for path in candidates:
        if path is not None and path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def comparison(
    reference: Image.Image,
    inspected: Image.Image,
    labels: tuple[str, str] | None = ("Reference", "Inspected"),
    *,
    height: int = 320,
    gap: int = 8,
    font_path: Path | None = None,
) -> Image.Image:
    """Reference normal image | inspected image (usually the overlay), side by side at the same height.

    Args:
        reference: A normal image of the product.
        inspected: The checked image, typically ``overlay(...)``.
        labels: Captions drawn above each panel (Hangul works), or None.
        height: Panel height in pixels; widths keep each image's aspect ratio.
        gap: White gap between panels.
        font_path: TTF font for captions.

    Returns:
        RGB image.
    """
    panels = []
    for im in (reference.convert("RGB"), inspected.convert("RGB")):
        width = max(1, round(im.width * height / im.height))
        panels.append(im.resize((width, height), Image.Resampling.BILINEAR))
    caption = 0 if labels is None else max(18, height // 12)
    canvas = Image.new("RGB", (panels[0].width + gap + panels[1].width, height + caption), "white")
    x = 0
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, caption - 6), font_path) if labels is not None else None
    for i, panel in enumerate(panels):
        canvas.paste(panel, (x, caption))
        if labels is not None and font is not None:
            draw.text((x + 4, 2), labels[i], fill=(20, 20, 20), font=font)
        x += panel.width + gap
    return canvas


def regions(anomaly_map: np.ndarray, threshold: float, min_area: int = 16) -> list[Region]:
    """Connected areas of ``map > threshold`` (8-connectivity) of at least ``min_area`` pixels.

    Args:
        anomaly_map: (H, W) anomaly map.
        threshold: Pixel threshold.
        min_area: Smaller areas are dropped as noise.

    Returns:
        Bounding boxes with peak scores, highest peak first.
    """
    a = np.asarray(anomaly_map, dtype=np.float32)
    labels, n = ndimage.label(a > threshold, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    # Areas by counting labels, and each kept area's peak inside its own box: scipy's per-label maximum
    # sorts the whole map (~5x slower on a 256 px map, on the request path of every check).
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    found = []
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or areas[lab] < min_area:
            continue
        ys, xs = sl
        found.append(
            Region(
                x=int(xs.start),
                y=int(ys.start),
                width=int(xs.stop - xs.start),
                height=int(ys.stop - ys.start),
                score=float(a[sl][labels[sl] == lab].max()),
                area=int(areas[lab]),
            )
        )
    return sorted(found, key=lambda r: r.score, reverse=True)


def draw_regions(image: Image.Image, found: list[Region], color: tuple[int, int, int] = _RED) -> Image.Image:
    """Copy of the image with a rectangle around each region."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    for r in found:
        draw.rectangle((r.x, r.y, r.x + r.width - 1, r.y + r.height - 1), outline=color, width=2)
    return out


def to_png(image: Image.Image | np.ndarray) -> bytes:
    """PNG bytes of a PIL image or uint8 array (a bool mask becomes black/white)."""
    if isinstance(image, np.ndarray):
        arr = image.astype(np.uint8) * 255 if image.dtype == bool else image
        image = Image.fromarray(arr)
    buf = io.BytesIO()
    # Level 1: ~4x faster than the default level 6 on a 256 px heat map (18 vs 79 ms), ~9 % larger.
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
