"""The photo the upload's check decoded is kept for the steps that follow only where it is exactly what the
stored file decodes to, and the kept photos stay within their memory budget."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from app.core.images import DecodedPhotos, ImageLimits, check_image, open_rgb

LIMITS = ImageLimits(max_bytes=10_000_000, max_pixels=10_000_000, max_aspect_ratio=20.0, min_side=16)


def _photo(size: tuple[int, int] = (64, 48), seed: int = 3) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_the_kept_decode_equals_the_stored_file_decoded_again() -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # stripped before storing; the pixels stay
    text = PngInfo()
    text.add_text("Comment", "line 3")
    photos = {
        "jpeg": _encoded(_photo(), "JPEG", quality=90, exif=exif, comment=b"kim"),
        "png": _encoded(_photo(), "PNG", pnginfo=text),
        "grey png": _encoded(_photo().convert("L"), "PNG"),
        "palette png": _encoded(_photo().convert("P"), "PNG"),
        "webp": _encoded(_photo(), "WEBP", lossless=True, exif=exif),
    }
    for name, data in photos.items():
        checked = check_image(data, LIMITS, name=name, keep_pixels=True)
        assert checked.pixels is not None, name
        again = np.asarray(open_rgb(checked.data, max_side=2048))
        assert np.array_equal(np.asarray(checked.pixels), again), name
    assert check_image(photos["png"], LIMITS).pixels is None  # only when asked for


def test_a_photo_turned_upright_or_resaved_is_not_kept() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored upright, i.e. re-encoded: its pixels are not the upload's
    rotated = check_image(_encoded(_photo(), "JPEG", exif=exif), LIMITS, keep_pixels=True)
    assert (rotated.width, rotated.height) == (48, 64)
    assert rotated.pixels is None
    tiff = check_image(_encoded(_photo(), "TIFF"), LIMITS, keep_pixels=True)
    assert tiff.pixels is None


def test_kept_photos_stay_within_the_budget_and_each_caller_gets_its_own_copy() -> None:
    one = 64 * 48 * 3
    kept = DecodedPhotos(budget_bytes=2 * one)
    photos = {f"sum{i}": _photo(seed=i) for i in range(3)}
    for checksum, image in photos.items():
        kept.put(checksum, image)
    assert kept.get("sum0", max_side=2048) is None  # the oldest went to make room
    got = kept.get("sum2", max_side=2048)
    assert got is not None
    assert np.array_equal(np.asarray(got), np.asarray(photos["sum2"]))
    got.paste((0, 0, 0), (0, 0, 64, 48))  # a caller drawing on its copy changes nothing kept
    again = kept.get("sum2", max_side=2048)
    assert again is not None
    assert np.array_equal(np.asarray(again), np.asarray(photos["sum2"]))
    assert kept.get("sum2", max_side=32) is None  # wanted smaller: decoded reduced, not taken from here
    kept.put("huge", _photo(size=(200, 200)))  # larger than the whole budget: not kept, nothing dropped
    assert kept.get("huge", max_side=2048) is None
    assert kept.get("sum1", max_side=2048) is not None
