"""In a real browser: a worker uploads two labelled views, sees them checked side by side, finds them in the
history (real server, real PatchCore banks: the product's and one of the `side` view)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from app.auth import service as auth_service
from app.auth.schemas import UserCreate
from app.catalog import service as catalog_service
from app.cli import run_migrations
from app.core.config import Settings
from app.core.observability import Metrics
from app.core.services import Services
from app.core.storage import make_storage
from app.db.session import make_engine, make_session_factory
from app.db.tables import Product
from app.demo.generator import generate_demo_dataset
from app.demo.loader import register_dataset
from app.deployments import anomaly_model
from app.main import create_app
from app.ml.patchcore import PatchCoreConfig
from app.ml.registry import ModelRegistry
from tests.browser.conftest import _free_port, screenshot
from tests.conftest import make_settings

pytestmark = pytest.mark.browser


@pytest.fixture
def views_server(tmp_path: Path) -> Iterator[tuple[str, int, Path, Path]]:
    """metal_plate with its bank of (top) normals and a bank of `side` normals, built before start."""
    settings: Settings = make_settings(tmp_path, load_models=True)
    run_migrations(settings)
    root = settings.data_path / "demo" / "seed-0"
    manifest = generate_demo_dataset(root, seed=0, size=128, normals_per_product=8, defects_per_type=2)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    storage = make_storage(settings)
    plate = next(p for p in manifest.products if p.code == "metal_plate")
    fabric = next(p for p in manifest.products if p.code == "fabric")
    side_normals = [n for n in fabric.normal_images if not n.holdout]
    with factory() as session:
        auth_service.create_user(
            session,
            user_in=UserCreate(username="worker1", password="pass-12345", role="worker"),
            settings=settings,
            actor_id=None,
        )
        register_dataset(session, storage=storage, settings=settings, root=root)
        products = {p.code: p.id for p in session.scalars(select(Product))}
        catalog_service.upload_images(
            session,
            storage=storage,
            settings=settings,
            product_id=products["metal_plate"],
            kind="normal",
            defect_type_id=None,
            files=[(f"side_{i}.png", (root / n.path).read_bytes()) for i, n in enumerate(side_normals)],
            actor_id=None,
            view="side",
        )
    services = Services(settings, storage, ModelRegistry(settings.models_path), factory, Metrics())
    config = PatchCoreConfig(image_size=128, coreset_ratio=0.1)
    anomaly_model.build_product(services, products["metal_plate"], config=config)
    anomaly_model.build_product(services, products["metal_plate"], config=config, view="side")
    engine.dispose()
    defect = next(d for d in plate.defect_images if d.holdout)

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
    yield f"http://127.0.0.1:{port}", products["metal_plate"], root / defect.path, root / side_normals[0].path
    server.should_exit = True
    thread.join(10)


def test_worker_uploads_two_views_and_sees_them_side_by_side(
    views_server: tuple[str, int, Path, Path], browser_page: Any
) -> None:
    base, plate_id, top_photo, side_photo = views_server
    page = browser_page
    page.goto(f"{base}/")
    page.fill("input[name=username]", "worker1")
    page.fill("input[name=password]", "pass-12345")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")

    page.set_input_files("#photo-input", str(top_photo))
    page.click("#views-add summary")
    page.fill("#main-view", "top")
    page.set_input_files("#views-input", str(side_photo))
    page.wait_for_selector(".view-row")
    page.select_option("#product-select", str(plate_id))

    # the same label twice is refused with the server's reason, and nothing is created
    page.fill(".view-label-input", "top")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-error:not([hidden])")
    assert "두 번" in page.inner_text("#upload-error")

    page.fill(".view-label-input", "side")
    page.click("#upload-submit")
    page.wait_for_url("**/inspect/*/search**", timeout=30_000)
    inspection_id = int(page.url.split("/inspect/")[1].split("/")[0])
    # the search step shows both photos already
    assert page.locator("[data-testid=views] .view-card").count() == 2

    # the anomaly step checks both views on entry and shows them side by side, the deciding one marked
    page.goto(f"{base}/inspect/{inspection_id}/anomaly?product_id={plate_id}")
    page.wait_for_selector("[data-testid=views-combination]", timeout=90_000)
    cards = page.locator("[data-testid=views] .view-card")
    assert cards.count() == 2
    assert [cards.nth(i).get_attribute("data-view") for i in range(2)] == ["top", "side"]
    assert page.locator(".view-card.deciding").get_attribute("data-view") == "top"
    assert "결정한 시점: top" in page.inner_text("[data-testid=views-combination]")
    side_bank = page.locator('.view-card[data-view="side"] .view-bank')
    assert side_bank.get_attribute("data-bank") == "view"
    assert page.locator('.view-card[data-view="top"] .view-bank').get_attribute("data-bank") == "product"
    box_top = cards.nth(0).bounding_box()
    box_side = cards.nth(1).bounding_box()
    assert box_top is not None
    assert box_side is not None
    assert abs(box_top["y"] - box_side["y"]) < 2  # side by side, not stacked
    assert box_side["x"] > box_top["x"]
    page.wait_for_function(
        "Array.from(document.querySelectorAll('.view-card img')).every(i => i.complete && i.naturalWidth > 0)"
    )
    screenshot(page, "views_anomaly_page")

    # the history lists the views, and the record shows them again
    page.goto(f"{base}/history")
    row_views = page.locator("[data-testid=view-list]").first.inner_text()
    assert "top" in row_views
    assert "side" in row_views
    page.goto(f"{base}/history/{inspection_id}")
    assert page.locator("[data-testid=views] .view-card").count() == 2
    screenshot(page, "views_history_detail")
