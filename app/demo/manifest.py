"""Readers of the demo data's manifests (data/demo/*/manifest.json): masks and held-out images by product."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.core.config import Settings


def _products(settings: Settings, product_code: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(dataset root, product entry) of every demo manifest that lists the product."""
    for manifest_path in sorted((settings.data_path / "demo").glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for item in manifest.get("products", []):
            if item.get("code") == product_code:
                yield manifest_path.parent, item


def demo_masks(settings: Settings, product_code: str) -> dict[str, Path]:
    """Ground-truth masks by image file name for a product loaded from the demo data (else empty)."""
    found: dict[str, Path] = {}
    for root, item in _products(settings, product_code):
        for entry in item.get("defect_images", []):
            mask = root / entry["mask_path"]
            if mask.is_file():
                found[Path(entry["path"]).name] = mask
    return found


def demo_holdout(settings: Settings, product_code: str) -> tuple[list[Path], list[Path]]:
    """Held-out demo (normal, defect) image files of a product: never registered, never in the bank."""
    normals: list[Path] = []
    defects: list[Path] = []
    for root, item in _products(settings, product_code):
        normals += [
            root / e["path"]
            for e in item.get("normal_images", [])
            if isinstance(e, dict) and e.get("holdout")
        ]
        defects += [root / e["path"] for e in item.get("defect_images", []) if e.get("holdout")]
    return normals, defects
