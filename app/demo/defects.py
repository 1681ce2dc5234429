"""Defect painters: each draws one visually distinct defect type onto a Surface and returns its mask.

Every painter is vectorised numpy over a bounding box around the defect, so a 256 px image costs a few
milliseconds. Intensities are chosen so defects are visible to a person but small relative to the frame
(anomaly detection should be feasible, not trivial).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from app.demo.textures import BoolArray, FloatArray, Surface, grid, smooth_noise


@dataclass(frozen=True)
class Painted:
    """A defective image and its binary ground-truth mask."""

    image: FloatArray
    mask: BoolArray


Painter = Callable[[np.random.Generator, Surface, str], Painted]


def _pick_centre(rng: np.random.Generator, surface: Surface) -> tuple[float, float]:
    """A random (y, x) inside the product's valid region."""
    ys, xs = np.nonzero(surface.valid)
    k = int(rng.integers(len(ys)))
    return float(ys[k]) + float(rng.uniform(-0.5, 0.5)), float(xs[k]) + float(rng.uniform(-0.5, 0.5))


def _segment_distance(points: FloatArray, yy: FloatArray, xx: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Distance from every pixel to a polyline and the arc-length fraction (0..1) of the nearest point."""
    p0, p1 = points[:-1], points[1:]
    seg = p1 - p0
    seg_len = np.sqrt((seg**2).sum(axis=1)) + 1e-6
    cum = np.concatenate([[0.0], np.cumsum(seg_len)]).astype(np.float32)
    best = np.full(yy.shape, np.inf, dtype=np.float32)
    frac = np.zeros(yy.shape, dtype=np.float32)
    for k in range(len(seg)):
        t = ((yy - p0[k, 0]) * seg[k, 0] + (xx - p0[k, 1]) * seg[k, 1]) / (seg_len[k] ** 2)
        t = np.clip(t, 0.0, 1.0)
        d = np.sqrt((yy - p0[k, 0] - t * seg[k, 0]) ** 2 + (xx - p0[k, 1] - t * seg[k, 1]) ** 2)
        closer = d < best
        best = np.where(closer, d, best)
        frac = np.where(closer, (cum[k] + t * seg_len[k]) / cum[-1], frac)
    return best, frac


def _fit_inside(polylines: list[FloatArray], size: int, pad: float) -> list[FloatArray]:
    """Shift (and if needed shrink) polylines together so they lie at least pad px inside the frame."""
    allp = np.concatenate(polylines)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    span = float((hi - lo).max())
    room = size - 1 - 2 * pad
    centre = (lo + hi) / 2
    scale = min(1.0, room / span) if span > 0 else 1.0
    out = [(centre + (pl - centre) * scale).astype(np.float32) for pl in polylines]
    allp = np.concatenate(out)
    shift = np.clip(pad - allp.min(axis=0), 0, None) - np.clip(allp.max(axis=0) - (size - 1 - pad), 0, None)
    return [(pl + shift).astype(np.float32) for pl in out]


def _finish(surface: Surface, image: FloatArray, mask: BoolArray) -> Painted:
    """Restrict the change and mask to the product surface."""
    keep = surface.surface
    out = np.where(keep[..., None], image, surface.image).astype(np.float32)
    return Painted(np.clip(out, 0, 1).astype(np.float32), mask & keep)


def scratch(rng: np.random.Generator, surface: Surface, product: str) -> Painted:
    """Thin, long, gently curved line, mostly bright (burnished), fading at both ends."""
    size = surface.image.shape[0]
    s = size / 256.0
    yy, xx = grid(size)
    cy, cx = _pick_centre(rng, surface)
    length = float(rng.uniform(0.22, 0.45)) * size
    ang = float(rng.uniform(0, np.pi))
    bend = float(rng.uniform(-0.08, 0.08)) * length
    t = np.linspace(-0.5, 0.5, 24, dtype=np.float32)
    dy, dx = np.sin(ang), np.cos(ang)
    pts = np.stack(
        [
            cy + t * length * dy + bend * (1 - 4 * t * t) * dx,
            cx + t * length * dx - bend * (1 - 4 * t * t) * dy,
        ],
        1,
    )
    pts = _fit_inside([pts.astype(np.float32)], size, 6.0 * s)[0]
    dist, frac = _segment_distance(pts, yy, xx)
    width = float(rng.uniform(0.6, 1.1)) * s
    profile = np.exp(-0.5 * (dist / width) ** 2)
    taper = np.clip(np.sin(np.pi * frac) * 1.6, 0, 1)
    bright = product != "fabric" and rng.uniform() < 0.75
    amp = float(rng.uniform(0.16, 0.28)) * (1.0 if bright else -0.8)
    img = surface.image + (amp * profile * taper)[..., None]
    # A faint dark groove on one side gives the scratch depth.
    dist2, _ = _segment_distance(
        (pts + np.array([dx, -dy], dtype=np.float32) * 1.4 * s).astype(np.float32), yy, xx
    )
    img = img - (0.05 * np.exp(-0.5 * (dist2 / width) ** 2) * taper)[..., None]
    mask = (dist <= width * 2.2 + 1.0) & (taper > 0.15)
    return _finish(surface, img.astype(np.float32), mask)


def _random_walk(
    rng: np.random.Generator,
    start: tuple[float, float],
    heading: float,
    length: float,
    step: float,
    wiggle: float,
) -> FloatArray:
    n = max(3, int(length / step))
    turns = rng.normal(0.0, wiggle, n).astype(np.float32)
    headings = heading + np.cumsum(turns) * 0.35 + turns
    pts = np.zeros((n + 1, 2), dtype=np.float32)
    pts[0] = start
    pts[1:, 0] = start[0] + np.cumsum(step * np.sin(headings))
    pts[1:, 1] = start[1] + np.cumsum(step * np.cos(headings))
    return pts


def crack(rng: np.random.Generator, surface: Surface, product: str) -> Painted:
    """Jagged dark line with one to three side branches and a lit edge."""
    size = surface.image.shape[0]
    s = size / 256.0
    yy, xx = grid(size)
    cy, cx = _pick_centre(rng, surface)
    heading = float(rng.uniform(0, 2 * np.pi))
    length = float(rng.uniform(0.18, 0.34)) * size
    main = _random_walk(rng, (cy, cx), heading, length, 3.0 * s, 0.55)
    main -= (main[-1] - main[0]) / 2  # centre the crack on the chosen point
    branches = [main]
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(len(main) // 5, max(len(main) // 5 + 1, 4 * len(main) // 5)))
        side = float(rng.choice([-1.0, 1.0]))
        b_head = heading + side * float(rng.uniform(0.5, 1.1))
        branches.append(
            _random_walk(
                rng,
                (float(main[k, 0]), float(main[k, 1])),
                b_head,
                length * float(rng.uniform(0.2, 0.45)),
                2.5 * s,
                0.6,
            )
        )
    branches = _fit_inside(branches, size, 6.0 * s)
    darkness = np.zeros(yy.shape, dtype=np.float32)
    mask = np.zeros(yy.shape, dtype=bool)
    for n, pts in enumerate(branches):
        dist, frac = _segment_distance(pts, yy, xx)
        width = (1.1 if n == 0 else 0.7) * s * (1.0 - 0.5 * frac if n else 1.0 - 0.35 * np.abs(2 * frac - 1))
        darkness = np.maximum(darkness, np.exp(-0.5 * (dist / width) ** 2))
        mask |= dist <= width * 2.0 + 1.0
    depth = float(rng.uniform(0.45, 0.65))
    # Lit lip: shift the darkness towards the light and add it back as a thin highlight.
    ly, lx = np.sin(surface.light_angle) * 1.2 * s, np.cos(surface.light_angle) * 1.2 * s
    lip = ndimage.shift(darkness, (ly, lx), order=1) - darkness
    img = surface.image * (1 - depth * darkness)[..., None] + (0.08 * np.clip(lip, 0, 1))[..., None]
    return _finish(surface, img.astype(np.float32), mask)


def hole(rng: np.random.Generator, surface: Surface, product: str) -> Painted:
    """Dark round pit with an irregular edge and a raised, directionally lit rim (frayed for fabric)."""
    size = surface.image.shape[0]
    s = size / 256.0
    yy, xx = grid(size)
    cy, cx = _pick_centre(rng, surface)
    radius = float(rng.uniform(3.5, 8.5)) * s
    dy, dx = yy - cy, xx - cx
    r = np.sqrt(dy * dy + dx * dx)
    th = np.arctan2(dy, dx)
    wobble = np.zeros_like(th)
    rough = 0.22 if product == "fabric" else 0.08
    for k in (2, 3, 5, 7):
        wobble += float(rng.normal(0, rough / k**0.5)) * np.cos(k * th + float(rng.uniform(0, 2 * np.pi)))
    rr = r / (radius * (1 + wobble))
    facing = np.cos(th - surface.light_angle)
    inside = np.clip((1.0 - rr) * radius, 0, 1)  # anti-aliased pit edge
    if product == "fabric":
        # Through-hole: the dark table shows through; broken fibres darken a ring around it.
        pit = np.array([0.06, 0.06, 0.07], dtype=np.float32) + 0.05 * np.clip(rr, 0, 1)[..., None]
        ring = np.exp(-(((rr - 1.15) / 0.22) ** 2))
        img = surface.image * (1 - 0.35 * ring)[..., None]
        img = img * (1 - inside[..., None]) + pit * inside[..., None]
        mask = rr <= 1.45
    else:
        # Inner wall opposite the light is lit; the burr rim is lit on the light side.
        pit_lum = 0.10 + 0.12 * np.clip(rr, 0, 1) * np.clip(-facing, 0, 1)
        rim = np.exp(-(((rr - 1.25) / 0.2) ** 2))
        img = surface.image + (rim * (0.14 * facing + 0.02))[..., None]
        img = (
            img * (1 - inside[..., None])
            + (pit_lum[..., None] * np.ones(3, dtype=np.float32)) * inside[..., None]
        )
        mask = rr <= 1.5
    return _finish(surface, img.astype(np.float32), mask)


def dent(rng: np.random.Generator, surface: Surface, product: str) -> Painted:
    """Shallow elliptical depression: shading from its slope against the light plus reflected-texture warp."""
    size = surface.image.shape[0]
    s = size / 256.0
    yy, xx = grid(size)
    cy, cx = _pick_centre(rng, surface)
    a = float(rng.uniform(7.0, 15.0)) * s
    b = a * float(rng.uniform(0.55, 1.0))
    rot = float(rng.uniform(0, np.pi))
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    bump = np.exp(-0.5 * ((u / a) ** 2 + (v / b) ** 2))
    # Slope of the depression (height = -bump) in image coordinates.
    du, dv = u / a**2 * bump, v / b**2 * bump
    gx = du * np.cos(rot) - dv * np.sin(rot)
    gy = du * np.sin(rot) + dv * np.cos(rot)
    slope = (gx * np.cos(surface.light_angle) + gy * np.sin(surface.light_angle)) * a
    amp = float(rng.uniform(0.20, 0.32))
    # Reflections of the texture bend inside the dent.
    warp = float(rng.uniform(2.0, 4.0)) * s * a
    coords = np.stack([yy - warp * gy, xx - warp * gx])
    warped = np.stack(
        [ndimage.map_coordinates(surface.image[..., c], coords, order=1, mode="nearest") for c in range(3)],
        axis=-1,
    )
    img = warped * (1 + amp * slope - 0.06 * bump)[..., None]
    mask = bump > 0.15
    return _finish(surface, img.astype(np.float32), mask)


_STAIN_COLOURS: dict[str, list[tuple[float, float, float]]] = {
    # multiply-blend colours: oil/grease, rust-brown, coffee, ink, electrolyte salts
    "metal_plate": [(0.55, 0.45, 0.25), (0.35, 0.33, 0.30), (0.62, 0.40, 0.22)],
    "fabric": [(0.50, 0.33, 0.18), (0.35, 0.40, 0.68), (0.38, 0.36, 0.32)],
    "battery_cap": [(0.45, 0.62, 0.52), (0.40, 0.42, 0.38)],
}


def contamination(rng: np.random.Generator, surface: Surface, product: str) -> Painted:
    """Irregular coloured blotch with a darker drying ring; for the cap, whitish-green electrolyte crust."""
    size = surface.image.shape[0]
    s = size / 256.0
    yy, xx = grid(size)
    cy, cx = _pick_centre(rng, surface)
    radius = float(rng.uniform(10.0, 18.0)) * s
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    blob = (
        1.0
        - r / radius
        + 0.45 * smooth_noise(rng, (size, size), 3.0 * s)
        + 0.1 * smooth_noise(rng, (size, size), 1.2)
    )
    # Fade out far from the centre so noise cannot leave detached specks around the blotch.
    blob = np.where(r < 1.5 * radius, blob, -1.0)
    alpha = np.clip(blob / 0.25, 0, 1)
    alpha = ndimage.gaussian_filter(alpha, 0.8 * s)
    edge = np.clip(1 - np.abs(blob) / 0.12, 0, 1)
    palette = _STAIN_COLOURS[product]
    colour = np.array(palette[int(rng.integers(len(palette)))], dtype=np.float32)
    strength = float(rng.uniform(0.6, 0.8) if product == "fabric" else rng.uniform(0.45, 0.7))
    a = (strength * alpha + 0.25 * edge)[..., None]
    mask = ndimage.binary_closing((alpha > 0.25) | (edge > 0.5), iterations=2)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.2 * sizes.max()))
    # Dropped specks must not stay painted, or pixels outside the ground truth would differ.
    a = a * ndimage.binary_dilation(mask, iterations=2)[..., None]
    if product == "battery_cap" and rng.uniform() < 0.7:
        # Crystalline leak residue: lightens and speckles the metal instead of darkening it.
        speck = np.clip(smooth_noise(rng, (size, size), 0.7), -1.5, 2.0)[..., None]
        crust = np.array([0.80, 0.92, 0.72], dtype=np.float32) * (0.9 + 0.12 * speck)
        a = np.clip(a * 1.3, 0, 0.95)
        img = surface.image * (1 - a) + crust * a
    else:
        img = surface.image * (1 - a * (1 - colour))
    return _finish(surface, img.astype(np.float32), mask)


_TINTS: dict[str, list[tuple[tuple[float, float, float], tuple[float, float, float]]]] = {
    # (centre colour, fringe colour) the region drifts towards: heat tint gold->blue, yellowing, fading
    "metal_plate": [((0.85, 0.65, 0.35), (0.45, 0.50, 0.80))],
    "fabric": [
        ((0.92, 0.78, 0.40), (0.90, 0.82, 0.55)),
        ((0.97, 0.95, 0.92), (0.93, 0.90, 0.85)),
        ((0.72, 0.60, 0.72), (0.78, 0.70, 0.70)),
    ],
    "battery_cap": [((0.88, 0.66, 0.36), (0.50, 0.52, 0.85)), ((0.80, 0.58, 0.40), (0.62, 0.50, 0.70))],
}


def discoloration(rng: np.random.Generator, surface: Surface, product: str) -> Painted:
    """Large, soft-edged colour shift that keeps the underlying texture (heat tint, yellowing, fading)."""
    size = surface.image.shape[0]
    s = size / 256.0
    yy, xx = grid(size)
    cy, cx = _pick_centre(rng, surface)
    radius = float(rng.uniform(30.0, 52.0)) * s
    elong = float(rng.uniform(0.6, 1.0))
    rot = float(rng.uniform(0, np.pi))
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) / elong
    field = 1.0 - np.sqrt(u * u + v * v) / radius + 0.2 * smooth_noise(rng, (size, size), 8.0 * s)
    alpha = np.clip(field / 0.6, 0, 1)
    alpha = alpha * alpha * (3 - 2 * alpha)  # smoothstep: no visible edge, unlike a stain
    palette = _TINTS[product]
    centre, fringe = (np.array(c, dtype=np.float32) for c in palette[int(rng.integers(len(palette)))])
    tint = centre * alpha[..., None] + fringe * (1 - alpha[..., None])
    strength = float(rng.uniform(0.5, 0.7))
    # Keep the texture's luminance detail but drift its chroma and level towards the tint.
    target = surface.image.mean(axis=2, keepdims=True) * tint * 1.35
    a = (strength * np.clip(alpha * 1.6, 0, 1))[..., None]
    img = surface.image * (1 - a) + target * a
    mask = alpha > 0.2
    return _finish(surface, img.astype(np.float32), mask)


def snag(rng: np.random.Generator, surface: Surface, product: str) -> Painted:
    """Pulled weft thread: a raised bright thread along the weave with gathered (puckered) cloth around it."""
    size = surface.image.shape[0]
    s = size / 256.0
    yy, xx = grid(size)
    cy, cx = _pick_centre(rng, surface)
    period = surface.period if surface.period > 0 else 10.0 * s
    along_weft = rng.uniform() < 0.5
    ang = surface.grain_angle + (0.0 if along_weft else np.pi / 2)
    length = float(rng.uniform(0.16, 0.32)) * size
    t = np.linspace(-0.5, 0.5, 16, dtype=np.float32)
    loop = float(rng.uniform(0.4, 0.9)) * period  # the pulled thread bows out in the middle
    dy, dx = np.sin(ang), np.cos(ang)
    bow = loop * np.exp(-((t / 0.12) ** 2))
    pts = np.stack([cy + t * length * dy + bow * dx, cx + t * length * dx - bow * dy], 1).astype(np.float32)
    pts = _fit_inside([pts], size, 2.0 * period)[0]
    dist, frac = _segment_distance(pts, yy, xx)
    # Pucker: pull cloth towards the thread, strongest in the middle of the pulled length.
    pull = (
        float(rng.uniform(0.8, 1.4)) * period * np.exp(-((dist / (1.2 * period)) ** 2)) * np.sin(np.pi * frac)
    )
    ny = yy - np.interp(frac, np.linspace(0, 1, len(pts)), pts[:, 0])
    nx = xx - np.interp(frac, np.linspace(0, 1, len(pts)), pts[:, 1])
    norm = np.sqrt(ny * ny + nx * nx) + 1e-3
    coords = np.stack([yy + pull * ny / norm * 0.5, xx + pull * nx / norm * 0.5])
    warped = np.stack(
        [ndimage.map_coordinates(surface.image[..., c], coords, order=1, mode="nearest") for c in range(3)],
        axis=-1,
    )
    width = 0.32 * period
    thread = np.exp(-0.5 * (dist / width) ** 2) * np.clip(np.sin(np.pi * frac) * 2.5, 0, 1)
    side = ny * np.cos(surface.light_angle) + nx * np.sin(surface.light_angle)
    shadow = (
        np.exp(-0.5 * ((dist - 1.3 * width) / width) ** 2)
        * (side < 0)
        * np.clip(np.sin(np.pi * frac) * 2.5, 0, 1)
    )
    thread_col = np.array([0.95, 0.90, 0.78], dtype=np.float32)
    img = warped * (1 - 0.45 * shadow)[..., None]
    img = img * (1 - 0.85 * thread[..., None]) + thread_col * 0.85 * thread[..., None]
    mask = (dist <= 1.6 * period) & (np.sin(np.pi * frac) > 0.05)
    return _finish(surface, img.astype(np.float32), mask)


PAINTERS: dict[str, Painter] = {
    "scratch": scratch,
    "crack": crack,
    "hole": hole,
    "dent": dent,
    "contamination": contamination,
    "discoloration": discoloration,
    "snag": snag,
}
