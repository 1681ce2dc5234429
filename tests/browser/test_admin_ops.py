"""In a real browser: the admin dashboard, a deploy screen starting and watching a job to the end and
cancelling another, the job log, and the history list, detail and statistics, with screenshots."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from app.core.config import Settings
from app.core.jobs import JobContext
from app.db.tables import Artifact
from app.inspection import service as inspection_service
from app.main import create_app
from tests.browser.conftest import _free_port, screenshot
from tests.factories import days_ago, make_catalog, make_inspection, make_users, png_bytes

pytestmark = pytest.mark.browser

PASSWORD = "pass-12345"


@pytest.fixture
def ops_server(settings: Settings) -> Iterator[tuple[str, FastAPI]]:
    """Like `live_server`, but the test also gets the app (to register a job handler on its runner)."""
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)


def slow_search_job(ctx: JobContext) -> dict[str, int]:
    """A tiny real job handler for this page test (not an engine): four stages over about four seconds."""
    for index, stage in enumerate(("loading images", "embedding 1/2", "embedding 2/2", "writing index")):
        ctx.progress(index / 4, stage)
        ctx.log(f"stage {stage}")
        for _ in range(10):
            time.sleep(0.1)
            ctx.check_cancelled()
    return {"images": 12, "products": 2}


def _seed(app: FastAPI, settings: Settings) -> dict[str, int]:
    storage = app.state.storage
    with app.state.session_factory() as session:
        make_users(session, settings, password=PASSWORD)
        cat = make_catalog(session)
        metal, fabric = cat.products["metal_plate"], cat.products["fabric"]
        for days, defect, score in (
            (0, "scratch", 5),
            (1, "scratch", 4),
            (3, "dent", 3),
            (8, "scratch", None),
        ):
            make_inspection(
                session,
                storage,
                settings,
                product_id=metal,
                defect_type_id=cat.defects[defect],
                anomaly=True,
                generator="extractive",
                score=score,
                action="연마 후 재검사" if score else "",
                created_at=days_ago(days),
                color=(150, 60 + days * 10, 60),
            )
        make_inspection(session, storage, settings, product_id=fabric, anomaly=False, created_at=days_ago(2))
        detailed = make_inspection(
            session,
            storage,
            settings,
            product_id=fabric,
            defect_type_id=cat.defects["hole"],
            anomaly=True,
            generator="llm",
            score=4,
            action="원단 교체 후 재검사 완료",
            created_at=days_ago(0, 11),
            color=(90, 90, 160),
        )
        for name, color in (
            ("heatmap.png", (220, 40, 30)),
            ("overlay.png", (160, 90, 140)),
            ("comparison.png", (90, 140, 90)),
        ):
            storage.put(
                inspection_service.file_key(detailed, name), png_bytes((256, 256), color), "image/png"
            )
        detailed.search_result = {
            "matches": [],
            "verdict": {
                "product_id": fabric,
                "defect_type_id": cat.defects["hole"],
                "score": 0.88,
                "margin": 0.21,
            },
        }
        detailed.anomaly_result = {
            "score": 3.4,
            "threshold": 2.6,
            "is_anomaly": True,
            "regions": [{"x": 40, "y": 52, "width": 30, "height": 22, "score": 3.4}],
            **{
                f"{n}_url": inspection_service.file_url(detailed, f"{n}.png")
                for n in ("heatmap", "overlay", "comparison")
            },
        }
        detailed.guidance = {
            "sections": {
                "status": "직물 중앙부에 지름 약 3mm의 구멍이 있습니다.",
                "cause": "직조기 바늘 파손 또는 원사 끊김으로 발생합니다.",
                "action": "해당 롤을 격리하고 바늘을 교체한 뒤 재검사합니다.",
                "prevention": "교대마다 바늘 상태를 점검하고 장력 설정을 기록합니다.",
            },
            "citations": [{"manual_id": 1, "page": 3, "text": "구멍 불량 - 발생 원인: 바늘 파손, 원사 끊김"}],
            "generator": "llm",
            "elapsed_ms": 840.0,
        }
        session.add(
            Artifact(
                kind="anomaly_model",
                product_id=metal,
                version="20260301",
                path="models/anomaly/metal_plate/20260301",
                meta={
                    "backbone": "efficientnet-lite0",
                    "bank_size": 16384,
                    "calibration": {},
                    "evaluation": {
                        "image_auroc": 0.981,
                        "pixel_auroc": 0.955,
                        "f1": 0.93,
                        "threshold": 2.6,
                        "confusion": {"tp": 28, "fp": 1, "tn": 39, "fn": 3},
                    },
                },
            )
        )
        session.commit()
        return {"detailed": detailed.id, "hole": cat.defects["hole"]}


def _login(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def _fits(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_admin_walks_dashboard_deploy_and_history(
    ops_server: tuple[str, FastAPI], settings: Settings, browser_page: Any
) -> None:
    base, app = ops_server
    ids = _seed(app, settings)
    app.state.runner.register("search_index", slow_search_job)
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    _login(page, base, "admin1")

    page.goto(f"{base}/admin")
    assert page.locator("h1").first.inner_text() == "통합 대시보드"
    assert page.locator('[data-stat="inspections"] .stat-value').inner_text() == "6"
    assert page.locator("svg.chart title", has_text="긁힘 · metal_plate: 3").count() == 1
    assert page.locator("tr[data-product=metal_plate] td[data-col=normal]").inner_text() == "0"
    assert _fits(page)
    screenshot(page, "ops-dashboard-ko")

    # start a rebuild for all products and watch it to the end without reloading by hand
    page.click("text=CLIP 임베딩 재구축")
    page.wait_for_url(f"{base}/admin/deploy/search")
    assert "작업자는 기존 인덱스·메모리뱅크로 검사를 계속할 수 있습니다" in page.inner_text("main")
    page.click("button:has-text('재구축 시작')")
    page.wait_for_url("**/admin/deploy/search?job=*")
    panel = page.locator("[data-job-panel]").first
    page.wait_for_function(
        "() => { const p = document.querySelector('[data-job-panel]');"
        " return p && p.dataset.status === 'running'"
        " && p.querySelector('[data-field=stage]').textContent.includes('embedding'); }",
        timeout=15000,
    )
    assert panel.locator("[data-field=status]").inner_text() == "실행 중"
    assert panel.locator("[data-field=elapsed]").inner_text().endswith("초")
    page.wait_for_function(
        "() => document.querySelector('[data-stage-list]')?.textContent.includes('stage embedding')",
        timeout=15000,
    )
    assert _fits(page)
    screenshot(page, "ops-deploy-search-running")
    # the page reloads itself when the job ends: the history then shows the outcome
    page.wait_for_selector("table.job-table .status-succeeded", timeout=20000)
    assert "images=12" in page.locator("table.job-table").inner_text()
    assert page.locator("[data-job-panel] [data-field=status]").inner_text() == "완료"
    assert not page.locator("[data-job-panel] [data-cancel-form]").is_visible()  # nothing left to cancel
    screenshot(page, "ops-deploy-search-done")

    # a second job, cancelled from its panel
    page.click("button:has-text('재구축 시작')")
    page.wait_for_url("**/admin/deploy/search?job=*")
    page.wait_for_function(
        "() => document.querySelector('[data-job-panel]')?.dataset.status === 'running'", timeout=15000
    )
    page.click("[data-cancel-form] button")
    page.wait_for_selector("table.job-table .status-cancelled", timeout=20000)

    # the job page: log and result
    page.click("table.job-table tr:has(.status-succeeded) >> text=로그 보기")
    page.wait_for_url("**/admin/deploy/jobs/*")
    log = page.locator("[data-job-log]").inner_text()
    assert "stage writing index" in log
    assert "finished" in log
    assert '"images": 12' in page.locator("[data-field=result]").inner_text()
    screenshot(page, "ops-job-detail")

    # the anomaly screen: evaluation per product (the kind may not be installed: it says so)
    page.goto(f"{base}/admin/deploy/anomaly")
    row = page.locator("tr[data-product=metal_plate]")
    assert "0.981" in row.inner_text()
    assert "28 / 1 / 39 / 3" in row.inner_text()
    assert _fits(page)
    screenshot(page, "ops-deploy-anomaly")

    # history: list, filter, detail, statistics
    page.click("header >> text=검사 이력")
    page.wait_for_url(f"{base}/history")
    assert "총 6건" in page.inner_text("main")
    assert _fits(page)
    screenshot(page, "ops-history-list")
    page.select_option("select[name=defect_type_id]", str(ids["hole"]))
    page.click("button:has-text('조회')")
    page.wait_for_url("**/history?*defect_type_id=*")
    assert "총 1건" in page.inner_text("main")
    page.click(f"tr[data-inspection='{ids['detailed']}'] >> text=상세")
    page.wait_for_url(f"{base}/history/{ids['detailed']}")
    assert "원인 분석" in page.inner_text("main")
    # every anomaly image must really load (a broken URL never gets a natural width); wait under load
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('.anomaly-grid img')];"
        " return imgs.length > 0 && imgs.every(img => img.complete && img.naturalWidth > 0); }",
        timeout=30_000,
    )
    assert _fits(page)
    screenshot(page, "ops-history-detail")
    page.goto(f"{base}/history/stats")
    label = "매뉴얼 발췌 (오프라인, 모델 불필요): 4"  # the generator in words, not "extractive"
    assert page.locator("[data-chart=generators] svg title", has_text=label).count() == 1
    assert _fits(page)
    screenshot(page, "ops-history-stats")
    page.goto(f"{base}/history/stats?lang=en")
    assert page.locator("h1").first.inner_text() == "Inspection statistics"
    screenshot(page, "ops-history-stats-en")


def test_worker_reads_history_but_not_deploy(
    ops_server: tuple[str, FastAPI], settings: Settings, browser_page: Any
) -> None:
    base, app = ops_server
    _seed(app, settings)
    page = browser_page
    _login(page, base, "worker1")
    page.goto(f"{base}/history")
    assert "총 6건" in page.inner_text("main")
    response = page.goto(f"{base}/admin/deploy/search")
    assert response is not None
    assert response.status == 403
    assert "관리자만 사용할 수 있는 기능입니다." in page.inner_text("body")
