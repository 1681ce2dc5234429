"""In a real browser, on real engines: a worker walks a defect photo, a defect-free photo and a defect of a
type nobody registered images for through all four steps; every page shows one outcome (the defect, "정상",
"알 수 없음"), and the history, statistics and dashboard count exactly what the worker saw.

Demo data (seeded, 128 px): metal_plate only, whose "dent" images are left out of the catalog, so a dent
photo is anomalous but not identifiable; search index and PatchCore model built before the server starts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.cli import run_migrations
from app.deployments import anomaly_model
from app.deployments.jobs import build_now
from app.main import create_app
from app.ml.patchcore import PatchCoreConfig
from tests.browser.conftest import _free_port, screenshot
from tests.conftest import make_settings
from tests.factories import demo_dataset, make_users, offline_services, register_demo

pytestmark = pytest.mark.browser

PASSWORD = "pass-12345"
HIDDEN = "dent"  # no catalog images: its photos are anomalies nobody can identify
DEFECT = "crack"
STEP_MS = 60_000


@dataclass
class Site:
    base: str
    photos: dict[str, bytes]  # "defect" | "normal" | "unknown" -> PNG bytes
    names: dict[str, str]  # defect code -> Korean name


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings = make_settings(tmp_path, load_models=True)
    run_migrations(settings)
    root = settings.data_path / "demo"
    demo_dataset(root, defects_per_type=4)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    plate = next(p for p in manifest["products"] if p["code"] == "metal_plate")
    plate["defect_images"] = [
        d for d in plate["defect_images"] if d["defect_code"] != HIDDEN or d.get("holdout")
    ]
    plate.pop("manual_pdf", None)  # guidance without a manual: the outcome is what is checked here
    manifest["products"] = [plate]
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    with offline_services(settings) as services:
        with services.session_factory() as session:
            make_users(session, settings, password=PASSWORD)
            product_id = register_demo(session, services.storage, settings, root)["metal_plate"]
        assert build_now(services, ["search_index"]) == {"search_index": "succeeded"}
        anomaly_model.build_product(
            services, product_id, config=PatchCoreConfig(image_size=128, coreset_ratio=0.1)
        )

    def holdout(code: str) -> bytes:
        pool = plate["normal_images"] if code == "normal" else plate["defect_images"]
        entry = next(e for e in pool if e.get("holdout") and (code == "normal" or e["defect_code"] == code))
        return (root / entry["path"]).read_bytes()

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    yield Site(
        base=f"http://127.0.0.1:{port}",
        photos={"defect": holdout(DEFECT), "normal": holdout("normal"), "unknown": holdout(HIDDEN)},
        names={d["code"]: d["name"] for d in plate["defect_types"]},
    )
    server.should_exit = True
    thread.join(10)


def _login(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "/login" not in page.url


def _inspect(page: Any, base: str, photo: bytes, name: str) -> tuple[int, dict[str, str]]:
    """Upload, then search, anomaly and guidance as the pages run them; returns the id and what was shown."""
    seen: dict[str, str] = {}
    page.goto(f"{base}/")
    page.set_input_files(
        "#photo-input", files=[{"name": f"{name}.png", "mimeType": "image/png", "buffer": photo}]
    )
    page.wait_for_selector("#upload-submit:not([disabled])")
    page.click("#upload-submit")
    page.wait_for_url("**/inspect/*/search", timeout=STEP_MS)
    inspection_id = int(page.url.rstrip("/").split("/")[-2])
    page.wait_for_selector("#verdict", timeout=STEP_MS)

    page.click("#next-step")
    page.wait_for_url(f"**/inspect/{inspection_id}/anomaly**")
    # the first visit runs the check once, then the page shows the stored record
    page.wait_for_selector("#anomaly-stored", state="attached", timeout=STEP_MS)
    page.wait_for_selector("#anomaly-result:not([hidden])")
    seen["anomaly"] = page.inner_text("#outcome .outcome-main").strip()
    seen["offers_register"] = str(page.locator("#outcome [data-testid=outcome-register]").count())
    seen["badge"] = page.inner_text("#anomaly-badge").strip()
    screenshot(page, f"outcome-{name}-anomaly")

    page.goto(f"{base}/inspect/{inspection_id}/search")
    seen["search"] = page.inner_text("#outcome .outcome-main").strip()
    seen["verdict_label"] = page.inner_text("#verdict .verdict-label").strip()
    screenshot(page, f"outcome-{name}-search")

    page.goto(f"{base}/inspect/{inspection_id}/guidance?generator=extractive")
    page.wait_for_selector("#gd-answer[data-state=done]", timeout=STEP_MS)
    seen["guidance"] = page.inner_text("#outcome .outcome-main").strip()
    seen["status"] = page.inner_text("[data-section=status]").strip()
    page.fill("#gd-action", f"{name} 처리")
    page.check(".gd-score input[value='4']")
    page.click(".gd-save")
    page.wait_for_selector("[data-testid=feedback-saved]", timeout=STEP_MS)
    screenshot(page, f"outcome-{name}-guidance")
    return inspection_id, seen


def test_three_photos_one_outcome_each_and_the_history_counts_what_the_worker_saw(
    site: Site, browser_page: Any
) -> None:
    page = browser_page
    page.set_default_timeout(30_000)
    base = site.base
    _login(page, base, "worker1")
    crack, scratch = site.names[DEFECT], site.names["scratch"]

    defect_id, defect = _inspect(page, base, site.photos["defect"], "defect")
    assert defect["badge"] == "이상"
    assert defect["anomaly"] == defect["search"] == defect["guidance"] == crack
    assert crack in defect["status"]

    normal_id, normal = _inspect(page, base, site.photos["normal"], "normal")
    assert normal["badge"] == "정상"
    assert normal["anomaly"] == normal["search"] == normal["guidance"] == "정상"
    assert normal["verdict_label"] == "가장 유사한 과거 불량"  # the similar defects are no verdict
    assert normal["status"].startswith("정상 판정")
    assert scratch not in normal["status"]

    unknown_id, unknown = _inspect(page, base, site.photos["unknown"], "unknown")
    assert unknown["badge"] == "이상"
    assert unknown["anomaly"] == unknown["search"] == unknown["guidance"]
    assert unknown["anomaly"] == "알 수 없음 (등록되지 않은 불량일 수 있음)"
    assert unknown["status"].startswith("알 수 없음")
    assert unknown["offers_register"] == "1"  # an unknown offers registration as a defect type
    assert normal["offers_register"] == defect["offers_register"] == "0"

    page.goto(f"{base}/history")
    cells = {
        int(row.get_attribute("data-inspection")): row.locator("[data-outcome]").get_attribute("data-outcome")
        for row in page.locator("tr[data-inspection]").all()
    }
    assert cells == {defect_id: "defect", normal_id: "normal", unknown_id: "unknown"}
    assert crack in page.inner_text(f"tr[data-inspection='{defect_id}']")
    screenshot(page, "outcome-history")
    page.goto(f"{base}/history/{unknown_id}")
    assert page.inner_text("#outcome .outcome-main") == "알 수 없음 (등록되지 않은 불량일 수 있음)"
    kinds = [row.get_attribute("data-event") for row in page.locator("tr[data-event]").all()]
    assert kinds == ["search", "anomaly", "guidance", "feedback"]
    screenshot(page, "outcome-history-detail")

    page.goto(f"{base}/history/stats")
    counts = {
        el.get_attribute("data-outcome-count"): el.locator("strong").inner_text()
        for el in page.locator("[data-outcome-count]").all()
    }
    assert counts == {"normal": "1", "defect": "1", "unknown": "1", "pending": "0"}
    per_type = page.inner_text("[data-chart=defect_types]")
    assert crack in per_type
    assert scratch not in per_type  # the normal photo's and the unknown's nearest defects are not counted
    assert page.locator("[data-chart=defect_types] svg text.chart-value").all_text_contents() == ["1"]

    # opening a finished inspection's pages changes nothing
    api = httpx.Client(base_url=base, timeout=30)
    token = api.post("/api/v1/auth/login", json={"username": "worker1", "password": PASSWORD}).json()
    api.headers["Authorization"] = f"Bearer {token['access_token']}"
    before = api.get(f"/api/v1/inspections/{defect_id}").json()
    events_before = api.get(f"/api/v1/inspections/{defect_id}/events").json()
    page.goto(f"{base}/inspect/{defect_id}/anomaly")
    page.wait_for_selector("#anomaly-result:not([hidden])")
    assert page.locator("[data-testid=locked]").count() == 1
    page.wait_for_load_state("networkidle")
    after = api.get(f"/api/v1/inspections/{defect_id}").json()
    assert (after["status"], after["anomaly"], after["updated_at"]) == (
        "completed",
        before["anomaly"],
        before["updated_at"],
    )
    assert api.get(f"/api/v1/inspections/{defect_id}/events").json() == events_before
    assert [e["kind"] for e in events_before] == ["search", "anomaly", "guidance", "feedback"]

    # the dashboard counts the same outcomes
    page.context.clear_cookies()
    _login(page, base, "admin1")
    page.goto(f"{base}/admin")
    for stat in ("outcome_normal", "outcome_defect", "outcome_unknown"):
        assert page.inner_text(f"[data-stat={stat}] .stat-value") == "1", stat
    screenshot(page, "outcome-dashboard")
