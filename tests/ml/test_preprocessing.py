"""Per-product preprocessing: option keys, each step's visible effect, determinism."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.ml.preprocessing import PreprocessingOptions, apply_preprocessing, decode_image
from tests.ml.search_images import texture, with_hole


def _colour_image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(60, 190, (48, 64, 3), dtype=np.uint8)
    array[..., 0] = np.clip(array[..., 0].astype(int) + 40, 0, 255)  # reddish cast
    return Image.fromarray(array)


def test_key_is_short_stable_and_round_trips() -> None:
    assert PreprocessingOptions().key() == "g0c0e0s0n0"
    options = PreprocessingOptions(contrast=True, normalize=True)
    assert options.key() == "g0c1e0s0n1"
    assert PreprocessingOptions.from_key(options.key()) == options
    assert PreprocessingOptions().is_identity
    assert not options.is_identity


def test_from_mapping_accepts_settings_json_and_form_values() -> None:
    options = PreprocessingOptions.from_mapping(
        {"grayscale": "on", "contrast": 1, "equalize": "false", "smooth": True, "unrelated": "x"}
    )
    assert options == PreprocessingOptions(grayscale=True, contrast=True, smooth=True)
    assert PreprocessingOptions.from_mapping(options.to_dict()) == options
    with pytest.raises(ValueError, match="grayscale"):
        PreprocessingOptions.from_mapping({"grayscale": "maybe"})
    with pytest.raises(ValueError, match="not a preprocessing key"):
        PreprocessingOptions.from_key("x1")


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_any_input_mode_gives_rgb_of_same_size(mode: str) -> None:
    source = _colour_image()
    image = source.convert("I;16") if mode == "I;16" else source.convert(mode)
    all_on = PreprocessingOptions(grayscale=True, contrast=True, equalize=True, smooth=True, normalize=True)
    for options in (PreprocessingOptions(), all_on):
        out = apply_preprocessing(image, options)
        assert out.mode == "RGB"
        assert out.size == image.size


def test_input_image_is_not_modified_and_output_is_deterministic() -> None:
    image = _colour_image()
    before = np.asarray(image).copy()
    options = PreprocessingOptions(contrast=True, equalize=True, smooth=True, normalize=True)
    first = np.asarray(apply_preprocessing(image, options))
    second = np.asarray(apply_preprocessing(image, options))
    assert np.array_equal(first, second)
    assert np.array_equal(np.asarray(image), before)


def test_grayscale_removes_colour() -> None:
    out = np.asarray(apply_preprocessing(_colour_image(), PreprocessingOptions(grayscale=True)))
    assert np.array_equal(out[..., 0], out[..., 1])
    assert np.array_equal(out[..., 1], out[..., 2])


def test_contrast_stretches_a_dull_photo() -> None:
    dull = Image.fromarray((np.asarray(texture(3)) * 0.3 + 90).astype(np.uint8))
    out = np.asarray(apply_preprocessing(dull, PreprocessingOptions(contrast=True)))
    before = np.asarray(dull)
    assert np.ptp(out) > 2 * np.ptp(before)


def test_equalize_spreads_the_histogram() -> None:
    dark = Image.fromarray((np.asarray(texture(4)) * 0.25).astype(np.uint8))
    out = np.asarray(apply_preprocessing(dark, PreprocessingOptions(equalize=True)).convert("L"))
    assert out.std() > 3 * np.asarray(dark.convert("L")).std()


def test_smooth_suppresses_sensor_noise_but_keeps_the_defect() -> None:
    rng = np.random.default_rng(0)
    clean = np.full((64, 64, 3), 128, np.uint8)
    clean[20:40, 20:40] = 20  # a dark defect patch
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    out = np.asarray(apply_preprocessing(Image.fromarray(noisy), PreprocessingOptions(smooth=True)), float)
    flat_before = noisy[45:, 45:].astype(float).std()
    assert out[45:, 45:].std() < 0.6 * flat_before
    assert out[25:35, 25:35].mean() < 60  # defect still clearly dark


def test_normalize_removes_exposure_differences() -> None:
    photo = with_hole(texture(5))
    brighter = Image.fromarray(np.clip(np.asarray(photo, float) * 1.4 + 25, 0, 255).astype(np.uint8))
    options = PreprocessingOptions(normalize=True)
    a = np.asarray(apply_preprocessing(photo, options), float)
    b = np.asarray(apply_preprocessing(brighter, options), float)
    raw_gap = np.abs(np.asarray(photo, float) - np.asarray(brighter, float)).mean()
    assert np.abs(a - b).mean() < 0.1 * raw_gap
    assert abs(a.mean() - 128) < 8


def test_decode_image_applies_exif_orientation_and_rejects_garbage() -> None:
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    decoded = decode_image(buffer.getvalue())
    assert decoded.mode == "RGB"
    assert decoded.size == (20, 40)
    with pytest.raises(ValueError, match="cannot decode"):
        decode_image(b"not an image")


def test_max_side_shrinks_large_photos_keeping_aspect_ratio() -> None:
    photo = texture(6, size=160).resize((1200, 900))
    out = apply_preprocessing(photo, PreprocessingOptions(smooth=True), max_side=400)
    assert out.size == (400, 300)
    small = _colour_image()
    assert apply_preprocessing(small, PreprocessingOptions(), max_side=400).size == small.size


def test_decode_with_max_side_decodes_jpeg_at_reduced_scale() -> None:
    buffer = io.BytesIO()
    texture(8, size=160).resize((1600, 1200)).save(buffer, format="JPEG")
    decoded = decode_image(buffer.getvalue(), max_side=400)
    assert 400 <= max(decoded.size) < 1600
    assert decoded.size[0] * 3 == decoded.size[1] * 4
