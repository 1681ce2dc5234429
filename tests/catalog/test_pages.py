"""Admin catalog screens over the real app: products, defect types, images, preprocessing, models."""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import png_bytes
from tests.pages import login_page, page_alert, post_form

SCREENS = {
    "/admin/products": ("제품 관리", "Products"),
    "/admin/defect-types": ("불량 유형 관리", "Defect types"),
    "/admin/images/normal": ("정상 이미지 등록", "Normal images"),
    "/admin/images/defect": ("불량 이미지 등록", "Defect images"),
    "/admin/preprocessing": ("이미지 전처리 설정", "Image preprocessing"),
    "/admin/models": ("모델 선택", "Model selection"),
}


HANGUL = re.compile(r"[가-힣]")


def _h1(html: str) -> str:
    start = html.index("<h1>") + 4
    return html[start : html.index("</h1>", start)].strip()


def _seed(client: TestClient, csrf: str) -> tuple[int, int]:
    """A product with one defect type, created through the pages."""
    post_form(client, "/admin/products", csrf, code="metal_plate", name="금속 플레이트", description="판금")
    post_form(client, "/admin/defect-types", csrf, product_id="1", code="scratch", name="긁힘")
    return 1, 1


def _upload(client: TestClient, csrf: str, product_id: int, files: list[Any], **data: object) -> Any:
    return client.post(
        f"/api/v1/products/{product_id}/images",
        data={"kind": "normal", **data},
        files=files,
        headers={"X-CSRF-Token": csrf},
    )


@pytest.mark.parametrize("url", sorted(SCREENS))
def test_every_screen_renders_in_korean_and_english(client: TestClient, url: str) -> None:
    csrf = login_page(client)
    _seed(client, csrf)
    ko = client.get(url)
    assert ko.status_code == 200
    assert _h1(ko.text) == SCREENS[url][0]
    en = client.get(url, params={"lang": "en"})
    assert en.status_code == 200
    assert _h1(en.text) == SCREENS[url][1]
    assert "adm." not in en.text  # no untranslated key leaks onto the page


def test_workers_get_403_on_every_admin_screen_and_form(client: TestClient) -> None:
    admin_csrf = login_page(client)
    _seed(client, admin_csrf)
    csrf = login_page(client, "worker1")
    for url in [*SCREENS, "/admin/products/1/edit", "/admin/defect-types/1/edit"]:
        assert client.get(url).status_code == 403, url
    for url in [
        "/admin/products",
        "/admin/products/1",
        "/admin/products/1/deactivate",
        "/admin/defect-types",
        "/admin/defect-types/1/deactivate",
        "/admin/preprocessing/1",
        "/admin/models",
        "/admin/images/1/delete",
    ]:
        assert post_form(client, url, csrf, name="x").status_code == 403, url  # type: ignore[attr-defined]
    assert client.get("/api/v1/products/1/preprocessing/preview").status_code == 403
    assert client.get("/api/v1/settings/models/choices").status_code == 403


def test_form_without_csrf_token_is_refused(client: TestClient) -> None:
    login_page(client)
    response = client.post("/admin/products", data={"code": "x", "name": "X"})
    assert response.status_code == 403
    assert client.get("/api/v1/products?include_inactive=true").json() == []


def test_product_create_edit_deactivate_reactivate(client: TestClient) -> None:
    csrf = login_page(client)
    created = post_form(client, "/admin/products", csrf, code="fabric", name="직물", description="원단")
    assert created.status_code == 200  # type: ignore[attr-defined]
    assert "등록했습니다" in created.text  # type: ignore[attr-defined]
    edit = client.get("/admin/products/1/edit")
    assert 'value="fabric" disabled' in edit.text  # the code is shown but cannot be edited
    saved = post_form(
        client, "/admin/products/1", csrf, name="직물 원단", description="새 설명", code="hacked"
    )
    assert "저장했습니다" in saved.text  # type: ignore[attr-defined]
    product = client.get("/api/v1/products/1").json()
    assert (product["code"], product["name"], product["description"]) == ("fabric", "직물 원단", "새 설명")

    post_form(client, "/admin/products/1/deactivate", csrf)
    listing = client.get("/admin/products").text
    assert 'class="inactive" data-product="fabric"' in listing
    assert "/admin/products/1/reactivate" in listing
    assert client.get("/api/v1/products").json() == []  # gone from choices, still listed for the admin
    post_form(client, "/admin/products/1/reactivate", csrf)
    assert client.get("/api/v1/products/1").json()["is_active"] is True


def test_product_forms_refuse_bad_input_with_a_message_and_keep_the_typing(client: TestClient) -> None:
    csrf = login_page(client)
    bad_code = post_form(client, "/admin/products", csrf, code="금속", name="금속 플레이트")
    assert bad_code.status_code == 422  # type: ignore[attr-defined]
    assert "영문 소문자" in page_alert(bad_code.text)  # type: ignore[attr-defined]
    assert 'value="금속 플레이트"' in bad_code.text  # type: ignore[attr-defined]
    post_form(client, "/admin/products", csrf, code="metal", name="금속")
    duplicate = post_form(client, "/admin/products", csrf, code="metal", name="다른 이름", lang="en")
    assert duplicate.status_code == 409  # type: ignore[attr-defined]
    assert "metal" in page_alert(duplicate.text)  # type: ignore[attr-defined]
    empty_name = post_form(client, "/admin/products/1", csrf, name="  ", description="")
    assert empty_name.status_code == 422  # type: ignore[attr-defined]
    assert "이름" in page_alert(empty_name.text)  # type: ignore[attr-defined]
    assert client.get("/api/v1/products/1").json()["name"] == "금속"
    assert client.get("/admin/products/999/edit").status_code == 404


def test_product_list_shows_counts(client: TestClient) -> None:
    csrf = login_page(client)
    _seed(client, csrf)
    _upload(client, csrf, 1, [("files", (f"n{i}.png", png_bytes(), "image/png")) for i in range(3)])
    _upload(
        client, csrf, 1, [("files", ("d.png", png_bytes(), "image/png"))], kind="defect", defect_type_id=1
    )
    html = client.get("/admin/products").text
    assert '<a href="/admin/images/normal?product_id=1">3</a>' in html
    assert '<a href="/admin/images/defect?product_id=1">1</a>' in html
    assert '<a href="/admin/defect-types?product_id=1">1</a>' in html


def test_defect_types_create_filter_edit_deactivate(client: TestClient) -> None:
    csrf = login_page(client)
    _seed(client, csrf)
    post_form(client, "/admin/products", csrf, code="fabric", name="직물")
    post_form(client, "/admin/defect-types", csrf, product_id="2", code="hole", name="구멍")
    bad = post_form(client, "/admin/defect-types", csrf, product_id="2", code="긁힘", name="긁힘")
    assert bad.status_code == 422  # type: ignore[attr-defined]
    assert "불량 코드" in page_alert(bad.text)  # type: ignore[attr-defined]
    duplicate = post_form(client, "/admin/defect-types", csrf, product_id="1", code="scratch", name="x")
    assert duplicate.status_code == 409  # type: ignore[attr-defined]
    for odd in ("", "²", "99999999999999999999999", "1 OR 1=1"):
        no_product = post_form(client, "/admin/defect-types", csrf, product_id=odd, code="dent", name="찍힘")
        assert no_product.status_code == 400, odd  # type: ignore[attr-defined]
    missing = post_form(client, "/admin/defect-types", csrf, product_id="77", code="dent", name="찍힘")
    assert missing.status_code == 404  # type: ignore[attr-defined]
    assert client.get("/admin/images/other").status_code == 404

    only_fabric = client.get("/admin/defect-types", params={"product_id": 2}).text
    assert 'data-defect="hole"' in only_fabric
    assert 'data-defect="scratch"' not in only_fabric

    post_form(client, "/admin/defect-types/1", csrf, name="스크래치", description="표면 긁힘")
    assert client.get("/api/v1/defect-types/1").json()["name"] == "스크래치"
    post_form(client, "/admin/defect-types/1/deactivate", csrf)
    assert client.get("/api/v1/defect-types/1").json()["is_active"] is False
    assert 'class="inactive" data-defect="scratch"' in client.get("/admin/defect-types").text
    post_form(client, "/admin/defect-types/1/reactivate", csrf)
    assert client.get("/api/v1/defect-types/1").json()["is_active"] is True


def test_zip_upload_reports_bad_entries_and_the_grid_shows_the_names(client: TestClient) -> None:
    csrf = login_page(client)
    _seed(client, csrf)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("good1.png", png_bytes())
        archive.writestr("good2.jpg", png_bytes(fmt="JPEG"))
        archive.writestr("../../evil.png", png_bytes())
        archive.writestr("notes.txt", b"hello")
    response = _upload(
        client,
        csrf,
        1,
        [
            ("files", ("batch.zip", buffer.getvalue(), "application/zip")),
            ("files", ("fake.png", b"not an image", "image/png")),
        ],
        kind="defect",
        defect_type_id=1,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert sorted(c["file_name"] for c in body["created"]) == [
        "metal_plate_scratch_001.png",
        "metal_plate_scratch_002.jpg",
    ]
    assert sorted(r["file_name"] for r in body["rejected"]) == [
        "batch.zip:../../evil.png",
        "batch.zip:notes.txt",
        "fake.png",
    ]
    grid = client.get("/admin/images/defect", params={"product_id": 1, "defect_type_id": 1}).text
    assert grid.count('class="thumb"') == 2
    assert "metal_plate_scratch_002.jpg" in grid
    assert client.get("/admin/images/normal", params={"product_id": 1}).text.count('class="thumb"') == 0


def test_image_grid_pages_and_delete_keeps_db_and_storage_consistent(client: TestClient) -> None:
    csrf = login_page(client)
    _seed(client, csrf)
    files = [("files", (f"n{i}.png", png_bytes(color=(i * 8, 90, 90)), "image/png")) for i in range(26)]
    assert _upload(client, csrf, 1, files).status_code == 201
    first = client.get("/admin/images/normal", params={"product_id": 1})
    assert first.text.count('class="thumb"') == 24
    assert 'href="/admin/images/normal?product_id=1&amp;page=2"' in first.text
    assert (
        client.get("/admin/images/normal", params={"product_id": 1, "page": 2}).text.count('class="thumb"')
        == 2
    )

    storage = client.app.state.storage  # type: ignore[attr-defined]
    key = "images/normal/1/metal_plate_ok_026.png"
    assert storage.exists(key)
    deleted = post_form(client, "/admin/images/26/delete", csrf, next="/admin/images/normal?product_id=1")
    assert deleted.status_code == 200  # type: ignore[attr-defined]
    assert "삭제했습니다" in deleted.text  # type: ignore[attr-defined]
    assert not storage.exists(key)
    assert client.get("/api/v1/images/26").status_code == 404
    assert len(list(storage.list("images/normal/1/"))) == 25
    # An off-site "next" never becomes a redirect target.
    away = post_form(client, "/admin/images/25/delete", csrf, next="https://evil.example/")
    assert away.url.path == "/admin/images/normal"  # type: ignore[attr-defined]


def test_preview_is_a_png_that_changes_with_grayscale(client: TestClient) -> None:
    csrf = login_page(client)
    _seed(client, csrf)
    _upload(client, csrf, 1, [("files", ("red.png", png_bytes(color=(200, 40, 30)), "image/png"))])
    url = "/api/v1/products/1/preprocessing/preview"
    plain = client.get(url, params={"image_id": 1})
    gray = client.get(url, params={"image_id": 1, "grayscale": "true"})
    assert plain.status_code == gray.status_code == 200
    assert gray.headers["content-type"] == "image/png"
    assert plain.content != gray.content
    r, g, b = Image.open(io.BytesIO(gray.content)).convert("RGB").getpixel((5, 5))
    assert r == g == b
    assert Image.open(io.BytesIO(plain.content)).convert("RGB").getpixel((5, 5)) == (200, 40, 30)
    # Without image_id the product's newest image is used; another product's image is refused.
    assert client.get(url, params={"grayscale": "true"}).content == gray.content
    post_form(client, "/admin/products", csrf, code="other", name="다른 제품")
    other = client.get("/api/v1/products/2/preprocessing/preview", params={"image_id": 1})
    assert other.status_code == 400
    empty = client.get("/api/v1/products/2/preprocessing/preview")
    assert empty.status_code == 404
    assert "이미지" in empty.json()["detail"]


def test_preprocessing_form_saves_and_the_table_shows_it(client: TestClient) -> None:
    csrf = login_page(client)
    _seed(client, csrf)
    saved = client.post(
        "/admin/preprocessing/1",
        data={"csrf_token": csrf, "steps": ["grayscale", "smooth"]},
    )
    assert "저장했습니다" in saved.text
    assert client.get("/api/v1/products/1/preprocessing").json() == {
        "grayscale": True,
        "contrast": False,
        "equalize": False,
        "smooth": True,
        "normalize": False,
    }
    page = client.get("/admin/preprocessing", params={"product_id": 1}).text
    assert page.count('<span class="on"') == 2
    assert 'name="steps" value="grayscale" checked' in page
    post_form(client, "/admin/preprocessing/1", csrf)  # nothing ticked: all off
    assert not any(client.get("/api/v1/products/1/preprocessing").json().values())


def test_model_choices_come_from_the_engines_and_unavailable_ones_are_refused(client: TestClient) -> None:
    csrf = login_page(client)
    choices = client.get("/api/v1/settings/models/choices").json()
    embedders = {c["name"]: c for c in choices["embedder"]}
    assert embedders["efficientnet-lite0"]["is_available"] is True
    assert embedders["clip"]["is_available"] is False
    assert "가중치 파일이 없습니다" in embedders["clip"]["reason"]  # in the reader's language
    page = client.get("/admin/models").text
    assert "사용 불가" in page
    assert embedders["clip"]["reason"] in page

    refused = client.put("/api/v1/settings/models", json={"embedder": "clip"}, headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 400
    assert "clip" in refused.json()["detail"]
    form = post_form(
        client, "/admin/models", csrf, embedder="efficientnet-lite0", anomaly_backbone="resnet18"
    )
    assert form.status_code == 400  # type: ignore[attr-defined]
    assert "resnet18" in page_alert(form.text)  # type: ignore[attr-defined]
    assert client.get("/api/v1/settings/models").json()["anomaly_backbone"] != "resnet18"

    # Once the weights file is there, the same choice is accepted (no model needs to be loaded).
    settings = client.app.state.settings  # type: ignore[attr-defined]
    (settings.models_path / "backbones").mkdir(parents=True, exist_ok=True)
    (settings.models_path / "backbones" / "resnet18.pth").write_bytes(b"weights")
    ok = post_form(
        client,
        "/admin/models",
        csrf,
        embedder="efficientnet-lite0",
        anomaly_backbone="resnet18",
        default_generator="extractive",
        allowed_generators=["extractive"],
    )
    assert "저장했습니다" in ok.text  # type: ignore[attr-defined]
    assert client.get("/api/v1/settings/models").json()["anomaly_backbone"] == "resnet18"
    english = client.get("/api/v1/settings/models/choices", params={"lang": "en"}).json()
    assert "not found" in next(c["reason"] for c in english["embedder"] if c["name"] == "clip")


def _choice_tables(html: str) -> str:
    """The model page's choice tables (names, labels, availability, reasons)."""
    return "".join(re.findall(r'<table class="table compact choices".*?</table>', html, re.S))


def test_model_page_reasons_and_labels_are_in_the_page_language(client: TestClient) -> None:
    """Issue 15: the Korean page showed English reasons, the English one Korean labels, and the loaded
    generators were listed as "generators: dict"."""
    from app.inspection.guidance.service import load_generators

    login_page(client)
    load_generators(client.app.state.services)  # type: ignore[attr-defined]  # as the start-up does
    korean = client.get("/admin/models").text
    english = client.get("/admin/models", params={"lang": "en"}).text
    ko_reasons = re.findall(r'<td class="reason">(.*?)</td>', korean, re.S)
    en_reasons = re.findall(r'<td class="reason">(.*?)</td>', english, re.S)
    assert len(ko_reasons) == len(en_reasons) > 5
    # Every reason in Korean on the Korean page (paths stay as they are), none on the English one.
    assert all(HANGUL.search(r) for r in ko_reasons), ko_reasons
    assert not HANGUL.search(_choice_tables(english)), en_reasons
    assert "weights file not found" not in korean
    assert "가중치 파일이 없습니다" in korean
    assert "weights file not found" in english
    assert "Manual excerpts (offline, no model)" in english
    assert "매뉴얼 발췌 (오프라인, 모델 불필요)" in korean
    for page in (korean, english):
        assert "<dd>dict</dd>" not in page
        assert "<dt><code>generators</code></dt><dd>extractive</dd>" in page


def test_admin_texts_exist_in_korean_and_english() -> None:
    from app.core.i18n import all_keys

    ko = {k for k in all_keys("ko") if k.startswith(("adm.", "errors.admin_"))}
    en = {k for k in all_keys("en") if k.startswith(("adm.", "errors.admin_"))}
    assert ko == en
    assert len(ko) > 100


def test_stale_artifacts_are_announced_with_a_link_to_the_deploy_screen(client: TestClient) -> None:
    """A built search index raises no notice; new preprocessing makes it stale and the page says so."""
    csrf = login_page(client)
    _seed(client, csrf)
    files = [("files", (f"d{i}.png", png_bytes(color=(30 * i, 90, 90)), "image/png")) for i in range(2)]
    assert _upload(client, csrf, 1, files, kind="defect", defect_type_id=1).status_code == 201
    job = client.post(
        "/api/v1/deployments",
        json={"kind": "search_index", "product_id": None},
        headers={"X-CSRF-Token": csrf},
    )
    assert job.status_code == 202, job.text
    assert client.app.state.runner.wait_idle(300)  # type: ignore[attr-defined]
    assert client.get(f"/api/v1/deployments/{job.json()['id']}").json()["status"] == "succeeded"
    assert "stale-notice" not in client.get("/admin/images/defect", params={"product_id": 1}).text  # current

    switches = {"grayscale": True, "contrast": False, "equalize": False, "smooth": False, "normalize": False}
    changed = client.put("/api/v1/products/1/preprocessing", json=switches, headers={"X-CSRF-Token": csrf})
    assert changed.status_code == 200, changed.text
    page = client.get("/admin/images/defect", params={"product_id": 1}).text
    assert "stale-notice" in page
    assert "갱신 필요" in page
    assert 'href="/admin/deploy/search"' in page


def test_grid_thumbnails_are_small_jpegs(client: TestClient) -> None:
    csrf = login_page(client)
    _seed(client, csrf)
    _upload(client, csrf, 1, [("files", ("big.png", png_bytes((1200, 800), (10, 120, 200)), "image/png"))])
    grid = client.get("/admin/images/normal").text
    assert 'src="/api/v1/images/1/thumbnail?v=' in grid
    thumb = client.get("/api/v1/images/1/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (256, 171)
    assert client.get("/api/v1/images/1/thumbnail", params={"size": 5000}).status_code == 422
    assert client.get("/api/v1/images/99/thumbnail").status_code == 404
