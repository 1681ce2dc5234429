"""ZIP uploads (issue 14, item 7): damaged entries are refused one by one and the rest is kept; entries are
stored one at a time, and images stored before a later failure are searchable (handed to the gallery)."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.catalog import service as catalog_service
from app.core.storage import ObjectStorage, make_storage
from app.db.tables import ReferenceImage
from tests.conftest import png_bytes


def _patch_central(data: bytearray, name: str, *, offset: int, value: int) -> None:
    """Set a 16-bit field of `name`'s central-directory record (8: flags, 10: compression method)."""
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) != -1:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + name_len] == name.encode():
            struct.pack_into("<H", data, pos + offset, value)
            return
        pos += 4
    raise AssertionError(name)


def _hostile_zip() -> bytes:
    buffer = io.BytesIO()
    bad_crc = png_bytes((40, 40), (11, 22, 33))
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("first.png", png_bytes((40, 40), (200, 10, 10)))
        archive.writestr(zipfile.ZipInfo("."), png_bytes())
        archive.writestr("crc.png", bad_crc)
        archive.writestr("method.png", png_bytes((40, 40), (1, 2, 3)))
        archive.writestr("locked.png", png_bytes((40, 40), (4, 5, 6)))
        archive.writestr("last.png", png_bytes((40, 40), (10, 200, 10)))
    data = bytearray(buffer.getvalue())
    at = data.find(bad_crc)
    data[at + len(bad_crc) // 2] ^= 0xFF  # stored bytes no longer match the CRC
    _patch_central(data, "method.png", offset=10, value=99)  # an unknown compression method
    _patch_central(data, "locked.png", offset=8, value=0x1)  # the encrypted flag
    return bytes(data)


def _objects(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "images" in str(p))


def test_damaged_entries_are_refused_and_the_rest_kept(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    pid = client.post("/api/v1/products", json={"code": "plate", "name": "판"}, headers=admin_headers).json()[
        "id"
    ]
    response = client.post(
        f"/api/v1/products/{pid}/images",
        data={"kind": "normal"},
        files=[("files", ("batch.zip", _hostile_zip(), "application/zip"))],
        headers=admin_headers,
    )
    # Before: 500 and the whole batch lost.
    assert response.status_code == 201, response.text
    body = response.json()
    assert sorted(c["file_name"] for c in body["created"]) == ["plate_ok_001.png", "plate_ok_002.png"]
    reasons = {r["file_name"]: r["reason"] for r in body["rejected"]}
    assert "이름이 올바르지 않은" in reasons["batch.zip:."]
    assert "CRC" in reasons["batch.zip:crc.png"]
    assert "압축 방식" in reasons["batch.zip:method.png"]
    assert "암호화" in reasons["batch.zip:locked.png"]
    root = client.app.state.settings.local_storage_path  # type: ignore[attr-defined]
    assert len(_objects(root)) == 2


class _FailingOnSecondPut:
    """The real local storage, failing the second write: a fault injected where no real part fails on cue."""

    def __init__(self, inner: ObjectStorage) -> None:
        self.inner = inner
        self.puts = 0

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.puts += 1
        if self.puts == 2:
            raise OSError("disk full")
        self.inner.put(key, data, content_type)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_images_stored_before_a_failure_reach_the_gallery(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    pid = client.post("/api/v1/products", json={"code": "plate", "name": "판"}, headers=admin_headers).json()[
        "id"
    ]
    settings = client.app.state.settings  # type: ignore[attr-defined]
    storage = _FailingOnSecondPut(make_storage(settings))
    handed: list[int] = []
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        files = [("a.png", png_bytes((40, 40), (1, 1, 1))), ("b.png", png_bytes((40, 40), (2, 2, 2)))]
        with pytest.raises(OSError, match="disk full"):
            catalog_service.upload_images(
                session,
                storage=storage,  # type: ignore[arg-type]
                settings=settings,
                product_id=pid,
                kind="normal",
                defect_type_id=None,
                files=files,
                actor_id=None,
                on_change=lambda created, _removed: handed.extend(i.id for i in created),
            )
        stored = session.query(ReferenceImage).all()
    # Before: the first image was stored and committed but never handed to the live gallery.
    assert [i.id for i in stored] == handed
    assert len(handed) == 1
