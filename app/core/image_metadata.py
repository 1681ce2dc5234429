"""Removing metadata (EXIF with GPS, XMP, IPTC, comments, text chunks) from photos before they are stored.

JPEG, PNG and WebP are filtered losslessly, segment by segment; a photo whose EXIF says "rotated" is turned
upright first (re-encoded at high quality), since its orientation would otherwise be lost with the EXIF.
TIFF is re-saved losslessly without its tags. Colour profiles are kept.
"""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageOps

_ORIENTATION = 0x0112
# JPEG: APP1 (EXIF, XMP), APP3-APP13 (vendor data, IPTC in APP13), APP15, COM. Kept: APP0 (JFIF),
# APP2 (ICC profile), APP14 (Adobe colour transform).
_JPEG_DROP = {0xE1, 0xFE, 0xEF, *range(0xE3, 0xEE)}
_PNG_DROP = {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"}
_WEBP_DROP = {b"EXIF", b"XMP "}


def _turned(img: Image.Image, fmt: str) -> bool:
    return fmt in {"JPEG", "WEBP", "TIFF", "PNG"} and img.getexif().get(_ORIENTATION, 1) in range(2, 9)


def keeps_pixels(img: Image.Image, fmt: str) -> bool:
    """Whether `strip_metadata` leaves this photo's pixels as they are (it turns nothing upright and
    re-saves no TIFF): then the stored file decodes to exactly what `img` decoded to."""
    return fmt != "TIFF" and not _turned(img, fmt)


def strip_metadata(data: bytes, fmt: str) -> tuple[bytes, int, int]:
    """The photo without metadata, and its (possibly turned upright) width and height."""
    with Image.open(io.BytesIO(data)) as img:
        size = img.size
        if _turned(img, fmt):
            return _upright(img, fmt)
        if fmt == "TIFF":
            return _resave_tiff(img)
    stripped = {"JPEG": _strip_jpeg, "PNG": _strip_png, "WEBP": _strip_webp}.get(fmt)
    cleaned = stripped(data) if stripped is not None else data
    return (cleaned if cleaned is not None else data), size[0], size[1]


def _upright(img: Image.Image, fmt: str) -> tuple[bytes, int, int]:
    icc = img.info.get("icc_profile")
    turned = ImageOps.exif_transpose(img)
    out = io.BytesIO()
    options: dict[str, object] = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        turned.save(out, format="JPEG", quality=95, **options)
    elif fmt == "WEBP":
        turned.save(out, format="WEBP", quality=95, **options)
    elif fmt == "TIFF":
        turned.save(out, format="TIFF", compression="tiff_lzw", **options)
    else:
        turned.save(out, format="PNG", **options)
    return out.getvalue(), turned.width, turned.height


def _resave_tiff(img: Image.Image) -> tuple[bytes, int, int]:
    # A plain copy has none of the file's tags (EXIF, GPS, XMP, IPTC); LZW keeps every pixel.
    icc = img.info.get("icc_profile")
    plain = img.copy()
    plain.info = {}
    out = io.BytesIO()
    plain.save(out, format="TIFF", compression="tiff_lzw", **({"icc_profile": icc} if icc else {}))
    return out.getvalue(), plain.width, plain.height


def _strip_jpeg(data: bytes) -> bytes | None:
    if data[:2] != b"\xff\xd8":
        return None
    out = bytearray(data[:2])
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is image data
            out += data[i:]
            return bytes(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out += data[i : i + 2]
            i += 2
            continue
        length = struct.unpack_from(">H", data, i + 2)[0]
        if marker not in _JPEG_DROP:
            out += data[i : i + 2 + length]
        i += 2 + length
    return None


def _strip_png(data: bytes) -> bytes | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    out = bytearray(data[:8])
    i = 8
    while i + 12 <= len(data):
        length = struct.unpack_from(">I", data, i)[0]
        kind = data[i + 4 : i + 8]
        end = i + 12 + length
        if kind not in _PNG_DROP:
            out += data[i:end]
        i = end
        if kind == b"IEND":
            return bytes(out)
    return None


def _strip_webp(data: bytes) -> bytes | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    body = bytearray()
    i = 12
    while i + 8 <= len(data):
        kind = data[i : i + 4]
        size = struct.unpack_from("<I", data, i + 4)[0]
        chunk = bytearray(data[i : i + 8 + size + (size & 1)])
        if kind == b"VP8X" and len(chunk) > 8:
            chunk[8] &= ~0x0C & 0xFF  # clear the "has EXIF" and "has XMP" flags
        if kind not in _WEBP_DROP:
            body += chunk
        i += 8 + size + (size & 1)
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + bytes(body)
