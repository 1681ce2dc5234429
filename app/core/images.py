"""Safe image intake: size, type, decompression-bomb, truncation and aspect checks before storing."""

from __future__ import annotations

import hashlib
import io
import math
import struct
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from app.core.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError
from app.core.image_metadata import keeps_pixels, strip_metadata

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
    # The decoded RGB photo when asked for (`keep_pixels`) and when decoding `data` gives the same pixels
    # (nothing was turned upright or re-saved): the steps that follow need not decode it again.
    pixels: Image.Image | None = field(default=None, compare=False, repr=False)


def check_image(
    data: bytes, limits: ImageLimits, *, name: str = "", keep_pixels: bool = False
) -> CheckedImage:
    """Validate image bytes fully (header, pixel budget, full decode) or raise a 4xx domain error; what
    comes back carries no metadata (EXIF with GPS, XMP, comments), so none is stored or served."""
    pixels: Image.Image | None = None
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
                if keep_pixels and keeps_pixels(probe, fmt):
                    pixels = probe.convert("RGB")
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
        pixels=pixels,
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


class DecodedPhotos:
    """The photos decoded last, by checksum, within a byte budget (thread-safe LRU).

    An inspection's photo is decoded by the upload's check, then by the search step and the anomaly step
    a moment later, and by the pictures when they are drawn: each of them takes it from here instead.
    Only whole decodes are kept (a photo over the decode size is decoded reduced and not kept), so what
    comes back is exactly what `open_rgb` gives for the stored bytes; callers get a copy of their own.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Image.Image] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def _size(image: Image.Image) -> int:
        return image.width * image.height * len(image.getbands())

    def get(self, checksum: str, *, max_side: int) -> Image.Image | None:
        """A copy of the decoded photo, or None (not kept, or larger than `max_side`)."""
        with self._lock:
            image = self._items.get(checksum)
            if image is None or max(image.size) > max_side:
                return None
            self._items.move_to_end(checksum)
        return image.copy()

    def put(self, checksum: str, image: Image.Image) -> None:
        """Keep a whole (not reduced) RGB decode of the photo with this checksum."""
        size = self._size(image)
        if size > self.budget_bytes:
            return
        with self._lock:
            old = self._items.pop(checksum, None)
            if old is not None:
                self._bytes -= self._size(old)
            self._items[checksum] = image
            self._bytes += size
            while self._bytes > self.budget_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= self._size(dropped)
