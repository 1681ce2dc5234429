"""Procedural, seed-driven textures for the demo products (float32 RGB in [0, 1])."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Surface:
    """A rendered defect-free product image plus what defect painters need to know about it."""

    image: FloatArray  # (H, W, 3) float32 in [0, 1], no sensor noise yet
    valid: BoolArray  # (H, W) where a defect may be centred (product surface, away from edges)
    surface: BoolArray  # (H, W) where the product is (defect pixels are clipped to this)
    light_angle: float  # radians, direction the key light comes from (image coordinates)
    grain_angle: float  # radians, dominant texture direction (brushing / weft thread)
    period: float  # characteristic texture period in px (thread pitch), 0 if none


def grid(size: int) -> tuple[FloatArray, FloatArray]:
    """Pixel-centre coordinates (yy, xx) for a square image."""
    return _grid(size)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[FloatArray, FloatArray]:
    ax = np.arange(size, dtype=np.float32)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> FloatArray:
    """Gaussian-filtered white noise normalised to zero mean and unit std."""
    # Wide blurs are computed on a coarse grid and upsampled: same look, a fraction of the cost.
    factor = max(1, int(sigma / 3))
    small = (-(-shape[0] // factor), -(-shape[1] // factor))
    noise = rng.standard_normal(small).astype(np.float32)
    field: FloatArray = ndimage.gaussian_filter(noise, sigma=sigma / factor, mode="wrap")
    if factor > 1:
        field = _resize(field, shape)
    field = field - field.mean()
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32)


def _resize(field: FloatArray, shape: tuple[int, int]) -> FloatArray:
    """Bilinear resize of a float field to (rows, cols)."""
    img = Image.fromarray(field.astype(np.float32), mode="F")
    return np.array(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def _lighting(size: int, angle: float, strength: float) -> FloatArray:
    """Linear illumination ramp across the frame, brighter towards the light."""
    yy, xx = grid(size)
    c = (size - 1) / 2.0
    ramp: FloatArray = ((xx - c) * np.cos(angle) + (yy - c) * np.sin(angle)) / size
    return (1.0 + strength * ramp).astype(np.float32)


def _border_valid(size: int, margin: int) -> BoolArray:
    valid = np.zeros((size, size), dtype=bool)
    valid[margin : size - margin, margin : size - margin] = True
    return valid


def metal_plate(rng: np.random.Generator, size: int) -> Surface:
    """Brushed stainless plate: streaks along the brushing direction, lighting ramp and highlight band."""
    s = size / 256.0
    pad = size // 4
    big = size + 2 * pad
    grain = float(rng.uniform(-5.0, 5.0))
    # Streaks blur mostly along x, so they are computed 8x coarser in x and stretched back.
    coarse = rng.standard_normal((big, big // 8)).astype(np.float32)
    streak = _resize(ndimage.gaussian_filter(coarse, sigma=(0.7 * s, 30 * s / 8)), (big, big))
    fine = ndimage.gaussian_filter(rng.standard_normal((big, big)).astype(np.float32), sigma=(0.5, 3.0 * s))
    streak /= max(float(streak.std()), 1e-6)
    fine /= max(float(fine.std()), 1e-6)
    tex = 0.7 * streak + 0.3 * fine
    tex = ndimage.rotate(tex, grain, reshape=False, order=1, mode="reflect")[
        pad : pad + size, pad : pad + size
    ]
    mottling = smooth_noise(rng, (size, size), 40 * s)

    light = float(rng.uniform(0, 2 * np.pi))
    base = float(rng.uniform(0.56, 0.66))
    lum = base + 0.045 * tex + 0.02 * mottling
    lum = lum * _lighting(size, light, float(rng.uniform(0.12, 0.25)))
    # Brushed metal reflects a highlight band perpendicular to the brushing direction.
    yy, xx = grid(size)
    g = np.deg2rad(grain)
    along = (xx - size / 2) * np.cos(g) + (yy - size / 2) * np.sin(g)
    band_pos = float(rng.uniform(-0.35, 0.35)) * size
    lum = lum + 0.08 * np.exp(-(((along - band_pos) / (0.22 * size)) ** 2))
    tint = np.array([0.97, 0.99, 1.02], dtype=np.float32) + rng.uniform(-0.01, 0.01, 3).astype(np.float32)
    img = np.clip(lum[..., None] * tint, 0, 1).astype(np.float32)
    valid = _border_valid(size, int(0.12 * size))
    return Surface(img, valid, np.ones((size, size), dtype=bool), light, g, 0.0)


def fabric(rng: np.random.Generator, size: int) -> Surface:
    """Plain-weave cotton: warp/weft threads alternating over/under with per-thread colour and slubs."""
    s = size / 256.0
    yy, xx = grid(size)
    period = float(rng.uniform(9.0, 10.5)) * s
    angle = np.deg2rad(float(rng.uniform(-3.0, 3.0)))
    # Slight waviness so threads are not ruler-straight.
    wob_u = 0.9 * s * smooth_noise(rng, (size, size), 18 * s)
    wob_v = 0.9 * s * smooth_noise(rng, (size, size), 18 * s)
    u = xx * np.cos(angle) + yy * np.sin(angle) + wob_u + float(rng.uniform(0, 100))
    v = -xx * np.sin(angle) + yy * np.cos(angle) + wob_v + float(rng.uniform(0, 100))
    i = np.floor(u / period).astype(np.int64)
    j = np.floor(v / period).astype(np.int64)
    fu = u / period - i
    fv = v / period - j
    warp_prof = np.clip(np.sin(np.pi * fu), 0, 1) ** 0.7  # across a vertical (warp) thread
    weft_prof = np.clip(np.sin(np.pi * fv), 0, 1) ** 0.7
    warp_on_top = ((i + j) % 2) == 0
    # The thread on top bulges in the middle of the crossing and dips where it goes under.
    height = np.where(
        warp_on_top,
        warp_prof * (0.7 + 0.3 * np.sin(np.pi * fv)),
        weft_prof * (0.7 + 0.3 * np.sin(np.pi * fu)),
    )
    n_threads = 256
    warp_var = 1.0 + 0.06 * rng.standard_normal(n_threads).astype(np.float32)
    weft_var = 1.0 + 0.06 * rng.standard_normal(n_threads).astype(np.float32)
    var = np.where(warp_on_top, warp_var[i % n_threads], weft_var[j % n_threads])
    fibre = smooth_noise(rng, (size, size), 0.8)
    base = np.array([0.80, 0.74, 0.62], dtype=np.float32) * float(rng.uniform(0.92, 1.05))
    weft_tint = np.array([0.98, 1.0, 1.03], dtype=np.float32)
    colour = np.where(warp_on_top[..., None], base, base * weft_tint)
    lum = (0.30 + 0.70 * height) * var + 0.035 * fibre
    lum = lum * _lighting(size, float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.08, 0.18)))
    img = np.clip(colour * lum[..., None], 0, 1).astype(np.float32)
    light = float(rng.uniform(0, 2 * np.pi))
    valid = _border_valid(size, int(0.12 * size))
    return Surface(img, valid, np.ones((size, size), dtype=bool), light, float(angle), period)


@lru_cache(maxsize=4)
def _cap_marking(size: int) -> FloatArray:
    """Stamped '+' and type text on the cap face, rendered once per size at 4x and downsampled."""
    scale = 4
    big = size * scale
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    c = big / 2
    arm, th = 0.09 * big, 0.018 * big
    draw.rectangle((c - arm, c - 0.16 * big - th, c + arm, c - 0.16 * big + th), fill=255)
    draw.rectangle((c - th, c - 0.16 * big - arm, c + th, c - 0.16 * big + arm), fill=255)
    font = ImageFont.truetype(str(nanum_font_path()), size=int(0.075 * big))
    for text, y in (("DL2032", 0.06), ("3V  LITHIUM", 0.15)):
        box = draw.textbbox((0, 0), text, font=font)
        draw.text((c - (box[2] - box[0]) / 2, c + y * big - (box[3] - box[1]) / 2), text, fill=255, font=font)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    arr = np.asarray(small, dtype=np.float32) / 255.0
    arr.setflags(write=False)
    return arr


def nanum_font_path(bold: bool = False) -> Path:
    """NanumGothic TTF shipped inside the koreanize_matplotlib package."""
    # find_spec locates the package without importing it (importing it reconfigures matplotlib).
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("koreanize_matplotlib is not installed; it provides the NanumGothic font")
    name = "NanumGothicBold.ttf" if bold else "NanumGothic.ttf"
    return Path(spec.origin).parent / "fonts" / name


def battery_cap(rng: np.random.Generator, size: int) -> Surface:
    """Coin-cell cap on a rubber conveyor mat: lathe rings, bevelled rim, stamped marking, jittered pose."""
    s = size / 256.0
    yy, xx = grid(size)
    cx = size / 2 + float(rng.uniform(-0.035, 0.035)) * size
    cy = size / 2 + float(rng.uniform(-0.035, 0.035)) * size
    radius = 0.39 * size * float(rng.uniform(0.98, 1.02))
    rot = float(rng.uniform(-12.0, 12.0))
    light = float(rng.uniform(np.deg2rad(200), np.deg2rad(250)))  # key light from the upper left
    bright = float(rng.uniform(0.93, 1.07))

    dx, dy = xx - cx, yy - cy
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)

    # Conveyor mat: dark grey-green with fine grain, plus the cap's soft drop shadow.
    mat = (
        0.19 + 0.018 * smooth_noise(rng, (size, size), 1.0) + 0.012 * smooth_noise(rng, (size, size), 12 * s)
    )
    sx, sy = 0.035 * size * np.cos(light + np.pi), 0.035 * size * np.sin(light + np.pi)
    rs = np.sqrt((xx - cx - sx) ** 2 + (yy - cy - sy) ** 2)
    shadow = 1.0 - 0.55 * np.clip((radius * 1.06 - rs) / (0.08 * size), 0, 1)
    bg = (mat * shadow)[..., None] * np.array([0.92, 1.0, 0.96], dtype=np.float32)

    # Cap face: lathe-turned concentric rings (1-D noise in r) and a broad specular lobe.
    ring_noise = ndimage.gaussian_filter1d(rng.standard_normal(int(size)).astype(np.float32), 0.8 * s)
    ring_noise /= max(float(ring_noise.std()), 1e-6)
    rings = np.interp(r.ravel(), np.arange(size, dtype=np.float32), ring_noise).reshape(size, size)
    hx, hy = cx + 0.28 * radius * np.cos(light), cy + 0.28 * radius * np.sin(light)
    spec = np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.45 * radius) ** 2))
    face = 0.58 + 0.025 * rings + 0.18 * spec
    # Step ring at 0.83R and bevel at the rim, shaded by the light direction.
    facing = np.cos(theta - light)
    step = np.exp(-(((r - 0.83 * radius) / (0.012 * size)) ** 2))
    face = face - 0.10 * step * (0.5 - 0.5 * facing) + 0.06 * step * (0.5 + 0.5 * facing)
    bevel = np.clip((r - 0.92 * radius) / (0.08 * radius), 0, 1)
    face = face * (1 - bevel) + bevel * (0.42 + 0.22 * facing)
    # Stamped marking: emboss using the marking's gradient against the light direction.
    mark = ndimage.rotate(_cap_marking(size), rot, reshape=False, order=1)
    mark = ndimage.shift(mark, (cy - size / 2, cx - size / 2), order=1)
    gy, gx = np.gradient(ndimage.gaussian_filter(mark, 0.6 * s))
    emboss = -(gx * np.cos(light) + gy * np.sin(light))
    face = face + 0.55 * emboss - 0.03 * mark
    face_rgb = face[..., None] * np.array([0.99, 0.99, 1.02], dtype=np.float32)

    inside = np.clip(radius - r + 0.5, 0, 1)[..., None]  # anti-aliased outline
    img = np.clip((face_rgb * inside + bg * (1 - inside)) * bright, 0, 1).astype(np.float32)
    surface = r < radius * 0.97
    valid = r < radius * 0.72
    return Surface(img, valid, surface, light, np.deg2rad(rot), 0.0)


TEXTURES: dict[str, Callable[[np.random.Generator, int], Surface]] = {
    "metal_plate": metal_plate,
    "fabric": fabric,
    "battery_cap": battery_cap,
}
