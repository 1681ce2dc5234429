"""Shape-aware PatchCore: aspect kept, overlapping tiles, thin defects on elongated parts (real weights)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from app.ml.anomaly_eval import image_auroc
from app.ml.anomaly_select import product_config
from app.ml.patchcore import FeatureExtractor, PatchCore, PatchCoreConfig, choose_tiling, tiles_along
from tests.ml.synthetic_textures import texture

SQUARE = PatchCoreConfig(image_size=64, coreset_ratio=1.0, batch_size=16, tile_overlap=16)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    torch.set_num_threads(1)
    return FeatureExtractor.load(device="cpu")


def _strip(rng: np.random.Generator, hairline: bool) -> tuple[Image.Image, tuple[int, int]]:
    """A 512x64 woven strip; with ``hairline`` a 1 px wide, 14 px long darker crack somewhere along it."""
    arr = texture(rng, 64, 512)
    where = (0, 0)
    if hairline:
        x, y = int(rng.integers(20, 490)), int(rng.integers(12, 38))
        arr[y : y + 14, x : x + 1] *= 0.3
        where = (x, y + 7)
    return Image.fromarray((arr * 255).astype(np.uint8)), where


@pytest.fixture(scope="module")
def strips() -> tuple[list[Image.Image], list[Image.Image], list[Image.Image], list[tuple[int, int]]]:
    rng = np.random.default_rng(11)
    train = [_strip(rng, False)[0] for _ in range(20)]
    normals = [_strip(rng, False)[0] for _ in range(6)]
    defects, spots = zip(*(_strip(rng, True) for _ in range(6)), strict=True)
    return train, normals, list(defects), list(spots)


def test_tiling_keeps_the_aspect_ratio_and_covers_large_photos() -> None:
    assert choose_tiling([(300, 300)]) == (256, 256)  # small photo: one tile, as before
    assert choose_tiling([(640, 640)]) == (480, 480)  # 2 x 2 tiles instead of a 2.5x shrink
    width, height = choose_tiling([(2000, 250)])
    assert (width, height) == (2048, 256)  # a strip gets a row of tiles, not a squeeze
    assert tiles_along(width, 256, 32) == 9
    assert tiles_along(height, 256, 32) == 1
    width, height = choose_tiling([(4000, 3000), (4100, 2900), (3900, 3000)])
    assert 1.2 < width / height < 1.6  # the median photo's 4:3 survives


def test_product_config_records_tiling_and_grayscale() -> None:
    rng = np.random.default_rng(0)
    gray = [Image.fromarray(rng.integers(0, 255, (64, 512), dtype=np.uint8), mode="L") for _ in range(3)]
    cfg = product_config(SQUARE, gray)
    assert cfg.grayscale
    assert cfg.tile_grid == (10, 1)
    summary = cfg.tiling_summary()
    assert summary["keeps_aspect"]
    assert (summary["tile_cols"], summary["tile_rows"], summary["tile_size"]) == (10, 1, 64)
    colour = [Image.new("RGB", (512, 64), (200, 120, 40))]
    assert not product_config(SQUARE, colour).grayscale
    # Tiles need a side that is a multiple of 16: such configs keep the square resize.
    assert product_config(replace(SQUARE, image_size=72), colour).work_width == 0


def test_tiles_find_a_hairline_that_the_square_resize_squeezes_away(
    extractor: FeatureExtractor,
    strips: tuple[list[Image.Image], list[Image.Image], list[Image.Image], list[tuple[int, int]]],
) -> None:
    train, normals, defects, spots = strips
    labels = [False] * len(normals) + [True] * len(defects)
    square = PatchCore.fit(train, SQUARE, extractor=extractor)
    tiled_cfg = product_config(SQUARE, train)
    tiled = PatchCore.fit(train, tiled_cfg, extractor=extractor)
    square_out = square.detect_many(normals + defects)
    tiled_out = tiled.detect_many(normals + defects)
    square_auroc = image_auroc(labels, [o.score for o in square_out])
    tiled_auroc = image_auroc(labels, [o.score for o in tiled_out])
    assert tiled_auroc >= 0.95
    assert tiled_auroc > square_auroc + 0.1, (square_auroc, tiled_auroc)
    for out, (x, y) in zip(tiled_out[len(normals) :], spots, strict=True):
        assert out.anomaly_map.shape == (64, 512)  # the photo's own size, stitched from 10 tiles
        py, px = np.unravel_index(int(np.argmax(out.anomaly_map)), out.anomaly_map.shape)
        assert abs(int(px) - x) <= 16
        assert abs(int(py) - y) <= 20


def test_tiled_model_round_trips_and_scores_any_photo_size(
    extractor: FeatureExtractor,
    strips: tuple[list[Image.Image], list[Image.Image], list[Image.Image], list[tuple[int, int]]],
    tmp_path: object,
) -> None:
    from pathlib import Path

    train, normals, defects, _ = strips
    model = PatchCore.fit(train, product_config(SQUARE, train), extractor=extractor)
    model.save(Path(str(tmp_path)))
    loaded = PatchCore.load(Path(str(tmp_path)), extractor=extractor)
    assert loaded.config.tile_grid == model.config.tile_grid
    assert loaded.detect(defects[0]).score == pytest.approx(model.detect(defects[0]).score, rel=1e-5)
    other = normals[0].resize((700, 90))  # a photo of a different size still maps back onto itself
    assert loaded.detect(other).anomaly_map.shape == (90, 700)
    batched = loaded.detect_many([defects[0], other], batch_size=2)
    assert batched[0].score == pytest.approx(loaded.detect(defects[0]).score, rel=1e-4)


def test_invalid_tilings_are_refused() -> None:
    with pytest.raises(ValueError, match="both"):
        PatchCoreConfig(work_width=256)
    with pytest.raises(ValueError, match="whole number"):
        PatchCoreConfig(work_width=300, work_height=256)
    with pytest.raises(ValueError, match="multiple of 16"):
        PatchCoreConfig(work_width=480, work_height=480, tile_overlap=20)
