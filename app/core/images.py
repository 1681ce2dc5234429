"""Safe image intake: size, type, decompression-bomb, truncation and aspect checks before storing."""

from __future__ import annotations

import hashlib
import io
import math
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from app.core.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError
from app.core.image_metadata import strip_metadata

# Pillow format name -> (file extension, content type)
FORMATS = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "BMP": ("bmp", "image/bmp"),
    "TIFF": ("tiff", "image/tiff"),
    "WEBP": ("webp", "image/webp"),
}


@dataclass(frozen=True)
class ImageLimits:
    """Limits an upload must respect."""

    max_bytes: int
    max_pixels: int
    max_aspect_ratio: float
    min_side: int


@dataclass(frozen=True)
class CheckedImage:
    """An image that passed every check, with what we store about it."""

    data: bytes
    extension: str
    content_type: str
    width: int
    height: int
    checksum: str


def check_image(data: bytes, limits: ImageLimits, *, name: str = "") -> CheckedImage:
    """Validate image bytes fully (header, pixel budget, full decode) or raise a 4xx domain error; what
    comes back carries no metadata (EXIF with GPS, XMP, comments), so none is stored or served."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(
            "errors.file_too_large", name=name, limit_mb=limits.max_bytes // (1024 * 1024)
        )
    if not data:
        raise InvalidInputError("errors.empty_file", name=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or ""
                width, height = probe.size
                if fmt not in FORMATS:
                    raise UnsupportedMediaError("errors.unsupported_image_type", name=name, format=fmt or "?")
                _check_dimensions(width, height, limits, name)
                probe.load()  # a truncated or corrupt file fails here, before anything is stored
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLargeError("errors.image_too_many_pixels", name=name) from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedMediaError("errors.not_an_image", name=name) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInputError("errors.corrupt_image", name=name) from exc
    extension, content_type = FORMATS[fmt]
    try:
        data, width, height = strip_metadata(data, fmt)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise InvalidInputError("errors.corrupt_image", name=name) from exc
    return CheckedImage(
        data=data,
        extension=extension,
        content_type=content_type,
        width=width,
        height=height,
        checksum=hashlib.sha256(data).hexdigest(),
    )


def _check_dimensions(width: int, height: int, limits: ImageLimits, name: str) -> None:
    if width * height > limits.max_pixels:
        raise PayloadTooLargeError("errors.image_too_many_pixels", name=name)
    if min(width, height) < limits.min_side:
        raise InvalidInputError("errors.image_too_small", name=name, min=limits.min_side)
    if max(width, height) / max(1, min(width, height)) > limits.max_aspect_ratio:
        raise InvalidInputError("errors.image_aspect_ratio", name=name, ratio=int(limits.max_aspect_ratio))


def open_rgb(data: bytes, *, max_side: int | None = None) -> Image.Image:
    """Decode already-checked image bytes to an RGB image, at most `max_side` pixels on its longer side.

    A large photo is decoded reduced, not decoded whole and then shrunk: JPEG at 1/2, 1/4 or 1/8 scale by
    the decoder itself (`draft`), other formats by box-averaging whole blocks (`reduce`). The models work
    at a few hundred pixels, so nothing they see is lost.
    """
    with Image.open(io.BytesIO(data)) as img:
        if max_side is not None and max(img.size) > max_side and img.format == "JPEG":
            # draft() keeps both sides at least as large as asked: ask for the photo's shape at max_side.
            scale = max_side / max(img.size)
            img.draft("RGB", (max(1, int(img.width * scale)), max(1, int(img.height * scale))))
        img.load()
        picture: Image.Image = img
        if max_side is not None and max(picture.size) > max_side:
            picture = picture.reduce(math.ceil(max(picture.size) / max_side))
        return picture.convert("RGB")
