"""In a real browser: an admin logs in, sees products, switches language; a worker sees the steps."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.config import Settings
from tests.browser.conftest import screenshot
from tests.factories import make_products, make_users, open_session

pytestmark = pytest.mark.browser


def _seed(settings: Settings) -> None:
    with open_session(settings) as session:
        make_users(session, settings, password="pass-12345")
        make_products(session, [("battery_cap", "전지 캡")])


def _login(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/")
    assert "/login" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pass-12345")
    page.click("button[type=submit]")


def _no_horizontal_overflow(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_admin_sees_dashboard_products_and_english(
    live_server: tuple[str, Settings], browser_page: Any
) -> None:
    base, settings = live_server
    _seed(settings)
    page = browser_page
    _login(page, base, "admin1")
    page.wait_for_url(f"{base}/admin")
    assert page.locator("h1").first.inner_text() == "통합 대시보드"
    assert page.locator("td", has_text="전지 캡").count() == 1
    assert _no_horizontal_overflow(page)
    screenshot(page, "admin-dashboard-ko")
    page.click("text=제품 관리")
    page.fill("input[name=code]", "fabric")
    page.fill("input[name=name]", "직물 원단")
    page.click("button.primary")
    page.wait_for_url(f"{base}/admin/products")
    assert page.locator("td", has_text="직물 원단").count() == 1
    screenshot(page, "admin-products-ko")
    page.click("text=English")
    assert page.locator("h1").first.inner_text() == "Products"
    screenshot(page, "admin-products-en")


def test_worker_sees_the_four_steps_and_no_admin(
    live_server: tuple[str, Settings], browser_page: Any
) -> None:
    base, settings = live_server
    _seed(settings)
    page = browser_page
    _login(page, base, "worker1")
    page.wait_for_url(f"{base}/")
    steps = page.locator("ol.steps li").all_inner_texts()
    assert [s.split("\n")[-1].strip() for s in steps] == [
        "이미지 업로드",
        "유사도 매칭",
        "이상 탐지",
        "대응 매뉴얼",
    ]
    assert page.locator("a", has_text="관리자").count() == 0
    assert _no_horizontal_overflow(page)
    screenshot(page, "worker-upload-ko")
    response = page.goto(f"{base}/admin")
    assert response.status == 403
