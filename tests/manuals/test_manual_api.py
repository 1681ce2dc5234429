"""Manual upload: real PDFs are stored and listed; non-PDFs and text-less PDFs are refused, nothing stored."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.demo.generator import generate_demo_dataset


def test_manual_upload_list_download_delete(
    client: TestClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    manifest = generate_demo_dataset(
        tmp_path / "d", seed=0, size=64, normals_per_product=2, defects_per_type=1
    )
    pdf = (tmp_path / "d" / manifest.products[0].manual_pdf).read_bytes()
    pid = client.post("/api/v1/products", json={"code": "p", "name": "P"}, headers=admin_headers).json()["id"]
    files = {"file": ("대응 매뉴얼.pdf", pdf, "application/pdf")}
    created = client.post(f"/api/v1/products/{pid}/manuals", files=files, headers=admin_headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "pending"
    assert body["page_count"] >= 3
    assert client.get(f"/api/v1/products/{pid}/manuals", headers=admin_headers).json()[0]["id"] == body["id"]
    assert client.get(f"/api/v1/manuals/{body['id']}/file", headers=admin_headers).content == pdf
    assert client.delete(f"/api/v1/manuals/{body['id']}", headers=admin_headers).status_code == 204
    assert list(client.app.state.storage.list("manuals/")) == []  # type: ignore[attr-defined]


def test_fake_pdf_is_refused(client: TestClient, admin_headers: dict[str, str]) -> None:
    pid = client.post("/api/v1/products", json={"code": "p", "name": "P"}, headers=admin_headers).json()["id"]
    files = {"file": ("manual.pdf", b"GIF89a not a pdf", "application/pdf")}
    response = client.post(f"/api/v1/products/{pid}/manuals", files=files, headers=admin_headers)
    assert response.status_code == 415
    assert "PDF" in response.json()["detail"]
    assert list(client.app.state.storage.list("manuals/")) == []  # type: ignore[attr-defined]
