"""Deterministic demo dataset: product images, defect images with masks, and Korean PDF manuals.

Usage: ``python -m app.demo.generator OUT_DIR [--seed N] [--size PX] [--contact-sheet PNG]``.

Every image draws from its own random stream keyed by (seed, product, kind, defect type, index), so a
file's content depends only on those keys, never on generation order or on the other counts.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.core.fileio import atomic_write_bytes
from app.demo.catalog import PRODUCTS, ProductSpec
from app.demo.defects import PAINTERS
from app.demo.manual_pdf import render_manual
from app.demo.textures import TEXTURES

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
SENSOR_NOISE = 0.008  # std of additive camera noise on a 0..1 scale
MIN_MASK_FRACTION = 0.0008  # a defect smaller than this (≈52 px at 256²) is re-drawn

_KIND_NORMAL = 0
_KIND_DEFECT = 1

UInt8Array = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class DemoDefectType:
    """A defect type of a product and where its chapter starts in the manual."""

    code: str
    name: str
    description: str
    manual_heading: str
    manual_page: int


@dataclass(frozen=True)
class DemoNormalImage:
    """A defect-free image; holdout images are kept out of the PatchCore memory bank for evaluation."""

    path: str
    holdout: bool


@dataclass(frozen=True)
class DemoDefectImage:
    """A defective image with its ground-truth mask; holdout images are kept out of the search index."""

    path: str
    defect_code: str
    mask_path: str
    holdout: bool
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 of the mask, end-exclusive
    mask_area: int  # defect pixels


@dataclass(frozen=True)
class DemoManualSection:
    """A manual heading and its 1-based page."""

    number: str
    title: str
    page: int
    defect_code: str | None


@dataclass(frozen=True)
class DemoProduct:
    """One product with its files (paths relative to the dataset root, POSIX separators)."""

    code: str
    name: str
    description: str
    defect_types: tuple[DemoDefectType, ...]
    normal_images: tuple[DemoNormalImage, ...]
    defect_images: tuple[DemoDefectImage, ...]
    manual_pdf: str
    manual_sections: tuple[DemoManualSection, ...]


@dataclass(frozen=True)
class DemoManifest:
    """Everything generate_demo_dataset wrote; also stored as manifest.json in the dataset root."""

    version: int
    seed: int
    size: int
    products: tuple[DemoProduct, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def to_json(self) -> str:
        """Stable JSON text (UTF-8 Korean kept readable)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DemoManifest:
        """Inverse of to_dict."""
        products = tuple(
            DemoProduct(
                code=p["code"],
                name=p["name"],
                description=p["description"],
                defect_types=tuple(DemoDefectType(**d) for d in p["defect_types"]),
                normal_images=tuple(DemoNormalImage(**n) for n in p["normal_images"]),
                defect_images=tuple(
                    DemoDefectImage(**{**d, "bbox": tuple(d["bbox"])}) for d in p["defect_images"]
                ),
                manual_pdf=p["manual_pdf"],
                manual_sections=tuple(DemoManualSection(**s) for s in p["manual_sections"]),
            )
            for p in data["products"]
        )
        return cls(
            version=int(data["version"]), seed=int(data["seed"]), size=int(data["size"]), products=products
        )

    @classmethod
    def load(cls, path: Path) -> DemoManifest:
        """Read a manifest.json written by generate_demo_dataset."""
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def product(self, code: str) -> DemoProduct:
        """The product with this code."""
        for p in self.products:
            if p.code == code:
                return p
        raise KeyError(code)


@dataclass(frozen=True)
class DefectSample:
    """A defective image, the same frame without the defect, and the defect's mask."""

    defective: UInt8Array  # (H, W, 3)
    normal: UInt8Array  # (H, W, 3), identical outside the defect
    mask: BoolArray  # (H, W)


def _product_spec(code: str) -> tuple[int, ProductSpec]:
    for idx, spec in enumerate(PRODUCTS):
        if spec.code == code:
            return idx, spec
    raise KeyError(f"unknown demo product {code!r}; known: {[p.code for p in PRODUCTS]}")


def _to_uint8(img: npt.NDArray[np.float32], noise_rng: np.random.Generator) -> UInt8Array:
    noisy = img + noise_rng.normal(0.0, SENSOR_NOISE, img.shape).astype(np.float32)
    return np.asarray(np.clip(np.rint(noisy * 255.0), 0, 255), dtype=np.uint8)


def render_normal(product: str, *, seed: int, index: int, size: int = 256) -> UInt8Array:
    """The index-th defect-free image of a product as (size, size, 3) uint8."""
    p_idx, spec = _product_spec(product)
    key = [seed, p_idx, _KIND_NORMAL, 0, index]
    surface = TEXTURES[spec.code](np.random.default_rng([*key, 0]), size)
    return _to_uint8(surface.image, np.random.default_rng([*key, 2]))


def render_defect(product: str, defect: str, *, seed: int, index: int, size: int = 256) -> DefectSample:
    """The index-th image of one defect type of a product, with its defect-free twin and mask."""
    p_idx, spec = _product_spec(product)
    codes = [d.code for d in spec.defects]
    if defect not in codes:
        raise KeyError(f"{product} has no defect {defect!r}; known: {codes}")
    key = [seed, p_idx, _KIND_DEFECT, codes.index(defect), index]
    surface = TEXTURES[spec.code](np.random.default_rng([*key, 0]), size)
    min_area = MIN_MASK_FRACTION * size * size
    for attempt in range(20):
        painted = PAINTERS[defect](np.random.default_rng([*key, 1, attempt]), surface, spec.code)
        if painted.mask.sum() >= min_area:
            break
    defective = _to_uint8(painted.image, np.random.default_rng([*key, 2]))
    normal = _to_uint8(surface.image, np.random.default_rng([*key, 2]))
    return DefectSample(defective=defective, normal=normal, mask=painted.mask)


def _png_bytes(arr: UInt8Array) -> bytes:
    # No pnginfo is passed, so PIL writes no time/text chunks: equal pixels give equal bytes.
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _holdout_count(n: int, fraction: float) -> int:
    return 0 if n < 2 else max(1, round(n * fraction))


def generate_demo_dataset(
    out_dir: Path,
    *,
    seed: int = 0,
    size: int = 256,
    normals_per_product: int = 40,
    defects_per_type: int = 8,
) -> DemoManifest:
    """Write the demo dataset under out_dir and return its manifest (also written as manifest.json).

    Layout per product: ``<code>/normal/normal_000.png``, ``<code>/defect/<type>/<type>_000.png``,
    ``<code>/mask/<type>/<type>_000.png`` (L mode, 0/255) and ``<code>/manual_<code>.pdf``.
    The last 20% of normal images and the last 25% of each defect type (at least one when there are two
    or more) are flagged ``holdout``. The same arguments always produce byte-identical files.
    """
    if size < 64:
        raise ValueError("size must be at least 64 px")
    out_dir.mkdir(parents=True, exist_ok=True)
    products: list[DemoProduct] = []
    for spec in PRODUCTS:
        pdf, sections = render_manual(spec)
        manual_rel = f"{spec.code}/manual_{spec.code}.pdf"
        atomic_write_bytes(out_dir / manual_rel, pdf, durable=False)
        chapter = {s.defect_code: s for s in sections if s.defect_code and "." not in s.number}

        n_hold = _holdout_count(normals_per_product, 0.2)
        normals: list[DemoNormalImage] = []
        for i in range(normals_per_product):
            rel = f"{spec.code}/normal/normal_{i:03d}.png"
            atomic_write_bytes(
                out_dir / rel,
                _png_bytes(render_normal(spec.code, seed=seed, index=i, size=size)),
                durable=False,
            )
            normals.append(DemoNormalImage(rel, holdout=i >= normals_per_product - n_hold))

        d_hold = _holdout_count(defects_per_type, 0.25)
        defects: list[DemoDefectImage] = []
        for d in spec.defects:
            for i in range(defects_per_type):
                sample = render_defect(spec.code, d.code, seed=seed, index=i, size=size)
                rel = f"{spec.code}/defect/{d.code}/{d.code}_{i:03d}.png"
                mask_rel = f"{spec.code}/mask/{d.code}/{d.code}_{i:03d}.png"
                atomic_write_bytes(out_dir / rel, _png_bytes(sample.defective), durable=False)
                atomic_write_bytes(
                    out_dir / mask_rel, _png_bytes(sample.mask.astype(np.uint8) * 255), durable=False
                )
                ys, xs = np.nonzero(sample.mask)
                bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                defects.append(
                    DemoDefectImage(
                        rel, d.code, mask_rel, i >= defects_per_type - d_hold, bbox, int(sample.mask.sum())
                    )
                )

        products.append(
            DemoProduct(
                code=spec.code,
                name=spec.name,
                description=spec.description,
                defect_types=tuple(
                    DemoDefectType(d.code, d.name, d.description, chapter[d.code].title, chapter[d.code].page)
                    for d in spec.defects
                ),
                normal_images=tuple(normals),
                defect_images=tuple(defects),
                manual_pdf=manual_rel,
                manual_sections=tuple(
                    DemoManualSection(s.number, s.title, s.page, s.defect_code) for s in sections
                ),
            )
        )
    manifest = DemoManifest(MANIFEST_VERSION, seed, size, tuple(products))
    atomic_write_bytes(out_dir / "manifest.json", manifest.to_json().encode("utf-8"), durable=False)
    return manifest


def render_contact_sheet(manifest: DemoManifest, root: Path, *, normals: int = 2) -> Image.Image:
    """One row per product: a few normal images, then one example per defect type with its mask outlined."""
    size = manifest.size
    rows = []
    width = max(normals + len(p.defect_types) for p in manifest.products)
    for p in manifest.products:
        tiles = [np.asarray(Image.open(root / n.path).convert("RGB")) for n in p.normal_images[:normals]]
        for d in p.defect_types:
            first = next(img for img in p.defect_images if img.defect_code == d.code)
            tile = np.asarray(Image.open(root / first.path).convert("RGB")).copy()
            mask = np.asarray(Image.open(root / first.mask_path)) > 127
            edge = mask & ~(
                np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
            )
            tile[edge] = (255, 0, 0)
            tiles.append(tile)
        tiles += [np.zeros((size, size, 3), np.uint8)] * (width - len(tiles))
        rows.append(np.concatenate(tiles, axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description="Generate the deterministic DefectLens demo dataset.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--normals", type=int, default=40, help="normal images per product")
    parser.add_argument("--defects", type=int, default=8, help="images per defect type")
    parser.add_argument("--contact-sheet", type=Path, default=None, help="also write an overview PNG here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = generate_demo_dataset(
        args.out_dir,
        seed=args.seed,
        size=args.size,
        normals_per_product=args.normals,
        defects_per_type=args.defects,
    )
    n_img = sum(len(p.normal_images) + len(p.defect_images) for p in manifest.products)
    logger.info(
        "wrote %d images for %d products; manifest: %s",
        n_img,
        len(manifest.products),
        args.out_dir / "manifest.json",
    )
    if args.contact_sheet is not None:
        render_contact_sheet(manifest, args.out_dir).save(args.contact_sheet)
        logger.info("contact sheet: %s", args.contact_sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
