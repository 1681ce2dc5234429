"""In a real browser: an admin uploads a real Word manual, watches it get indexed, opens what was understood
and links a section to another defect type (Korean, then English); nothing overflows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from tests.browser.conftest import screenshot
from tests.browser.test_admin_catalog import _fits, _h1, _seed

pytestmark = pytest.mark.browser

SEED = Path(__file__).resolve().parents[2].parent / "shared" / "seeds" / "manuals" / "prod1_menual.docx"


@pytest.mark.skipif(not SEED.is_file(), reason="seed manuals absent")
def test_admin_reads_and_corrects_the_understood_structure(
    live_server: tuple[str, Settings], browser_page: Any
) -> None:
    base, settings = live_server
    _seed(settings)
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin1")
    page.fill("input[name=password]", "pass-12345")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/admin")

    page.goto(f"{base}/admin/products")
    page.fill("input[name=code]", "prod1")
    page.fill("input[name=name]", "주조 부품")
    page.click("button.primary")
    page.wait_for_selector(".success")
    for code, name in (("hole", "기공"), ("burr", "버"), ("scratch", "긁힘"), ("crack", "균열")):
        page.goto(f"{base}/admin/defect-types")
        page.fill("input[name=code]", code)
        page.fill("input[name=name]", name)
        page.click("button.primary")
        page.wait_for_selector(f"tr[data-defect={code}]")

    page.goto(f"{base}/admin/manuals")
    page.set_input_files(
        "input[type=file]",
        files=[
            {"name": "prod1_menual.docx", "mimeType": "application/octet-stream", "buffer": SEED.read_bytes()}
        ],
    )
    page.click("#manual-upload-form button[type=submit]")
    # Indexed in the background; the list polls, then shows how many defect sections were understood.
    page.wait_for_selector("#manual-table tr[data-status=indexed] .section-count", timeout=60000)
    assert "불량 항목 3개" in page.locator("#manual-table .section-count").inner_text()
    page.click("#manual-table >> text=구조 보기")
    page.wait_for_selector("[data-section-index]")
    assert _h1(page) == "인식한 구조"
    assert page.locator("[data-section-index]").count() == 3
    cause = page.locator("[data-section-index='0'] tr[data-part=cause]").inner_text()
    assert "주조 과정 중 금속 용탕" in cause
    assert "균열" in page.locator("#unmapped").inner_text()
    assert _fits(page)
    screenshot(page, "admin-manual-structure-ko")

    scratch = page.locator("[data-section-index]", has_text="Scratch (긁힘)")
    scratch.locator("select[name=defect_type_id]").select_option(label="균열 (crack)")
    scratch.locator("button:has-text('연결 저장')").click()
    page.wait_for_selector(".success")
    assert "긁힘" in page.locator("#unmapped").inner_text()
    assert "관리자 지정" in page.locator("[data-section-index]", has_text="Scratch (긁힘)").inner_text()

    page.goto(page.url.split("?")[0] + "?lang=en")
    assert _h1(page) == "Understood structure"
    assert "set by admin" in page.inner_text("main")
    assert _fits(page)
    screenshot(page, "admin-manual-structure-en")
    page.goto(f"{base}/admin/manuals?lang=ko")
