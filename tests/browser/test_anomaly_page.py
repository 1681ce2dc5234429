"""In a real browser: the anomaly step runs on entry, shows the verdict, re-checks on a new reference."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from app.cli import run_migrations
from app.core.config import Settings
from app.db.tables import User
from app.deployments import anomaly_model
from app.inspection import service as inspection_service
from app.main import create_app
from app.ml.patchcore import PatchCoreConfig
from tests.browser.conftest import _free_port, screenshot
from tests.conftest import make_settings
from tests.factories import demo_dataset, make_users, offline_services, register_demo

pytestmark = pytest.mark.browser


@pytest.fixture
def anomaly_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, int], int]]:
    """Demo data, a metal_plate model built before start (loaded at startup), one uploaded defect photo."""
    settings: Settings = make_settings(tmp_path, load_models=True)
    run_migrations(settings)
    root = settings.data_path / "demo" / "seed-0"
    manifest = demo_dataset(root, defects_per_type=2)
    with offline_services(settings) as services:
        with services.session_factory() as session:
            make_users(session, settings, usernames=["worker1"], password="pass-12345")
            products = register_demo(session, services.storage, settings, root)
        anomaly_model.build_product(
            services, products["metal_plate"], config=PatchCoreConfig(image_size=128, coreset_ratio=0.1)
        )
        plate = next(p for p in manifest.products if p.code == "metal_plate")
        defect = next(d for d in plate.defect_images if d.holdout)
        with services.session_factory() as session:
            worker = session.scalar(select(User).where(User.username == "worker1"))
            assert worker is not None
            inspection = inspection_service.create_inspection(
                session,
                storage=services.storage,
                settings=settings,
                data=(root / defect.path).read_bytes(),
                file_name="part.png",
                product_id=None,
                user=worker,
            )
            inspection_id = inspection.id

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
    yield f"http://127.0.0.1:{port}", products, inspection_id
    server.should_exit = True
    thread.join(10)


def test_worker_checks_a_photo_and_picks_another_reference(
    anomaly_server: tuple[str, dict[str, int], int], browser_page: Any
) -> None:
    base, products, inspection_id = anomaly_server
    page = browser_page
    page.goto(f"{base}/inspect/{inspection_id}/anomaly?product_id={products['metal_plate']}")
    assert "/login" in page.url
    page.fill("input[name=username]", "worker1")
    page.fill("input[name=password]", "pass-12345")
    page.click("button[type=submit]")
    page.wait_for_url(f"**/inspect/{inspection_id}/anomaly**")

    page.wait_for_selector("#anomaly-result:not([hidden])", timeout=60_000)
    badge = page.inner_text("#anomaly-badge")
    assert badge in ("정상", "이상")
    page.wait_for_function(
        "document.getElementById('anomaly-picture').complete"
        " && document.getElementById('anomaly-picture').naturalWidth > 0"
    )
    assert page.evaluate("document.getElementById('anomaly-bar').style.width") != ""
    assert page.locator("#anomaly-regions li").count() >= 1
    assert page.locator(".thumb.selected").count() == 1  # the reference used is marked
    screenshot(page, "anomaly_page")

    # another reference image: the check runs again against it
    other = page.locator(".thumb:not(.selected)").first
    other_id = other.get_attribute("data-reference-id")
    other.click()
    page.wait_for_selector(f'.thumb.selected[data-reference-id="{other_id}"]', timeout=60_000)

    # the overlay view switches the big picture
    page.click("button[data-view=overlay_url]")
    assert "overlay.png" in page.get_attribute("#anomaly-picture", "src")

    # the guidance step is offered (only "extractive" when /api/v1/generators is not there)
    link = page.locator("#generator-buttons a").first
    assert f"/inspect/{inspection_id}/guidance?generator=" in (link.get_attribute("href") or "")

    # a product without a memory bank says which deployment to run, no link for a worker
    page.goto(f"{base}/inspect/{inspection_id}/anomaly?product_id={products['fabric']}")
    page.wait_for_selector("#anomaly-error:not([hidden])", timeout=30_000)
    assert "anomaly_model" in page.inner_text("#anomaly-error")
    assert page.locator("#anomaly-error a").count() == 0
    assert page.locator("#anomaly-result").is_hidden()
