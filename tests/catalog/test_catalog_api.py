"""Products, defect types and image registration as an admin (and a worker) meets them over the API."""

from __future__ import annotations

import io
import zipfile

from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import png_bytes


def _product(client: TestClient, headers: dict[str, str], code: str = "metal_plate") -> int:
    response = client.post(
        "/api/v1/products", json={"code": code, "name": "금속 판", "description": "d"}, headers=headers
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _defect(client: TestClient, headers: dict[str, str], product_id: int, code: str = "scratch") -> int:
    response = client.post(
        f"/api/v1/products/{product_id}/defect-types", json={"code": code, "name": "긁힘"}, headers=headers
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _objects(client: TestClient) -> list[str]:
    return list(client.app.state.storage.list(""))  # type: ignore[attr-defined]


def test_product_lifecycle_and_duplicate_code(client: TestClient, admin_headers: dict[str, str]) -> None:
    pid = _product(client, admin_headers)
    dup = client.post("/api/v1/products", json={"code": "metal_plate", "name": "x"}, headers=admin_headers)
    assert dup.status_code == 409
    assert "metal_plate" in dup.json()["detail"]
    bad = client.post("/api/v1/products", json={"code": "Metal Plate!", "name": "x"}, headers=admin_headers)
    assert bad.status_code == 422
    assert "code" in bad.json()["detail"]
    patched = client.patch(
        f"/api/v1/products/{pid}", json={"name": "브러시드 금속 판"}, headers=admin_headers
    )
    assert patched.json()["name"] == "브러시드 금속 판"
    assert client.delete(f"/api/v1/products/{pid}", headers=admin_headers).json()["is_active"] is False
    assert client.get("/api/v1/products", headers=admin_headers).json() == []
    listed = client.get("/api/v1/products?include_inactive=true", headers=admin_headers).json()
    assert [p["code"] for p in listed] == ["metal_plate"]
    assert client.get("/api/v1/products/999", headers=admin_headers).status_code == 404


def test_defect_types_are_unique_per_product(client: TestClient, admin_headers: dict[str, str]) -> None:
    p1, p2 = _product(client, admin_headers, "p1"), _product(client, admin_headers, "p2")
    _defect(client, admin_headers, p1)
    _defect(client, admin_headers, p2)  # same code, other product: fine
    again = client.post(
        f"/api/v1/products/{p1}/defect-types", json={"code": "scratch", "name": "x"}, headers=admin_headers
    )
    assert again.status_code == 409
    codes = [
        d["code"] for d in client.get(f"/api/v1/products/{p1}/defect-types", headers=admin_headers).json()
    ]
    assert codes == ["scratch"]


def test_image_upload_names_files_by_convention(client: TestClient, admin_headers: dict[str, str]) -> None:
    pid = _product(client, admin_headers)
    did = _defect(client, admin_headers, pid)
    files = [
        ("files", ("IMG 1.jpg", png_bytes(fmt="JPEG"), "image/jpeg")),
        ("files", ("b.png", png_bytes(), "image/png")),
    ]
    response = client.post(
        f"/api/v1/products/{pid}/images",
        data={"kind": "defect", "defect_type_id": str(did)},
        files=files,
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    names = [c["file_name"] for c in response.json()["created"]]
    assert names == ["metal_plate_scratch_001.jpg", "metal_plate_scratch_002.png"]
    normal = client.post(
        f"/api/v1/products/{pid}/images",
        data={"kind": "normal"},
        files=[("files", ("n.png", png_bytes(), "image/png"))],
        headers=admin_headers,
    )
    assert normal.json()["created"][0]["file_name"] == "metal_plate_ok_001.png"
    page = client.get(f"/api/v1/products/{pid}/images?kind=defect", headers=admin_headers).json()
    assert page["total"] == 2
    image_id = page["items"][0]["id"]
    served = client.get(f"/api/v1/images/{image_id}/file", headers=admin_headers)
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("image/")
    assert f"images/defect/{pid}_{did}/metal_plate_scratch_001.jpg" in _objects(client)


def test_bad_images_are_refused_with_reasons_and_nothing_is_stored(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    pid = _product(client, admin_headers)
    truncated = png_bytes((200, 200))[:300]
    bomb = io.BytesIO()
    Image.new("L", (12000, 12000)).save(bomb, format="PNG")  # 144 Mpx, a few KB compressed
    thin = png_bytes((2000, 20))
    files = [
        ("files", ("notes.txt", b"hello, not an image", "text/plain")),
        ("files", ("cut.png", truncated, "image/png")),
        ("files", ("bomb.png", bomb.getvalue(), "image/png")),
        ("files", ("thin.png", thin, "image/png")),
        ("files", ("empty.png", b"", "image/png")),
    ]
    response = client.post(
        f"/api/v1/products/{pid}/images", data={"kind": "normal"}, files=files, headers=admin_headers
    )
    assert response.status_code == 201
    body = response.json()
    assert body["created"] == []
    reasons = {r["file_name"]: r["reason"] for r in body["rejected"]}
    assert "이미지 파일이 아닙니다" in reasons["notes.txt"]
    assert "손상" in reasons["cut.png"]
    assert "해상도" in reasons["bomb.png"]
    assert "비율" in reasons["thin.png"]
    assert "빈 파일" in reasons["empty.png"]
    assert _objects(client) == []


def test_zip_upload_imports_images_and_reports_the_rest(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    pid = _product(client, admin_headers)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("good/one.png", png_bytes())
        archive.writestr("two.bmp", png_bytes(fmt="BMP"))
        archive.writestr("../../evil.png", png_bytes())
        archive.writestr("inner.zip", b"PK\x05\x06" + b"\0" * 18)
        archive.writestr("readme.txt", "hi")
    response = client.post(
        f"/api/v1/products/{pid}/images",
        data={"kind": "normal"},
        files=[("files", ("batch.zip", buffer.getvalue(), "application/zip"))],
        headers=admin_headers,
    )
    body = response.json()
    assert sorted(c["file_name"] for c in body["created"]) == [
        "metal_plate_ok_001.png",
        "metal_plate_ok_002.bmp",
    ]
    rejected = {r["file_name"]: r["reason"] for r in body["rejected"]}
    assert "경로" in rejected["batch.zip:../../evil.png"]
    assert "압축" in rejected["batch.zip:inner.zip"]
    assert "이미지가 아닌" in rejected["batch.zip:readme.txt"]
    assert not any("evil" in key for key in _objects(client))


def test_zip_bomb_is_refused_whole(
    client: TestClient, admin_headers: dict[str, str], settings: object
) -> None:
    pid = _product(client, admin_headers)
    client.app.state.settings.max_zip_uncompressed_bytes = 4 * 1024 * 1024  # type: ignore[attr-defined]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ok.png", png_bytes())
        archive.writestr("zeros.png", b"\0" * (8 * 1024 * 1024))
    response = client.post(
        f"/api/v1/products/{pid}/images",
        data={"kind": "normal"},
        files=[("files", ("bomb.zip", buffer.getvalue(), "application/zip"))],
        headers=admin_headers,
    )
    body = response.json()
    assert body["created"] == []
    assert "압축 폭탄" in body["rejected"][0]["reason"]
    assert _objects(client) == []


def test_defect_upload_needs_a_type_of_that_product(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    p1, p2 = _product(client, admin_headers, "p1"), _product(client, admin_headers, "p2")
    other = _defect(client, admin_headers, p2)
    files = [("files", ("a.png", png_bytes(), "image/png"))]
    missing = client.post(
        f"/api/v1/products/{p1}/images", data={"kind": "defect"}, files=files, headers=admin_headers
    )
    assert missing.status_code == 400
    wrong = client.post(
        f"/api/v1/products/{p1}/images",
        data={"kind": "defect", "defect_type_id": str(other)},
        files=files,
        headers=admin_headers,
    )
    assert wrong.status_code == 400
    assert _objects(client) == []


def test_delete_image_removes_row_and_object(
    client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str]
) -> None:
    pid = _product(client, admin_headers)
    created = client.post(
        f"/api/v1/products/{pid}/images",
        data={"kind": "normal"},
        files=[("files", ("a.png", png_bytes(), "image/png"))],
        headers=admin_headers,
    ).json()
    image_id = created["created"][0]["id"]
    assert client.delete(f"/api/v1/images/{image_id}", headers=worker_headers).status_code == 403
    assert client.delete(f"/api/v1/images/{image_id}", headers=admin_headers).status_code == 204
    assert client.get(f"/api/v1/images/{image_id}", headers=admin_headers).status_code == 404
    assert _objects(client) == []


def test_preprocessing_roundtrip(client: TestClient, admin_headers: dict[str, str]) -> None:
    pid = _product(client, admin_headers)
    assert (
        client.get(f"/api/v1/products/{pid}/preprocessing", headers=admin_headers).json()["grayscale"]
        is False
    )
    body = {"grayscale": True, "contrast": False, "equalize": True, "smooth": False, "normalize": False}
    assert (
        client.put(f"/api/v1/products/{pid}/preprocessing", json=body, headers=admin_headers).json() == body
    )
    assert client.get(f"/api/v1/products/{pid}/preprocessing", headers=admin_headers).json() == body
