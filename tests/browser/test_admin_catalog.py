"""In a real browser: an admin walks every catalog screen (uploads, live preview); nothing overflows."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from app.demo.generator import generate_demo_dataset
from tests.browser.conftest import screenshot
from tests.factories import make_users, open_session, png_bytes

pytestmark = pytest.mark.browser


def _seed(settings: Settings) -> None:
    with open_session(settings) as session:
        make_users(session, settings, usernames=["admin1"], password="pass-12345")


def _set_manual_status(settings: Settings, status: str, error: str) -> None:
    """Mark every manual with a status, as a failed indexing job would."""
    from app.db.tables import Manual

    with open_session(settings) as session:
        for manual in session.query(Manual):
            manual.status, manual.error = status, error
        session.commit()


def _fits(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def _h1(page: Any) -> str:
    return str(page.locator("h1").first.inner_text()).strip()


def _zip_with_a_bad_entry() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok_a.png", png_bytes((96, 96), (180, 60, 40)))
        archive.writestr("ok_b.png", png_bytes((96, 96), (40, 160, 60)))
        archive.writestr("readme.txt", b"not an image")
    return buffer.getvalue()


def test_admin_walks_the_catalog_screens(
    live_server: tuple[str, Settings], browser_page: Any, tmp_path: Path
) -> None:
    base, settings = live_server
    _seed(settings)
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin1")
    page.fill("input[name=password]", "pass-12345")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/admin")

    # 제품 관리: create, then edit the name; the code stays.
    page.goto(f"{base}/admin/products")
    page.fill("input[name=code]", "metal_plate")
    page.fill("input[name=name]", "금속 플레이트")
    page.fill("textarea[name=description]", "프레스 가공 후 표면 검사 대상 판금 부품")
    page.click("button.primary")
    page.wait_for_selector(".success")
    page.click("tr[data-product=metal_plate] >> text=수정")
    page.fill("input[name=name]", "금속 플레이트 (A라인)")
    page.click("button.primary")
    page.wait_for_selector(".success")
    name_cell = page.locator("tr[data-product=metal_plate] td.name").inner_text()
    assert name_cell.startswith("금속 플레이트 (A라인)\n")
    assert _fits(page)
    screenshot(page, "admin-catalog-products-ko")

    # 불량 유형 관리: a bad code is refused with a Korean message, then a good one is created.
    page.goto(f"{base}/admin/defect-types")
    page.fill("input[name=code]", "scratch")
    page.fill("input[name=name]", "긁힘")
    page.fill("textarea[name=description]", "표면에 선 형태로 남은 긁힌 자국")
    page.click("button.primary")
    page.wait_for_selector("tr[data-defect=scratch]")
    assert _fits(page)
    screenshot(page, "admin-catalog-defect-types-ko")

    # 정상 이미지 등록: files plus a ZIP with a non-image; progress, then the refused list and the grid.
    page.goto(f"{base}/admin/images/normal")
    page.set_input_files(
        "input[type=file]",
        files=[
            {"name": "front.png", "mimeType": "image/png", "buffer": png_bytes((120, 90), (90, 90, 200))},
            {"name": "batch.zip", "mimeType": "application/zip", "buffer": _zip_with_a_bad_entry()},
        ],
    )
    assert "2" in page.locator(".dz-chosen").inner_text()
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-result:not([hidden]) .rejected-list")
    assert page.locator("#image-grid li.thumb").count() == 3
    assert "batch.zip:readme.txt" in page.locator(".rejected-list").inner_text()
    assert "3개 등록됨" in page.locator("#upload-result .summary").inner_text()
    assert page.locator(".thumb-name", has_text="metal_plate_ok_001.png").count() == 1
    assert _fits(page)
    screenshot(page, "admin-catalog-normal-images-ko")
    page.locator("li.thumb").first.locator("button.danger").click()
    page.wait_for_selector(".success")
    assert page.locator("#image-grid li.thumb").count() == 2

    # 불량 이미지 등록
    page.goto(f"{base}/admin/images/defect")
    page.set_input_files(
        "input[type=file]",
        files=[{"name": "s1.png", "mimeType": "image/png", "buffer": png_bytes((100, 100), (30, 30, 30))}],
    )
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-result:not([hidden])")
    assert page.locator(".thumb-name", has_text="metal_plate_scratch_001.png").count() == 1
    screenshot(page, "admin-catalog-defect-images-ko")

    # 이미지 전처리 설정: ticking grayscale redraws the "after" image live, then it is saved.
    page.goto(f"{base}/admin/preprocessing")
    page.wait_for_function("document.getElementById('prep-after').dataset.loaded")
    before = page.locator("#prep-after").get_attribute("src")
    page.check("input[name=steps][value=grayscale]")
    page.wait_for_function(
        "(b) => { const i = document.getElementById('prep-after'); return i.dataset.loaded && i.src !== b; }",
        arg=page.evaluate("document.getElementById('prep-after').src"),
    )
    assert "grayscale=true" in page.locator("#prep-after").get_attribute("src")
    assert before != page.locator("#prep-after").get_attribute("src")
    page.click("#prep-form button[type=submit]")
    page.wait_for_selector(".success")
    assert page.locator("#prep-table span.on").count() == 1
    assert _fits(page)
    screenshot(page, "admin-catalog-preprocessing-ko")

    # 모델 선택: unavailable choices are shown with the reason.
    page.goto(f"{base}/admin/models")
    assert page.locator("table.choices .badge.state-failed").count() >= 1
    assert _fits(page)
    screenshot(page, "admin-catalog-models-ko")

    # 매뉴얼 관리: a real PDF with an upload progress bar, then the list with its status.
    manifest = generate_demo_dataset(
        tmp_path / "d", seed=0, size=64, normals_per_product=1, defects_per_type=1
    )
    pdf = (tmp_path / "d" / manifest.products[0].manual_pdf).read_bytes()
    page.goto(f"{base}/admin/manuals")
    page.set_input_files(
        "input[type=file]", files=[{"name": "금속_매뉴얼.pdf", "mimeType": "application/pdf", "buffer": pdf}]
    )
    page.click("#manual-upload-form button[type=submit]")
    page.wait_for_selector("#manual-table tr[data-manual-id]")
    assert "금속_매뉴얼.pdf" in page.locator("#manual-table").inner_text()
    # The page polls while indexing is not final: the real background job's end shows up without a reload.
    page.wait_for_selector(
        "#manual-table tr[data-status=indexed] .status-badge,"
        " #manual-table tr[data-status=failed] .status-badge",
        timeout=90_000,
    )
    # A failure is shown with its reason.
    _set_manual_status(settings, "failed", "색인 중 오류")
    page.reload()
    page.wait_for_selector("#manual-table tr[data-status=failed] .status-badge.state-failed")
    assert "색인 중 오류" in page.locator("#manual-table .error-text").inner_text()
    assert _fits(page)
    screenshot(page, "admin-catalog-manuals-ko")

    # 사용자 관리: create a worker.
    page.goto(f"{base}/admin/users")
    page.fill("input[name=username]", "kim")
    page.fill("input[name=display_name]", "김작업")
    page.fill("form[action='/admin/users'] input[name=password]", "worker-pass-1")
    page.click("button.primary")
    page.wait_for_selector("tr[data-user=kim]")
    assert _fits(page)
    screenshot(page, "admin-catalog-users-ko")

    # English, and a tablet-sized screen: still nothing overflows.
    page.goto(f"{base}/admin/products?lang=en")
    assert _h1(page) == "Products"
    screenshot(page, "admin-catalog-products-en")
    page.set_viewport_size({"width": 820, "height": 1100})
    for url, name in [
        ("/admin/images/normal", "normal-images"),
        ("/admin/preprocessing", "preprocessing"),
        ("/admin/models", "models"),
        ("/admin/users", "users"),
        ("/admin/products?lang=ko", "products"),
    ]:
        page.goto(f"{base}{url}")
        wide = page.evaluate(
            "Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right"
            " > window.innerWidth + 1).slice(0, 8).map(e => e.tagName + '.' + e.className + ' '"
            " + Math.round(e.getBoundingClientRect().right))"
        )
        assert _fits(page), (url, wide)
        screenshot(page, f"admin-catalog-tablet-{name}")
