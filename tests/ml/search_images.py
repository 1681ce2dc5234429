"""Synthetic part photos for the search tests: a brushed-metal texture with a hole, a scratch or nothing."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def texture(seed: int = 0, size: int = 160) -> Image.Image:
    """A grey brushed-metal-like texture (horizontal streaks plus fine noise)."""
    rng = np.random.default_rng(seed)
    streaks = rng.normal(0, 18, (size, 1)) + rng.normal(0, 6, (size, size))
    base = np.clip(140 + streaks, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([base, base, base], axis=-1)).filter(ImageFilter.GaussianBlur(0.6))


def with_hole(image: Image.Image, centre: tuple[int, int] = (70, 80), radius: int = 18) -> Image.Image:
    """Copy of image with a dark round hole."""
    out = image.copy()
    x, y = centre
    ImageDraw.Draw(out).ellipse((x - radius, y - radius, x + radius, y + radius), fill=(20, 18, 16))
    return out


def with_scratch(image: Image.Image) -> Image.Image:
    """Copy of image with a long bright diagonal scratch."""
    out = image.copy()
    w, h = out.size
    ImageDraw.Draw(out).line((10, h - 20, w - 10, 25), fill=(245, 245, 240), width=4)
    return out


def perturbed(image: Image.Image, seed: int = 1) -> Image.Image:
    """A slightly different photo of the same part: brighter, a bit of sensor noise, shifted 3 px."""
    rng = np.random.default_rng(seed)
    array = np.asarray(image, dtype=np.float64) * 1.06 + 4 + rng.normal(0, 4, (*image.size[::-1], 3))
    shifted = np.roll(np.clip(array, 0, 255).astype(np.uint8), shift=(3, 2), axis=(0, 1))
    return Image.fromarray(shifted)
