"""End to end in a real browser, on real engines and real jobs: an admin sets up a product from nothing
(catalog, images as ZIPs, a PDF manual, the three rebuild jobs), then a worker inspects a defect photo
through all four steps and finds the inspection in the history."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from app.demo.generator import DemoProduct
from tests.browser.conftest import screenshot
from tests.factories import demo_dataset, make_users, open_session

pytestmark = pytest.mark.browser

PASSWORD = "pass-12345"
PRODUCT = "metal_plate"
DEFECT = "scratch"
JOB_TIMEOUT_MS = 300_000  # real embedding / PatchCore training on a shared 2-core machine
STEP_TIMEOUT_MS = 120_000


def _login(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "/login" not in page.url, page.inner_text("body")


def _zip(root: Path, paths: list[str], extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for rel in paths:
            archive.writestr(Path(rel).name, (root / rel).read_bytes())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _upload_zip(page: Any, base: str, kind: str, name: str, data: bytes) -> None:
    page.goto(f"{base}/admin/images/{kind}")
    page.set_input_files(
        "#upload-form input[type=file]",
        files=[{"name": name, "mimeType": "application/zip", "buffer": data}],
    )
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-result:not([hidden]) .summary", timeout=STEP_TIMEOUT_MS)
    page.wait_for_load_state("networkidle")


def _run_deploy_job(page: Any, base: str, slug: str, product_label: str) -> None:
    """Start the job for one product on its deploy screen and wait until the page shows it succeeded."""
    page.goto(f"{base}/admin/deploy/{slug}")
    assert page.locator("[data-unavailable]").count() == 0, f"{slug} deployment is not installed"
    option = page.locator(".deploy-form select[name=product_id] option", has_text=product_label)
    page.select_option(".deploy-form select[name=product_id]", option.get_attribute("value"))
    page.click(".deploy-form button[type=submit]")
    page.wait_for_url(f"**/admin/deploy/{slug}?job=*")
    job_id = page.url.rsplit("job=", 1)[1].split("&")[0]
    page.wait_for_selector(f"[data-job-panel][data-job-id='{job_id}']")
    # deploy.js follows the job live and reloads the page once it is over: the history row then ends
    row = page.locator(f"table.job-table tr:has(td:first-child:text-is('{job_id}'))")
    row.locator(".status-succeeded, .status-failed").wait_for(timeout=JOB_TIMEOUT_MS)
    assert row.locator(".status-succeeded").count() == 1, row.inner_text()
    page.wait_for_selector(f"tr[data-product={PRODUCT}] .badge.art-current", timeout=STEP_TIMEOUT_MS)
    page.wait_for_load_state("networkidle")
    assert page.locator("[data-job-panel] [data-field=status]").first.inner_text() == "완료"
    screenshot(page, f"e2e-admin-deploy-{slug}")


def _admin_sets_up_the_product(page: Any, base: str, root: Path, product: DemoProduct) -> None:
    _login(page, base, "admin1")

    page.goto(f"{base}/admin/products")
    page.fill("input[name=code]", PRODUCT)
    page.fill("input[name=name]", product.name)
    page.fill("textarea[name=description]", product.description)
    page.click("button.primary")
    page.wait_for_selector(f"tr[data-product={PRODUCT}]")
    screenshot(page, "e2e-admin-products")

    defect = next(d for d in product.defect_types if d.code == DEFECT)
    page.goto(f"{base}/admin/defect-types")
    page.fill("input[name=code]", DEFECT)
    page.fill("input[name=name]", defect.name)
    page.fill("textarea[name=description]", defect.description)
    page.click("button.primary")
    page.wait_for_selector(f"tr[data-defect={DEFECT}]")
    screenshot(page, "e2e-admin-defect-types")

    normals = [n.path for n in product.normal_images]
    _upload_zip(page, base, "normal", "normals.zip", _zip(root, normals))
    assert f"{len(normals)}개 등록됨" in page.locator("#upload-result .summary").inner_text()
    assert page.locator("#image-grid li.thumb").count() == len(normals)
    screenshot(page, "e2e-admin-normal-images")

    defects = [d.path for d in product.defect_images if d.defect_code == DEFECT and not d.holdout]
    data = _zip(root, defects, {"notes.txt": b"not an image"})
    _upload_zip(page, base, "defect", "defects.zip", data)
    assert f"{len(defects)}개 등록됨" in page.locator("#upload-result .summary").inner_text()
    assert "defects.zip:notes.txt" in page.locator("#upload-result .rejected-list").inner_text()
    assert page.locator("#image-grid li.thumb").count() == len(defects)
    assert page.locator("#image-grid .badge", has_text=defect.name).count() == len(defects)
    screenshot(page, "e2e-admin-defect-images")

    page.goto(f"{base}/admin/manuals")
    page.set_input_files(
        "#manual-upload-form input[type=file]",
        files=[
            {
                "name": "금속_플레이트_매뉴얼.pdf",
                "mimeType": "application/pdf",
                "buffer": (root / product.manual_pdf).read_bytes(),
            }
        ],
    )
    page.click("#manual-upload-form button[type=submit]")
    page.wait_for_selector("#manual-table tr[data-manual-id]", timeout=STEP_TIMEOUT_MS)
    assert "금속_플레이트_매뉴얼.pdf" in page.locator("#manual-table").inner_text()
    screenshot(page, "e2e-admin-manuals")

    label = f"{product.name} ({PRODUCT})"
    for slug in ("search", "anomaly", "manuals"):
        _run_deploy_job(page, base, slug, label)
    # the anomaly screen shows the evaluation of the freshly trained model
    page.goto(f"{base}/admin/deploy/anomaly")
    row = page.locator(f"tr[data-product={PRODUCT}]").inner_text()
    assert "efficientnet" in row.lower(), row

    page.goto(f"{base}/admin/manuals")
    page.wait_for_selector("#manual-table tr[data-status=indexed]", timeout=STEP_TIMEOUT_MS)
    page.context.clear_cookies()


def _worker_inspects_a_photo(page: Any, base: str, root: Path, product: DemoProduct) -> None:
    _login(page, base, "worker1")
    defect_name = next(d.name for d in product.defect_types if d.code == DEFECT)
    photo = next(d for d in product.defect_images if d.defect_code == DEFECT and d.holdout)

    # step 1: upload
    page.goto(f"{base}/")
    page.wait_for_load_state("networkidle")
    assert page.locator("#gallery-status .state-badge").inner_text() == "최신"
    page.set_input_files(
        "#photo-input",
        files=[{"name": "part.png", "mimeType": "image/png", "buffer": (root / photo.path).read_bytes()}],
    )
    page.wait_for_selector("#photo-preview:not([hidden])")
    page.wait_for_selector("#upload-submit:not([disabled])")
    assert page.locator("#info-name").inner_text() == "part.png"
    screenshot(page, "e2e-worker-upload")
    page.click("#upload-submit")

    # step 2: search -> the page runs the search itself and shows the verdict and the TOP-1 match
    page.wait_for_url("**/inspect/*/search", timeout=STEP_TIMEOUT_MS)
    inspection_id = int(page.url.rstrip("/").split("/")[-2])
    page.wait_for_selector("#verdict", timeout=STEP_TIMEOUT_MS)
    page.wait_for_load_state("networkidle")
    assert page.locator("#verdict .verdict-main").inner_text().strip() == defect_name
    assert page.locator("#top1 img").count() == 1
    assert page.locator("#top1 .similarity-big").inner_text().endswith("%")
    screenshot(page, "e2e-worker-search")
    page.click("#next-step")

    # step 3: anomaly -> score, badge, picture
    page.wait_for_url(f"**/inspect/{inspection_id}/anomaly**")
    page.wait_for_selector("#anomaly-result:not([hidden])", timeout=STEP_TIMEOUT_MS)
    assert page.inner_text("#anomaly-badge") in ("정상", "이상")
    assert page.inner_text("#anomaly-score").strip() != ""
    page.wait_for_function(
        "document.getElementById('anomaly-picture').complete"
        " && document.getElementById('anomaly-picture').naturalWidth > 0",
        timeout=STEP_TIMEOUT_MS,
    )
    screenshot(page, "e2e-worker-anomaly")
    page.locator("#generator-buttons a").first.click()

    # step 4: guidance -> four sections from the manual, then action and score
    page.wait_for_url(f"**/inspect/{inspection_id}/guidance**")
    page.wait_for_selector("#gd-answer[data-state=done]", timeout=STEP_TIMEOUT_MS)
    for section, heading in (
        ("status", "불량 현황"),
        ("cause", "원인 분석"),
        ("action", "대응 방안"),
        ("prevention", "예방 조치"),
    ):
        article = page.locator(f"#gd-sections article.gd-{section}")
        assert article.locator("h3").inner_text().strip() == heading
        assert page.inner_text(f"[data-section={section}]").strip(), section
    assert defect_name in page.inner_text("[data-section=status]")
    assert page.locator("#gd-citations a").count() >= 1
    page.fill("#gd-action", "해당 로트 격리 후 연마, 재검사 합격")
    page.check(".gd-score input[value='4']")
    screenshot(page, "e2e-worker-guidance")
    page.click(".gd-save")
    page.wait_for_selector("[data-testid=feedback-saved]", timeout=STEP_TIMEOUT_MS)
    assert "검사가 완료되었습니다" in page.inner_text("[data-testid=feedback-saved]")
    screenshot(page, "e2e-worker-saved")

    # history: the row, then its detail page
    page.click("[data-testid=feedback-saved] a[href='/history']")
    page.wait_for_url(f"{base}/history")
    row = page.locator(f"tr[data-inspection='{inspection_id}']")
    assert row.count() == 1
    text = row.inner_text()
    assert defect_name in text
    assert "매뉴얼 발췌 (오프라인, 모델 불필요)" in text  # the generator in words
    assert row.locator(".stars").inner_text() == "★★★★☆"
    screenshot(page, "e2e-worker-history")
    row.locator(f"a[href='/history/{inspection_id}']").last.click()
    page.wait_for_url(f"{base}/history/{inspection_id}")
    main = page.inner_text("main")
    assert "해당 로트 격리 후 연마, 재검사 합격" in main
    assert page.locator("[data-guidance=cause]").count() == 1
    screenshot(page, "e2e-worker-history-detail")


def test_admin_sets_up_a_product_and_a_worker_inspects_it(
    live_server: tuple[str, Settings], browser_page: Any, tmp_path: Path
) -> None:
    base, settings = live_server
    with open_session(settings) as session:
        make_users(session, settings, password=PASSWORD)
    root = tmp_path / "demo"
    manifest = demo_dataset(root, defects_per_type=4)
    product = next(p for p in manifest.products if p.code == PRODUCT)
    page = browser_page
    page.set_default_timeout(30_000)
    page.on("dialog", lambda dialog: dialog.accept())

    _admin_sets_up_the_product(page, base, root, product)
    _worker_inspects_a_photo(page, base, root, product)
