"""Several views per inspection: uploading labelled photos, reading them back, refusing bad input whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.config import Settings
from app.db.tables import Inspection, InspectionView
from tests.conftest import png_bytes


def _stored_files(settings: Settings) -> list[Path]:
    root = settings.local_storage_path / "inspections"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _rows(client: TestClient) -> tuple[int, int]:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        return (
            session.scalar(select(func.count()).select_from(Inspection)) or 0,
            session.scalar(select(func.count()).select_from(InspectionView)) or 0,
        )


def _photos(*colors: tuple[int, int, int]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"v{i}.png", png_bytes((80 + i, 60), c), "image/png")) for i, c in enumerate(colors)]


def test_several_views_are_stored_and_served_each(
    client: TestClient, worker_headers: dict[str, str], settings: Settings
) -> None:
    photos = _photos((200, 10, 10), (10, 200, 10), (10, 10, 200))
    response = client.post(
        "/api/v1/inspections",
        headers=worker_headers,
        files=photos,
        data={"views": ["top", "Side", "ct"]},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert [v["view"] for v in body["views"]] == ["top", "side", "ct"]
    # the first view is the inspection's own photo: single-view readers keep working
    assert (body["width"], body["original_name"]) == (80, "v0.png")
    assert client.get(body["image_url"], headers=worker_headers).content == photos[0][1][1]
    for view, (_, (_, data, _)) in zip(body["views"], photos, strict=True):
        served = client.get(view["image_url"], headers=worker_headers)
        assert served.status_code == 200
        assert served.content == data
        assert view["anomaly"] is None
        assert view["bank"] is None
    assert len(_stored_files(settings)) == 3
    missing = client.get(f"/api/v1/inspections/{body['id']}/views/back/image", headers=worker_headers)
    assert missing.status_code == 404
    assert "back" in missing.json()["detail"]


def test_one_comma_separated_views_field_is_accepted(
    client: TestClient, worker_headers: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/inspections",
        headers=worker_headers,
        files=_photos((1, 2, 3), (4, 5, 6)),
        data={"views": "top, side"},
    )
    assert response.status_code == 201, response.text
    assert [v["view"] for v in response.json()["views"]] == ["top", "side"]


def test_a_single_photo_without_a_view_is_unchanged(
    client: TestClient, worker_headers: dict[str, str], settings: Settings
) -> None:
    response = client.post(
        "/api/v1/inspections", headers=worker_headers, files={"file": ("a.png", png_bytes(), "image/png")}
    )
    assert response.status_code == 201, response.text
    assert response.json()["views"] == []
    assert _rows(client) == (1, 0)
    assert len(_stored_files(settings)) == 1


@pytest.mark.parametrize(
    ("files", "views", "status", "fragment"),
    [
        (2, ["top"], 422, "사진 수(2)"),
        (2, [], 422, "사진 수(2)"),
        (1, ["top", "side"], 422, "시점 이름 수(2)"),
        (2, ["top", "top"], 422, "'top'"),
        (2, ["top", "옆면"], 422, "'옆면'"),
        (2, ["top", "side view"], 422, "'side view'"),
        (4, ["a", "b", "c", "d"], 422, "최대 3장"),
    ],
)
def test_bad_views_are_refused_in_korean_and_store_nothing(
    tmp_path: Path,
    files: int,
    views: list[str],
    status: int,
    fragment: str,
) -> None:
    from app.cli import run_migrations
    from app.main import create_app
    from tests.conftest import WORKER_PASSWORD, bearer, make_settings, seed_users

    settings = make_settings(tmp_path, max_inspection_views=3)
    run_migrations(settings)
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        headers = bearer(client, "worker1", WORKER_PASSWORD)
        colors = [(i * 40, 10, 10) for i in range(files)]
        response = client.post(
            "/api/v1/inspections", headers=headers, files=_photos(*colors), data={"views": views}
        )
        assert response.status_code == status, response.text
        assert fragment in response.json()["detail"]
        # /analyze refuses the same way before anything runs
        again = client.post("/api/v1/analyze", headers=headers, files=_photos(*colors), data={"views": views})
        assert again.status_code == status, again.text
        assert _rows(client) == (0, 0)
    assert _stored_files(settings) == []


def test_a_bad_photo_among_the_views_stores_none_of_them(
    client: TestClient, worker_headers: dict[str, str], settings: Settings
) -> None:
    files = [*_photos((9, 9, 9)), ("files", ("broken.png", png_bytes()[:-40], "image/png"))]
    response = client.post(
        "/api/v1/inspections",
        headers={**worker_headers, "Accept-Language": "en"},
        files=files,
        data={"views": ["top", "side"]},
    )
    assert response.status_code == 400, response.text
    assert _rows(client) == (0, 0)
    assert _stored_files(settings) == []


def test_a_product_with_listed_views_refuses_other_labels(
    client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], settings: Settings
) -> None:
    created = client.post(
        "/api/v1/products",
        headers=admin_headers,
        json={"code": "cell", "name": "배터리 셀", "views": ["top", "CT", "top"], "view_rule": "majority"},
    )
    assert created.status_code == 201, created.text
    product = created.json()
    assert (product["views"], product["view_rule"]) == (["top", "ct"], "majority")
    refused = client.post(
        "/api/v1/inspections",
        headers={**worker_headers, "Accept-Language": "en"},
        files=_photos((1, 1, 1), (2, 2, 2)),
        data={"views": ["top", "side"], "product_id": str(product["id"])},
    )
    assert refused.status_code == 422
    assert refused.json()["detail"] == "This product has no view 'side'. Its views: top, ct."
    assert _rows(client) == (0, 0)
    assert _stored_files(settings) == []
    accepted = client.post(
        "/api/v1/inspections",
        headers=worker_headers,
        files=_photos((1, 1, 1), (2, 2, 2)),
        data={"views": ["ct", "top"], "product_id": str(product["id"])},
    )
    assert accepted.status_code == 201, accepted.text
    changed = client.patch(
        f"/api/v1/products/{product['id']}", headers=admin_headers, json={"view_rule": "sometimes"}
    )
    assert changed.status_code == 422
    bad_label = client.patch(
        f"/api/v1/products/{product['id']}", headers=admin_headers, json={"views": ["top", "side view"]}
    )
    assert bad_label.status_code == 422
