"""In a real browser, under the Content-Security-Policy (issue 14, item 9): the pages and the offline API
docs work with no CSP violation, and a select box still submits its form on change."""

from __future__ import annotations

from typing import Any

import pytest

from app.auth import service as auth_service
from app.auth.schemas import UserCreate
from app.catalog import service as catalog_service
from app.catalog.schemas import ProductCreate
from app.core.config import Settings
from app.db.session import make_engine, make_session_factory

pytestmark = pytest.mark.browser


def _seed(settings: Settings) -> list[int]:
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        auth_service.create_user(
            session,
            user_in=UserCreate(username="admin1", password="pass-12345", role="admin"),
            settings=settings,
            actor_id=None,
        )
        ids = [
            catalog_service.create_product(
                session, product_in=ProductCreate(code=code, name=name), actor_id=None
            ).id
            for code, name in (("battery_cap", "전지 캡"), ("fabric", "직물 원단"))
        ]
    engine.dispose()
    return ids


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
