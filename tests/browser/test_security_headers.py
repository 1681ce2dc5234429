"""In a real browser, under the Content-Security-Policy (issue 14, item 9): the pages and the offline API
docs work with no CSP violation, and a select box still submits its form on change."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.config import Settings
from tests.factories import make_products, make_users, open_session

pytestmark = pytest.mark.browser


def _seed(settings: Settings) -> list[int]:
    with open_session(settings) as session:
        make_users(session, settings, usernames=["admin1"], password="pass-12345")
        return make_products(session, [("battery_cap", "전지 캡"), ("fabric", "직물 원단")])


def test_pages_and_docs_work_under_the_csp(live_server: tuple[str, Settings], browser_page: Any) -> None:
    base, settings = live_server
    product_ids = _seed(settings)
    # A context of its own: the shared fixture bypasses the CSP for Playwright's eval-based waits.
    context = browser_page.context.browser.new_context(locale="ko-KR")
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None
    )
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin1")
    page.fill("input[name=password]", "pass-12345")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/admin")
    page.goto(f"{base}/admin/images/normal")
    # The inline onchange handler is allowed by its hash: choosing a product reloads the list for it.
    page.select_option("select[name=product_id]", str(product_ids[1]))
    page.wait_for_url(f"**product_id={product_ids[1]}**")
    page.goto(f"{base}/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)  # rendered from the package's assets
    assert violations == []
    page.goto(f"{base}/redoc")
    page.wait_for_selector("redoc [role=navigation], redoc .menu-content", timeout=30_000)
    # ReDoc's only outside request is its "powered by" logo: blocked, as an air-gapped site would see it.
    assert all("img-src" in v and "logo" in v for v in violations), violations
    context.close()
