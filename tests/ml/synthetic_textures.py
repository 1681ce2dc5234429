"""Synthetic textured product images with known defects (dark holes, scratches) and their masks.

Used by the PatchCore tests and bench/patchcore_bench.py. Normal images are a noisy regular weave with a
random phase shift and brightness jitter per image, so no two normals are identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class Sample:
    """One synthetic image and its ground-truth defect mask (all False for normal images)."""

    image: Image.Image
    mask: np.ndarray
    kind: str  # "normal", "hole" or "scratch"


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Noisy regular weave texture, float RGB in [0, 1] of shape (H, W, 3)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = 12.0
    px, py = rng.uniform(0, period, size=2)
    weave = 0.5 + 0.22 * np.sin(2 * np.pi * (xx + px) / period) * np.sin(2 * np.pi * (yy + py) / period)
    weave += 0.08 * np.sin(2 * np.pi * (xx + yy + px) / (period * 2.5))
    base = weave[..., None] * np.array([0.95, 0.85, 0.7], dtype=np.float32)
    base *= rng.uniform(0.93, 1.07)
    base += rng.normal(0.0, 0.035, size=base.shape).astype(np.float32)
    return np.clip(base, 0.0, 1.0)


def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8))


def add_hole(rng: np.random.Generator, arr: np.ndarray) -> np.ndarray:
    """Paint a dark elliptical hole in place; return its mask."""
    h, w = arr.shape[:2]
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    ry, rx = rng.uniform(0.05, 0.09) * h, rng.uniform(0.05, 0.09) * w
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    arr[mask] = arr[mask] * 0.15 + 0.02
    return mask


def add_scratch(rng: np.random.Generator, arr: np.ndarray) -> np.ndarray:
    """Paint a bright straight scratch in place; return its mask."""
    h, w = arr.shape[:2]
    y0, x0 = rng.uniform(0.2, 0.5) * h, rng.uniform(0.15, 0.4) * w
    angle = rng.uniform(-0.6, 0.6)
    length = rng.uniform(0.35, 0.5) * w
    y1, x1 = y0 + np.sin(angle) * length, x0 + np.cos(angle) * length
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Distance of each pixel to the segment (x0,y0)-(x1,y1).
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    dist = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
    mask = dist <= max(1.5, 0.012 * w)
    arr[mask] = 0.97
    return mask


def make_sample(rng: np.random.Generator, kind: str, height: int = 128, width: int = 128) -> Sample:
    """One normal / hole / scratch sample."""
    arr = texture(rng, height, width)
    if kind == "normal":
        mask = np.zeros((height, width), dtype=bool)
    elif kind == "hole":
        mask = add_hole(rng, arr)
    elif kind == "scratch":
        mask = add_scratch(rng, arr)
    else:
        raise ValueError(kind)
    return Sample(_to_image(arr), mask, kind)


def make_dataset(
    seed: int, n_normal: int, n_defect: int, height: int = 128, width: int = 128
) -> tuple[list[Sample], list[Sample]]:
    """(normal samples, defect samples alternating hole/scratch)."""
    rng = np.random.default_rng(seed)
    normals = [make_sample(rng, "normal", height, width) for _ in range(n_normal)]
    defects = [make_sample(rng, ("hole", "scratch")[i % 2], height, width) for i in range(n_defect)]
    return normals, defects
