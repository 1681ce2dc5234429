"""Admin screens for several views per inspection: the product's rule and view labels, an image's view."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import png_bytes
from tests.pages import login_page, page_alert, post_form


def test_admin_sets_the_rule_and_views_and_labels_normal_images(client: TestClient) -> None:
    csrf = login_page(client)
    post_form(client, "/admin/products", csrf, code="cell", name="배터리 셀")
    edit = client.get("/admin/products/1/edit")
    assert 'name="view_rule" value="any" checked' in edit.text
    assert "한 시점이라도 이상이면 불량" in edit.text
    saved = post_form(
        client, "/admin/products/1", csrf, name="배터리 셀", view_rule="majority", views="Top, ct, top"
    )
    assert "저장했습니다" in saved.text  # type: ignore[attr-defined]
    product = client.get("/api/v1/products/1").json()
    assert (product["view_rule"], product["views"]) == ("majority", ["top", "ct"])
    assert 'value="top, ct"' in client.get("/admin/products/1/edit").text

    refused = post_form(
        client, "/admin/products/1", csrf, name="배터리 셀", view_rule="all", views="top, 옆면"
    )
    assert refused.status_code == 422  # type: ignore[attr-defined]
    assert "옆면" in page_alert(refused.text)  # type: ignore[attr-defined]
    assert client.get("/api/v1/products/1").json()["view_rule"] == "majority"  # nothing saved

    # normal images of one view: the upload form offers the product's views, the list shows each image's view
    page = client.get("/admin/images/normal?product_id=1")
    assert 'data-testid="image-view"' in page.text
    assert '<option value="ct">' in page.text
    files = [("files", (f"n{i}.png", png_bytes((64, 64), (10 * i, 20, 30)), "image/png")) for i in range(2)]
    headers = {"X-CSRF-Token": csrf}
    uploaded = client.post(
        "/api/v1/products/1/images", data={"kind": "normal", "view": "CT"}, files=files, headers=headers
    )
    assert uploaded.status_code == 201, uploaded.text
    assert [c["view"] for c in uploaded.json()["created"]] == ["ct", "ct"]
    unknown = client.post(
        "/api/v1/products/1/images", data={"kind": "normal", "view": "side"}, files=files, headers=headers
    )
    assert unknown.status_code == 422
    assert "side" in unknown.json()["detail"]
    assert (
        '<span class="view-chip" title="시점">ct</span>'
        in client.get("/admin/images/normal?product_id=1").text
    )
