"""The search step over the API, with the real packaged embedder and real galleries."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.deployments.jobs import artifact_states
from app.inspection.search.service import nearest_normal_images
from app.main import create_app
from app.ml.search_runtime import SEARCH, SearchEngine
from tests.conftest import ADMIN_PASSWORD, bearer
from tests.inspection.search.conftest import (
    CountingEmbedder,
    clean_photo,
    deploy,
    hole_photo,
    inspect,
    make_catalog,
    png,
    scratch_photo,
    upload,
)


def test_search_without_an_index_says_which_deployment_to_run(
    app_client: TestClient, admin: dict[str, str], worker: dict[str, str]
) -> None:
    make_catalog(app_client, admin)
    inspection_id = inspect(app_client, worker, png(hole_photo(50)))
    response = app_client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=worker)
    assert response.status_code == 409
    assert "유사도 검색 인덱스" in response.json()["detail"]
    assert (
        app_client.get(f"/api/v1/inspections/{inspection_id}", headers=worker).json()["status"] == "uploaded"
    )


def test_search_finds_the_defect_type_and_stores_the_result(
    app_client: TestClient, admin: dict[str, str], worker: dict[str, str]
) -> None:
    catalog = make_catalog(app_client, admin)
    job = deploy(app_client, admin)
    assert job["status"] == "succeeded", job
    assert job["result"]["defect_images"] == 8
    assert job["result"]["normal_images"] == 3

    for photo, expected in ((hole_photo(50), catalog.hole_id), (scratch_photo(60), catalog.scratch_id)):
        inspection_id = inspect(app_client, worker, png(photo))
        response = app_client.post(
            f"/api/v1/inspections/{inspection_id}/search", json={"top_k": 3}, headers=worker
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["matches"]) == 3
        scores = [m["score"] for m in body["matches"]]
        assert scores == sorted(scores, reverse=True)
        top = body["matches"][0]
        assert top["defect_type"]["id"] == expected
        assert top["product"] == {"id": catalog.product_id, "code": "plate", "name": "plate 판재"}
        assert top["image_url"] == f"/api/v1/images/{top['image_id']}/file"
        verdict = body["verdict"]
        assert verdict["product_id"] == catalog.product_id
        assert verdict["defect_type_id"] == expected
        assert verdict["is_unknown"] is False
        assert 0 < verdict["margin"] <= verdict["score"] <= 1.0001
        stored = app_client.get(f"/api/v1/inspections/{inspection_id}", headers=worker).json()
        assert stored["status"] == "searched"
        assert stored["verdict_defect_type_id"] == expected
        assert stored["is_unknown"] is False
        assert stored["timings_ms"]["search"] > 0
        assert stored["search"]["matches"][0]["image_id"] == top["image_id"]
        # the match's image is really served
        assert app_client.get(top["image_url"], headers=worker).status_code == 200


def test_worker_chooses_another_match_as_top1(
    app_client: TestClient, admin: dict[str, str], worker: dict[str, str]
) -> None:
    make_catalog(app_client, admin)
    deploy(app_client, admin)
    inspection_id = inspect(app_client, worker, png(hole_photo(51)))
    matches = app_client.post(
        f"/api/v1/inspections/{inspection_id}/search", json={"top_k": 5}, headers=worker
    ).json()["matches"]
    second = matches[1]["image_id"]
    chosen = app_client.post(
        f"/api/v1/inspections/{inspection_id}/search/choose", json={"image_id": second}, headers=worker
    )
    assert chosen.status_code == 200
    assert chosen.json()["chosen_image_id"] == second
    assert (
        app_client.get(f"/api/v1/inspections/{inspection_id}", headers=worker).json()["chosen_image_id"]
        == second
    )
    not_a_match = app_client.post(
        f"/api/v1/inspections/{inspection_id}/search/choose", json={"image_id": 999999}, headers=worker
    )
    assert not_a_match.status_code == 404
    reset = app_client.post(
        f"/api/v1/inspections/{inspection_id}/search/choose", json={"image_id": None}, headers=worker
    )
    assert reset.json()["chosen_image_id"] is None


def test_bad_search_input_gets_clear_errors(
    app_client: TestClient, admin: dict[str, str], worker: dict[str, str]
) -> None:
    make_catalog(app_client, admin)
    deploy(app_client, admin)
    inspection_id = inspect(app_client, worker, png(hole_photo(52)))
    url = f"/api/v1/inspections/{inspection_id}/search"
    assert app_client.post(url, json={"top_k": 0}, headers=worker).status_code == 422
    assert app_client.post(url, json={"top_k": 21}, headers=worker).status_code == 422
    assert (
        app_client.post(url, json={"top_k": 20}, headers=worker).status_code == 200
    )  # fewer images than k: fine
    assert app_client.post("/api/v1/inspections/999999/search", json={}, headers=worker).status_code == 404
    assert app_client.post(url, json={"product_id": 999999}, headers=worker).status_code == 404
    empty = app_client.post(
        "/api/v1/products", json={"code": "empty", "name": "빈 제품", "description": ""}, headers=admin
    ).json()
    no_images = app_client.post(url, json={"product_id": empty["id"]}, headers=worker)
    assert no_images.status_code == 409
    assert "빈 제품" in no_images.json()["detail"]
    fresh = inspect(app_client, worker, png(hole_photo(53)))
    not_run = app_client.post(
        f"/api/v1/inspections/{fresh}/search/choose", json={"image_id": 1}, headers=worker
    )
    assert not_run.status_code == 409


def test_only_normal_images_means_no_defect_to_search(
    app_client: TestClient, admin: dict[str, str], worker: dict[str, str]
) -> None:
    product = app_client.post(
        "/api/v1/products", json={"code": "plain", "name": "무지 판재", "description": ""}, headers=admin
    ).json()
    upload(app_client, admin, product["id"], "normal", [png(clean_photo(1)), png(clean_photo(2))])
    assert deploy(app_client, admin)["status"] == "succeeded"
    inspection_id = inspect(app_client, worker, png(hole_photo(54)))
    response = app_client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=worker)
    assert response.status_code == 409
    assert "불량 이미지" in response.json()["detail"]


def test_register_makes_the_photo_searchable_at_once_and_delete_removes_it(
    app_client: TestClient, admin: dict[str, str], worker: dict[str, str], embedder: CountingEmbedder
) -> None:
    catalog = make_catalog(app_client, admin)
    deploy(app_client, admin)
    photo = png(scratch_photo(70))
    inspection_id = inspect(app_client, worker, photo)
    preview = app_client.get(
        f"/api/v1/inspections/{inspection_id}/register/preview",
        params={"product_id": catalog.product_id, "defect_type_id": catalog.scratch_id},
        headers=worker,
    )
    assert preview.json() == {"file_name": "plate_scratch_005.png"}
    before = embedder.images_embedded
    registered = app_client.post(
        f"/api/v1/inspections/{inspection_id}/register",
        json={"product_id": catalog.product_id, "defect_type_id": catalog.scratch_id},
        headers=worker,
    )
    assert registered.status_code == 201, registered.text
    body = registered.json()
    assert body["file_name"] == "plate_scratch_005.png"
    assert body["is_searchable"] is True
    assert embedder.images_embedded - before == 1  # one embedding, never a rebuild
    image = app_client.get(f"/api/v1/images/{body['image_id']}", headers=worker).json()
    assert image["file_name"] == "plate_scratch_005.png"
    again = app_client.post(
        f"/api/v1/inspections/{inspection_id}/register",
        json={"product_id": catalog.product_id, "defect_type_id": catalog.scratch_id},
        headers=worker,
    )
    assert again.status_code == 409

    same = inspect(app_client, worker, photo)
    top = app_client.post(f"/api/v1/inspections/{same}/search", json={}, headers=worker).json()["matches"][0]
    assert top["image_id"] == body["image_id"]
    assert top["score"] > 0.999

    assert app_client.delete(f"/api/v1/images/{body['image_id']}", headers=admin).status_code == 204
    after = app_client.post(f"/api/v1/inspections/{same}/search", json={"top_k": 20}, headers=worker).json()
    assert body["image_id"] not in [m["image_id"] for m in after["matches"]]
    # the admin's uploads and deletes are visible at once too, and the index stays "current"
    states = {s.product_id: s for s in _states(app_client)}
    assert states[catalog.product_id].state == "current"


def test_register_bad_input(app_client: TestClient, admin: dict[str, str], worker: dict[str, str]) -> None:
    catalog = make_catalog(app_client, admin)
    other = make_catalog(app_client, admin, code="other", n=1)
    inspection_id = inspect(app_client, worker, png(hole_photo(55)))
    url = f"/api/v1/inspections/{inspection_id}/register"
    wrong_pair = app_client.post(
        url, json={"product_id": catalog.product_id, "defect_type_id": other.hole_id}, headers=worker
    )
    assert wrong_pair.status_code == 400
    assert (
        app_client.post(
            url, json={"product_id": 999999, "defect_type_id": catalog.hole_id}, headers=worker
        ).status_code
        == 404
    )
    assert (
        app_client.post(
            url, json={"product_id": catalog.product_id, "defect_type_id": 999999}, headers=worker
        ).status_code
        == 404
    )
    assert app_client.post(url, json={"product_id": catalog.product_id}, headers=worker).status_code == 422
    assert (
        app_client.post(
            "/api/v1/inspections/999999/register",
            json={"product_id": catalog.product_id, "defect_type_id": catalog.hole_id},
            headers=worker,
        ).status_code
        == 404
    )
    # nothing was registered by the failed attempts
    listed = app_client.get(f"/api/v1/products/{catalog.product_id}/images?kind=defect", headers=admin).json()
    assert listed["total"] == 8
    # without a built index the photo is still registered, just not searchable yet
    ok = app_client.post(
        url, json={"product_id": catalog.product_id, "defect_type_id": catalog.hole_id}, headers=worker
    )
    assert ok.status_code == 201
    assert ok.json()["is_searchable"] is False


def _states(client: TestClient) -> list:
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.session_factory() as session:
        return [s for s in artifact_states(session, services) if s.kind == "search_index"]


def test_restart_loads_the_gallery_without_embedding(
    app_client: TestClient, admin: dict[str, str], search_settings: Settings, embedder: CountingEmbedder
) -> None:
    catalog = make_catalog(app_client, admin)
    deploy(app_client, admin)
    # an incremental add after the build is saved too, and survives the restart
    upload(app_client, admin, catalog.product_id, "defect", [png(hole_photo(64))], catalog.hole_id)
    embedded = embedder.images_embedded
    with TestClient(create_app(search_settings)) as restarted:
        assert embedder.images_embedded == embedded
        engine = restarted.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
        assert isinstance(engine, SearchEngine)
        assert engine.is_built
        assert engine.gallery("defect").count == 9  # type: ignore[union-attr]
        ready = restarted.get("/readyz").json()
        assert (
            "efficientnet-lite0: 9 defect / 3 normal images" in ready["checks"]["models"]["engines"]["search"]
        )
        headers = bearer(restarted, "admin1", ADMIN_PASSWORD)
        inspection_id = inspect(restarted, headers, png(hole_photo(56)))
        result = restarted.post(
            f"/api/v1/inspections/{inspection_id}/search", json={}, headers=headers
        ).json()
        assert result["verdict"]["defect_type_id"] == catalog.hole_id
        assert embedder.images_embedded == embedded + 1  # only the query


def test_preprocessing_change_marks_the_index_stale_until_rebuilt(
    app_client: TestClient, admin: dict[str, str]
) -> None:
    catalog = make_catalog(app_client, admin)
    assert _states(app_client)[0].state == "missing"
    deploy(app_client, admin)
    assert _states(app_client)[0].state == "current"
    changed = app_client.put(
        f"/api/v1/products/{catalog.product_id}/preprocessing",
        json={"grayscale": False, "contrast": True, "equalize": False, "smooth": True, "normalize": False},
        headers=admin,
    )
    assert changed.status_code == 200
    state = _states(app_client)[0]
    assert state.state == "stale"
    assert "search.stale.preprocessing_changed" in state.reasons
    # until the rebuild, queries are preprocessed like the gallery was, and the worker is warned
    inspection_id = inspect(app_client, admin, png(hole_photo(61)))
    result = app_client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=admin).json()
    assert result["is_stale"] is True
    assert result["verdict"]["defect_type_id"] == catalog.hole_id
    assert app_client.get("/api/v1/search/status", headers=admin).json()["state"] == "stale"
    job = deploy(app_client, admin, product_id=catalog.product_id)
    assert job["status"] == "succeeded"
    assert _states(app_client)[0].state == "current"
    assert app_client.get("/api/v1/search/status", headers=admin).json()["state"] == "current"


def test_product_rebuild_keeps_other_products_and_swaps_the_engine(
    app_client: TestClient, admin: dict[str, str], worker: dict[str, str]
) -> None:
    first = make_catalog(app_client, admin)
    second = make_catalog(app_client, admin, code="second", n=2)
    deploy(app_client, admin)
    before = app_client.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
    job = deploy(app_client, admin, product_id=second.product_id)
    assert job["result"]["products"] == 1
    after = app_client.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
    assert after is not before
    assert after.gallery("defect").count_by_product() == {first.product_id: 8, second.product_id: 4}
    # the old engine object still answers (a search in flight keeps it)
    assert before.gallery("defect").count == 12
    inspection_id = inspect(app_client, worker, png(hole_photo(57)), product_id=first.product_id)
    result = app_client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=worker).json()
    assert {m["product"]["id"] for m in result["matches"]} == {first.product_id}
    # a deactivated product is never an answer, even before the next rebuild
    assert app_client.delete(f"/api/v1/products/{first.product_id}", headers=admin).status_code == 200
    anywhere = inspect(app_client, worker, png(hole_photo(57)))
    result = app_client.post(
        f"/api/v1/inspections/{anywhere}/search", json={"top_k": 20}, headers=worker
    ).json()
    assert {m["product"]["id"] for m in result["matches"]} == {second.product_id}


def test_nearest_normal_images_uses_the_normal_gallery(app_client: TestClient, admin: dict[str, str]) -> None:
    catalog = make_catalog(app_client, admin)
    services = app_client.app.state.services  # type: ignore[attr-defined]
    with services.session_factory() as session:
        assert (
            nearest_normal_images(
                session, services=services, image=clean_photo(21), product_id=catalog.product_id
            )
            == []
        )
    deploy(app_client, admin)
    with services.session_factory() as session:
        nearest = nearest_normal_images(
            session, services=services, image=clean_photo(21), product_id=catalog.product_id, k=3
        )
    assert nearest[0] == catalog.images["normal"][1]
    assert sorted(nearest) == sorted(catalog.images["normal"])


def test_admin_thresholds_turn_a_weak_match_into_unknown(
    app_client: TestClient, admin: dict[str, str], worker: dict[str, str]
) -> None:
    catalog = make_catalog(app_client, admin)
    deploy(app_client, admin)
    inspection_id = inspect(app_client, worker, png(clean_photo(30)))  # a good part: no known defect
    calibrated = app_client.post(
        f"/api/v1/inspections/{inspection_id}/search", json={}, headers=worker
    ).json()
    assert calibrated["verdict"]["threshold_source"] == "default"  # 8 images: too few to calibrate
    strict = app_client.put("/api/v1/settings/models", json={"search_min_score": 0.999}, headers=admin)
    assert strict.status_code == 200
    body = app_client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=worker).json()
    verdict = body["verdict"]
    assert verdict["is_unknown"] is True
    assert verdict["threshold_source"] == "settings"
    assert verdict["min_score"] == 0.999
    assert verdict["product_id"] == catalog.product_id  # the closest guess is still shown
    stored = app_client.get(f"/api/v1/inspections/{inspection_id}", headers=worker).json()
    assert stored["is_unknown"] is True
    app_client.post("/api/v1/auth/login", json={"username": "worker1", "password": "worker-pass-123"})
    page = app_client.get(f"/inspect/{inspection_id}/search").text
    assert "알 수 없음 (unknown)" in page


def test_thresholds_are_calibrated_per_product_and_shown_to_the_admin(
    app_client: TestClient, admin: dict[str, str], worker: dict[str, str]
) -> None:
    catalog = make_catalog(app_client, admin, n=5)  # 10 defect images: enough to calibrate
    job = deploy(app_client, admin)
    assert (
        "calibrated min_score="
        in app_client.get(f"/api/v1/deployments/{job['id']}", headers=admin).json()["log"]
    )
    state = _states(app_client)[0]
    assert 0.0 < state.detail["min_score"] <= 1.0
    assert state.detail["min_margin"] >= 0.0
    inspection_id = inspect(app_client, worker, png(hole_photo(62)), product_id=catalog.product_id)
    verdict = app_client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=worker).json()[
        "verdict"
    ]
    assert verdict["threshold_source"] == "calibrated"
    assert verdict["min_score"] == pytest.approx(state.detail["min_score"], abs=1e-4)
