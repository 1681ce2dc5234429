"""The admin manuals screen: upload through the API, status and page count shown, delete from the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.demo.generator import generate_demo_dataset
from tests.pages import login_page, post_form


@pytest.fixture(scope="module")
def manual_pdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real Korean PDF manual from the demo generator."""
    root = tmp_path_factory.mktemp("demo")
    manifest = generate_demo_dataset(root, seed=0, size=64, normals_per_product=1, defects_per_type=1)
    return (root / manifest.products[0].manual_pdf).read_bytes()


@pytest.fixture(autouse=True)
def _no_background_indexing(client: TestClient) -> None:
    """These tests are about the screen: uploads stay pending (indexing has its own tests), so a
    background job cannot change a status while a test reads or sets it."""
    client.app.state.runner.handlers.pop("manual_index", None)  # type: ignore[attr-defined]


def _upload(client: TestClient, csrf: str, product_id: int, pdf: bytes, name: str = "매뉴얼.pdf") -> dict:
    response = client.post(
        f"/api/v1/products/{product_id}/manuals",
        files={"file": (name, pdf, "application/pdf")},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_manuals_screen_lists_status_filters_and_deletes(
    client: TestClient, manual_pdf: bytes, tmp_path: Path
) -> None:
    csrf = login_page(client)
    post_form(client, "/admin/products", csrf, code="metal_plate", name="금속 플레이트")
    post_form(client, "/admin/products", csrf, code="fabric", name="직물")
    first = _upload(client, csrf, 1, manual_pdf, "금속_매뉴얼.pdf")
    _upload(client, csrf, 2, manual_pdf, "직물_매뉴얼.pdf")

    page = client.get("/admin/manuals")
    assert page.status_code == 200
    assert "<h1>매뉴얼 관리</h1>" in page.text
    assert page.text.count('data-manual-id="') == 2
    assert 'data-status="pending"' in page.text
    assert "대기" in page.text
    assert f'<td class="num page-count">{first["page_count"]}</td>' in page.text
    assert f'href="/api/v1/manuals/{first["id"]}/file"' in page.text
    assert 'data-url="/api/v1/products/{id}/manuals"' in page.text  # the upload goes through the API
    assert '<option value="1" selected>' in client.get("/admin/manuals", params={"product_id": 1}).text

    only_metal = client.get("/admin/manuals", params={"product_id": 1}).text
    assert only_metal.count('data-manual-id="') == 1
    assert "금속_매뉴얼.pdf" in only_metal
    english = client.get("/admin/manuals", params={"lang": "en"}).text
    assert "<h1>Manuals</h1>" in english
    assert "Pending" in english
    client.get("/admin/manuals", params={"lang": "ko"})  # the language choice sticks: switch back

    storage = client.app.state.storage  # type: ignore[attr-defined]
    assert len(list(storage.list("manuals/1/"))) == 1
    deleted = post_form(client, f"/admin/manuals/{first['id']}/delete", csrf, filter_product_id="1")
    assert "삭제했습니다" in deleted.text  # type: ignore[attr-defined]
    assert deleted.url.params["product_id"] == "1"  # type: ignore[attr-defined]
    assert list(storage.list("manuals/1/")) == []
    assert client.get(f"/api/v1/manuals/{first['id']}/file").status_code == 404
    assert client.get("/admin/manuals").text.count('data-manual-id="') == 1


def test_failed_indexing_shows_the_error(client: TestClient, manual_pdf: bytes) -> None:
    csrf = login_page(client)
    post_form(client, "/admin/products", csrf, code="metal_plate", name="금속 플레이트")
    manual = _upload(client, csrf, 1, manual_pdf)
    from app.db.tables import Manual

    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Manual, manual["id"])
        row.status, row.error = "failed", "텍스트 분할 실패"
        session.commit()
    page = client.get("/admin/manuals").text
    assert 'class="badge status-badge state-failed">실패' in page
    assert "텍스트 분할 실패" in page


def test_workers_cannot_use_the_manuals_screen(client: TestClient, manual_pdf: bytes) -> None:
    csrf = login_page(client)
    post_form(client, "/admin/products", csrf, code="metal_plate", name="금속 플레이트")
    manual = _upload(client, csrf, 1, manual_pdf)
    worker_csrf = login_page(client, "worker1")
    assert client.get("/admin/manuals").status_code == 403
    assert post_form(client, f"/admin/manuals/{manual['id']}/delete", worker_csrf).status_code == 403  # type: ignore[attr-defined]
    refused = client.post(
        "/api/v1/products/1/manuals",
        files={"file": ("m.pdf", manual_pdf, "application/pdf")},
        headers={"X-CSRF-Token": worker_csrf},
    )
    assert refused.status_code == 403
