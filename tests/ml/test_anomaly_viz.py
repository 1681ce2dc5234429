"""Heat maps, masks, overlays, comparison images and regions from anomaly maps."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from app.ml.anomaly_viz import (
    binary_mask,
    comparison,
    draw_regions,
    heatmap,
    heatmap_overlay,
    jet,
    overlay,
    regions,
    to_png,
)


def _map_with_blobs() -> np.ndarray:
    amap = np.full((60, 80), 1.0, np.float32)
    amap[10:20, 5:15] = 5.0  # area 100, peak 5
    amap[40:50, 50:70] = 3.0  # area 200, peak 9 at one pixel
    amap[45, 60] = 9.0
    amap[2, 70] = 8.0  # single hot pixel: noise
    return amap


def test_regions_are_boxes_sorted_by_peak() -> None:
    found = regions(_map_with_blobs(), threshold=2.0, min_area=4)
    assert [(r.x, r.y, r.width, r.height) for r in found] == [(50, 40, 20, 10), (5, 10, 10, 10)]
    assert [r.score for r in found] == [9.0, 5.0]
    assert found[0].to_dict() == {"x": 50, "y": 40, "width": 20, "height": 10, "score": 9.0, "area": 200}
    assert regions(_map_with_blobs(), threshold=20.0) == []


def test_a_region_inside_another_ones_box_keeps_its_own_peak() -> None:
    amap = np.full((40, 40), 1.0, np.float32)
    amap[5:35, 5:35] = 3.0  # a ring (peak 3) ...
    amap[8:32, 8:32] = 1.0
    amap[15:25, 15:25] = 7.0  # ... around a hotter blob inside its box
    found = regions(amap, threshold=2.0, min_area=4)
    assert [(r.x, r.y, r.width, r.height, r.score, r.area) for r in found] == [
        (15, 15, 10, 10, 7.0, 100),
        (5, 5, 30, 30, 3.0, 30 * 30 - 24 * 24),
    ]


def test_heatmap_colours_hot_spots_red_and_background_blue() -> None:
    hm = heatmap(_map_with_blobs(), threshold=2.0)
    assert hm.shape == (60, 80, 3)
    assert hm.dtype == np.uint8
    r, _g, b = hm[45, 60]
    assert r > 100
    assert b < 50
    r, _g, b = hm[0, 0]
    assert b > 100
    assert r < 50
    assert tuple(jet(np.array([0.0, 1.0]))[1]) == (128, 0, 0)
    # A quiet map stays cool when the scale is anchored to the threshold.
    calm = heatmap(np.full((4, 4), 1.0, np.float32) + np.eye(4, dtype=np.float32) * 0.2, threshold=5.0)
    assert calm[..., 0].max() < 60


def test_overlay_tints_only_the_defect_area() -> None:
    image = Image.new("L", (80, 60), 128)
    amap = _map_with_blobs()
    out = overlay(image, amap, threshold=2.0, outline=True)
    px = np.asarray(out)
    assert out.mode == "RGB"
    assert out.size == (80, 60)
    assert px[15, 10, 0] > px[15, 10, 1] + 40  # red tint inside
    assert tuple(px[30, 30]) == (128, 128, 128)  # untouched outside
    assert tuple(px[8, 10]) == (230, 30, 30)  # solid outline just above the blob
    assert binary_mask(amap, 2.0).sum() == 301
    assert heatmap_overlay(image, amap).size == (80, 60)


def test_comparison_is_side_by_side_at_same_height() -> None:
    ref = Image.new("RGB", (100, 50), "gray")
    ins = Image.new("RGB", (60, 60), "red")
    out = comparison(ref, ins, ("정상 기준", "검사 이미지"), height=100, gap=8)
    assert out.size == (200 + 8 + 100, 100 + 18)
    bare = comparison(ref, ins, None, height=100)
    assert bare.size == (308, 100)
    assert tuple(np.asarray(bare)[50, 250]) == (255, 0, 0)


def test_png_export_and_region_drawing() -> None:
    amap = _map_with_blobs()
    mask_png = to_png(binary_mask(amap, 2.0))
    assert Image.open(io.BytesIO(mask_png)).size == (80, 60)
    drawn = draw_regions(Image.new("RGB", (80, 60)), regions(amap, 2.0))
    assert tuple(np.asarray(drawn)[40, 55]) == (230, 30, 30)
    assert Image.open(io.BytesIO(to_png(heatmap(amap)))).mode == "RGB"
