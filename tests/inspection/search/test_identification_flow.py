"""Region-aware identification through the application: jobs, the search step's verdict, the admin screen.

One demo installation (real EfficientNet-Lite0, real PatchCore built by the anomaly_model job, SQLite,
local storage): metal_plate gets an anomaly model, fabric does not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db.tables import Artifact, DefectType, Inspection
from app.ml.search_runtime import SEARCH
from tests.conftest import make_settings
from tests.deployments.test_pages import login_page
from tests.factories import ADMIN_PASSWORD, DemoEnv, demo_env
from tests.inspection.search.conftest import deploy, inspect


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoEnv]:
    settings = make_settings(tmp_path_factory.mktemp("identification"))
    builds = [("anomaly_model", "metal_plate"), ("search_index", None)]
    with demo_env(settings, defects_per_type=4, builds=builds) as built:
        yield built


def _holdout(env: DemoEnv) -> list[tuple[str, str, Path]]:
    """(product code, defect code, file) of every held-out defect photo."""
    return [
        (p.code, d.defect_code, env.root / d.path)
        for p in env.manifest.products
        for d in p.defect_images
        if d.holdout
    ]


def _search(env: DemoEnv, path: Path, product_id: int) -> dict:
    inspection_id = inspect(env.client, env.worker, path.read_bytes(), product_id)
    response = env.client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=env.worker)
    assert response.status_code == 200, response.text
    return {"id": inspection_id, **response.json()}


def test_the_verdict_of_a_product_with_an_anomaly_model_comes_from_the_defect_region(env: DemoEnv) -> None:
    pid = env.products["metal_plate"]
    photos = [(code, path) for product, code, path in _holdout(env) if product == "metal_plate"]
    right = 0
    for code, path in photos:
        result = _search(env, path, pid)
        verdict = result["verdict"]
        assert verdict["method"] == "region"
        assert 0.0 <= verdict["confidence"] <= 1.0
        right += verdict["defect_type_id"] == env.types[(pid, code)]
        with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
            stored = session.get(Inspection, result["id"])
            assert stored is not None
            assert stored.search_result["verdict"]["confidence"] == verdict["confidence"]
            assert stored.verdict_defect_type_id == verdict["defect_type_id"]
    assert right >= len(photos) - 1, f"{right}/{len(photos)} held-out photos named right"


def test_a_product_without_normal_images_model_falls_back_to_the_whole_image(env: DemoEnv) -> None:
    pid = env.products["fabric"]
    path = next(p for product, _c, p in _holdout(env) if product == "fabric")
    verdict = _search(env, path, pid)["verdict"]
    assert verdict["method"] == "whole"
    assert verdict["confidence"] is not None


def test_leave_one_out_accuracy_is_stored_with_the_artifact_and_shown_to_the_admin(env: DemoEnv) -> None:
    pid = env.products["metal_plate"]
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        artifact = session.scalars(select(Artifact).where(Artifact.kind == "search_index")).one()
        report = artifact.meta["identification"][str(pid)]
        names = {d.name for d in session.scalars(select(DefectType).where(DefectType.product_id == pid))}
    assert report["method"] == "region"
    assert report["images"] == sum(sum(row.values()) for row in report["confusion"].values())
    assert set(report["confusion"]) == names
    assert 0.0 <= report["top1"] <= 1.0
    login_page(env.client, "admin1", ADMIN_PASSWORD)
    page = env.client.get("/admin/deploy/search")
    assert page.status_code == 200
    row = page.text.split('data-product="metal_plate"', 1)[1].split("</tr>\n", 1)[0]
    assert f"{report['top1'] * 100:.1f}%" in row
    assert "결함 영역 + 전체 이미지" in row
    assert "data-ident-confusion" in row


def test_a_registered_defect_counts_at_once_for_search_and_in_the_figures_after_the_next_build(
    env: DemoEnv,
) -> None:
    pid = env.products["metal_plate"]
    engine = env.client.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
    before = engine.identification[pid].count
    code, path = next((c, p) for product, c, p in _holdout(env) if product == "metal_plate")
    created = env.client.post(
        f"/api/v1/products/{pid}/images",
        data={"kind": "defect", "defect_type_id": str(env.types[(pid, code)])},
        files=[("files", ("extra.png", path.read_bytes(), "image/png"))],
        headers=env.admin,
    )
    assert created.status_code == 201, created.text
    found = engine.identification[pid]
    assert found.count == before + 1
    assert found.report["images"] == before
    # the same photo now finds itself: identification answers with its type at once
    verdict = _search(env, path, pid)["verdict"]
    assert verdict["defect_type_id"] == env.types[(pid, code)]
    job = deploy(env.client, env.admin, product_id=pid, timeout=600)
    assert job["status"] == "succeeded", job
    rebuilt = env.client.app.state.models.get(SEARCH).identification[pid]  # type: ignore[attr-defined]
    assert rebuilt.report["images"] == before + 1
    saved = json.dumps(job["result"]["identification"][str(pid)])
    assert '"images": ' + str(before + 1) in saved
