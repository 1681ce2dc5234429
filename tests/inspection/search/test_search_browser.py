"""In a real browser: a worker uploads a photo, sees similar defects, picks another TOP-1, registers it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.core.config import Settings
from app.main import create_app
from tests.browser.conftest import _free_port, browser_page, screenshot
from tests.factories import ADMIN_PASSWORD, WORKER_PASSWORD, make_users
from tests.inspection.search.conftest import CountingEmbedder, deploy, hole_photo, make_catalog

pytestmark = pytest.mark.browser
__all__ = ["browser_page"]  # the shared Chromium fixture, used by name below


@pytest.fixture
def search_server(search_settings: Settings, embedder: CountingEmbedder) -> Iterator[str]:
    """The real app (models loaded) served by uvicorn, with admin1 and worker1."""
    app = create_app(search_settings)
    with app.state.session_factory() as session:
        make_users(session, search_settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_upload_search_choose_and_register(search_server: str, browser_page: Any, tmp_path: Path) -> None:
    base = search_server
    with httpx.Client(base_url=base, timeout=60) as api:
        token = api.post("/api/v1/auth/login", json={"username": "admin1", "password": ADMIN_PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        api.cookies.clear()
        catalog = make_catalog(api, headers)  # type: ignore[arg-type]
        assert deploy(api, headers)["status"] == "succeeded"  # type: ignore[arg-type]
    photo = tmp_path / "line3_part.png"
    hole_photo(59).save(photo)

    page = browser_page
    page.goto(f"{base}/")
    page.fill("input[name=username]", "worker1")
    page.fill("input[name=password]", WORKER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    assert "최신" in page.locator("#gallery-status").inner_text()
    page.set_input_files("#photo-input", str(photo))
    assert page.locator("#info-name").inner_text() == "line3_part.png"
    page.wait_for_function("document.getElementById('info-resolution').textContent.includes('160')")
    assert page.locator("#photo-preview").is_visible()
    screenshot(page, "search-upload-preview")
    page.click("#upload-submit")
    page.wait_for_url("**/inspect/*/search")
    page.wait_for_selector("#verdict", timeout=60_000)
    assert "구멍" in page.locator("#verdict").inner_text()
    first_top = page.locator("#top1").get_attribute("data-image-id")
    screenshot(page, "search-result")

    other = page.locator("#other-matches .thumb").first
    chosen_id = other.get_attribute("data-image-id")
    other.click()
    page.wait_for_selector(".chosen-badge")
    assert page.locator("#top1").get_attribute("data-image-id") == chosen_id != first_top

    page.select_option("#top-k", "3")
    page.wait_for_function("document.querySelectorAll('#other-matches .thumb').length === 2")

    page.click("#open-register")
    assert page.locator("#register-dialog").is_visible()
    page.wait_for_function(
        "document.getElementById('register-file-name').textContent === 'plate_hole_005.png'"
    )
    assert page.locator("#register-product").input_value() == str(catalog.product_id)
    screenshot(page, "search-register-dialog")
    page.click("#register-submit")
    page.wait_for_selector("#register-message:not([hidden])")
    assert "plate_hole_005.png" in page.locator("#register-message").inner_text()
    assert "바로 검색에 반영" in page.locator("#register-message").inner_text()
    screenshot(page, "search-registered")
    page.click("#register-cancel")
    assert page.locator("#open-register").is_disabled()
    href = page.locator("#next-step").get_attribute("href")
    assert href is not None
    assert href.endswith(f"/anomaly?product_id={catalog.product_id}")
    page.set_viewport_size({"width": 800, "height": 1280})  # a tablet in portrait
    page.reload()
    page.wait_for_selector("#verdict")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.locator("#next-step").bounding_box()["height"] >= 48  # a target a gloved finger hits
    screenshot(page, "search-result-tablet")


def test_search_page_explains_a_missing_index(search_server: str, browser_page: Any, tmp_path: Path) -> None:
    base = search_server
    page = browser_page
    page.goto(f"{base}/")
    page.fill("input[name=username]", "worker1")
    page.fill("input[name=password]", WORKER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    assert "없음" in page.locator("#gallery-status").inner_text()
    photo = tmp_path / "part.png"
    hole_photo(63).save(photo)
    page.set_input_files("#photo-input", str(photo))
    page.click("#upload-submit")
    page.wait_for_url("**/inspect/*/search")
    page.wait_for_selector("#search-error:not([hidden])")
    assert "유사도 검색 인덱스" in page.locator("#search-error").inner_text()
    assert page.locator("#searching").is_hidden()
    screenshot(page, "search-no-index")
