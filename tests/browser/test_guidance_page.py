"""In a real browser: a worker opens step 4, the answer streams in from the indexed demo manual, the
worker records the action and a score, and sees the completion confirmation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.db.tables import Inspection
from app.demo.catalog import PRODUCTS
from tests.browser.conftest import screenshot
from tests.factories import make_users, open_session, png_bytes
from tests.manual_library import demo_dataset

pytestmark = pytest.mark.browser
PASSWORD = "pass-12345"


def _seed_users(settings: Settings) -> None:
    with open_session(settings) as session:
        make_users(session, settings, password=PASSWORD)


def _api(base: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    token = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD}).json()
    client.headers["Authorization"] = f"Bearer {token['access_token']}"
    client.cookies.clear()
    return client


def _prepare(base: str, settings: Settings, root: Path) -> int:
    """Demo product + its manual (indexed by the server's own background job) + a searched inspection."""
    product = demo_dataset(root).products[0]
    admin = _api(base, "admin1")
    pid = admin.post("/api/v1/products", json={"code": product.code, "name": product.name}).json()["id"]
    scratch = admin.post(
        f"/api/v1/products/{pid}/defect-types",
        json={"code": "scratch", "name": "긁힘", "description": product.defect_types[0].description},
    ).json()["id"]
    pdf = (root / product.manual_pdf).read_bytes()
    manual = admin.post(
        f"/api/v1/products/{pid}/manuals", files={"file": ("manual.pdf", pdf, "application/pdf")}
    )
    assert manual.status_code == 201
    deadline = time.monotonic() + 120
    while admin.get(f"/api/v1/products/{pid}/manuals").json()[0]["status"] != "indexed":
        assert time.monotonic() < deadline, "manual was not indexed"
        time.sleep(0.5)
    worker = _api(base, "worker1")
    inspection_id = worker.post(
        "/api/v1/inspections",
        files={"file": ("part.png", png_bytes((128, 128)), "image/png")},
        data={"product_id": pid},
    ).json()["id"]
    # The search step belongs to another area: write its verdict the way it stores it.
    with open_session(settings) as session:
        row = session.get(Inspection, inspection_id)
        row.verdict_product_id, row.verdict_defect_type_id, row.verdict_score = pid, scratch, 0.93
        row.is_unknown, row.status = False, "searched"
        session.commit()
    return int(inspection_id)


def test_worker_reads_the_streamed_answer_and_saves_feedback(
    live_server: tuple[str, Settings], browser_page: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base, settings = live_server
    _seed_users(settings)
    inspection_id = _prepare(base, settings, tmp_path_factory.getbasetemp() / "demo-manuals")
    page = browser_page
    page.goto(f"{base}/inspect/{inspection_id}/guidance")
    page.fill("input[name=username]", "worker1")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{base}/inspect/{inspection_id}/guidance")

    page.wait_for_selector("#gd-answer[data-state=done]", timeout=60_000)
    cause = page.inner_text("[data-section=cause]")
    scratch = next(p for p in PRODUCTS if p.code == "metal_plate").defects[0]
    assert any(c[:20] in cause for c in scratch.causes), cause
    assert "긁힘" in page.inner_text("[data-section=status]")
    first_citation = page.locator("#gd-citations a").first
    assert "#page=" in (first_citation.get_attribute("href") or "")
    assert "매뉴얼 발췌 (오프라인, 모델 불필요)" in page.inner_text("#gd-meta")  # the label, not "extractive"

    page.fill("#gd-action", "로트 격리 후 이송 롤러 청소")
    page.click(".gd-score-option:nth-child(5) span")  # the legend is the first child: this is score 4
    screenshot(page, "guidance-answer")
    page.click(".gd-save")
    page.wait_for_selector("[data-testid=feedback-saved]")
    assert "검사가 완료되었습니다" in page.inner_text("[data-testid=feedback-saved]")
    assert page.locator("[data-testid=feedback-saved] a[href='/history']").count() == 1
    screenshot(page, "guidance-saved")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone on the line
    page.goto(f"{base}/inspect/{inspection_id}/guidance")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    screenshot(page, "guidance-phone")
    record = _api(base, "worker1").get(f"/api/v1/inspections/{inspection_id}").json()
    assert record["status"] == "completed"
    assert record["feedback_score"] == 4
    assert record["action_taken"] == "로트 격리 후 이송 롤러 청소"
