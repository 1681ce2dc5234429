"""Photo metadata (issue 14, item 11): GPS EXIF, XMP and comments are not stored or served; pixels stay
exactly the same (lossless filtering), and a photo marked "rotated" is stored upright."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from PIL.PngImagePlugin import PngInfo

GPS_IFD = 0x8825


def _exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0112] = orientation
    exif[GPS_IFD] = {1: "N", 2: (37.0, 33.0, 59.0), 3: "E", 4: (126.0, 58.0, 41.0)}
    return exif


def _photo(size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _served(
    client: TestClient, headers: dict[str, str], name: str, data: bytes
) -> tuple[dict[str, object], bytes]:
    created = client.post("/api/v1/inspections", headers=headers, files={"file": (name, data, "image/*")})
    assert created.status_code == 201, created.text
    served = client.get(f"/api/v1/inspections/{created.json()['id']}/image", headers=headers)
    assert served.status_code == 200
    return created.json(), served.content


def test_gps_exif_and_comments_are_stripped_losslessly_from_jpeg(
    client: TestClient, worker_headers: dict[str, str]
) -> None:
    buffer = io.BytesIO()
    _photo().save(buffer, format="JPEG", quality=90, exif=_exif_with_gps(), comment=b"line 3, Kim")
    original = buffer.getvalue()
    assert b"PhoneMaker" in original
    _record, served = _served(client, worker_headers, "gps.jpg", original)
    # Before: the photo was stored and served byte for byte, GPS included.
    assert b"PhoneMaker" not in served
    assert b"line 3, Kim" not in served
    with Image.open(io.BytesIO(served)) as img:
        assert not img.getexif()
        pixels = np.asarray(img.convert("RGB"))
    with Image.open(io.BytesIO(original)) as img:
        assert np.array_equal(pixels, np.asarray(img.convert("RGB")))  # the same scan data, not re-encoded


def test_a_rotated_photo_is_stored_upright_without_exif(
    client: TestClient, worker_headers: dict[str, str]
) -> None:
    buffer = io.BytesIO()
    _photo((80, 40)).save(buffer, format="JPEG", quality=95, exif=_exif_with_gps(orientation=6))
    record, served = _served(client, worker_headers, "turned.jpg", buffer.getvalue())
    with Image.open(io.BytesIO(served)) as img:
        assert img.size == (40, 80)
        assert not img.getexif()
    assert (record["width"], record["height"]) == (40, 80)


def test_png_and_webp_text_and_exif_chunks_are_dropped(
    client: TestClient, worker_headers: dict[str, str]
) -> None:
    photo = _photo()
    info = PngInfo()
    info.add_text("Author", "Kim, line 3")
    png = io.BytesIO()
    photo.save(png, format="PNG", pnginfo=info, exif=_exif_with_gps())
    _record, served = _served(client, worker_headers, "a.png", png.getvalue())
    assert b"Kim, line 3" not in served
    assert b"PhoneMaker" not in served
    with Image.open(io.BytesIO(served)) as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(photo))
    webp = io.BytesIO()
    photo.save(webp, format="WEBP", lossless=True, exif=_exif_with_gps())
    assert b"PhoneMaker" in webp.getvalue()
    _record, served = _served(client, worker_headers, "a.webp", webp.getvalue())
    assert b"PhoneMaker" not in served
    with Image.open(io.BytesIO(served)) as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(photo))


def test_catalog_images_are_stored_without_metadata(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    pid = client.post("/api/v1/products", json={"code": "plate", "name": "판"}, headers=admin_headers).json()[
        "id"
    ]
    buffer = io.BytesIO()
    _photo().save(buffer, format="JPEG", exif=_exif_with_gps())
    created = client.post(
        f"/api/v1/products/{pid}/images",
        data={"kind": "normal"},
        files=[("files", ("gps.jpg", buffer.getvalue(), "image/jpeg"))],
        headers=admin_headers,
    ).json()["created"]
    served = client.get(f"/api/v1/images/{created[0]['id']}/file", headers=admin_headers).content
    assert b"PhoneMaker" not in served
