"""The upload and search pages render what the worker needs (server side, Korean first)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD
from tests.inspection.search.conftest import deploy, hole_photo, inspect, make_catalog, png


def _login(client: TestClient, username: str, password: str) -> None:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200


def test_upload_page_shows_the_gallery_status(app_client: TestClient, admin: dict[str, str]) -> None:
    _login(app_client, "worker1", WORKER_PASSWORD)
    page = app_client.get("/")
    assert page.status_code == 200
    assert 'id="drop-zone"' in page.text
    assert "유사도 검색 인덱스" in page.text
    assert "없음" in page.text  # nothing built yet
    app_client.cookies.clear()
    catalog = make_catalog(app_client, admin)
    deploy(app_client, admin)
    _login(app_client, "worker1", WORKER_PASSWORD)
    page = app_client.get("/")
    assert "efficientnet-lite0" in page.text
    assert "최신" in page.text
    assert f'<option value="{catalog.product_id}">plate 판재 (plate)</option>' in page.text
    english = app_client.get("/?lang=en")
    assert "Similar-image search index" in english.text


def test_search_page_shows_top1_verdict_and_next_step(
    app_client: TestClient, admin: dict[str, str], worker: dict[str, str]
) -> None:
    catalog = make_catalog(app_client, admin)
    deploy(app_client, admin)
    inspection_id = inspect(app_client, worker, png(hole_photo(58)))
    _login(app_client, "admin1", ADMIN_PASSWORD)
    before = app_client.get(f"/inspect/{inspection_id}/search")
    assert before.status_code == 200
    assert 'data-has-result="false"' in before.text  # the page runs the search itself
    result = app_client.post(f"/api/v1/inspections/{inspection_id}/search", json={"top_k": 4}, headers=worker)
    assert result.status_code == 200
    page = app_client.get(f"/inspect/{inspection_id}/search").text
    assert "구멍" in page
    assert f'href="/inspect/{inspection_id}/anomaly?product_id={catalog.product_id}"' in page
    assert page.count('class="thumb"') == 3  # TOP-4 = the TOP-1 plus three thumbnails
    assert app_client.get("/inspect/999999/search").status_code == 404
