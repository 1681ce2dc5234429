"""The admin sees what was understood in a real manual (DOCX), re-maps a section and re-indexes, in Korean
and English."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.manual_library import install_library
from tests.pages import login_page, post_form

SEED = Path(__file__).resolve().parents[2].parent / "shared" / "seeds" / "manuals" / "prod1_menual.docx"


@pytest.mark.skipif(not SEED.is_file(), reason="seed manuals absent")
def test_structure_screen_shows_sections_flags_unmapped_types_and_remaps(client: TestClient) -> None:
    install_library(client.app.state.services)  # type: ignore[attr-defined]
    csrf = login_page(client)
    post_form(client, "/admin/products", csrf, code="prod1", name="주조 부품")
    for code, name in (("hole", "기공"), ("burr", "버"), ("scratch", "긁힘"), ("crack", "균열")):
        post_form(client, "/admin/defect-types", csrf, product_id="1", code=code, name=name)
    uploaded = client.post(
        "/api/v1/products/1/manuals",
        files={"file": ("prod1_menual.docx", SEED.read_bytes(), "application/octet-stream")},
        headers={"X-CSRF-Token": csrf},
    )
    assert uploaded.status_code == 201, uploaded.text
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    manual_id = uploaded.json()["id"]

    listing = client.get("/admin/manuals").text
    assert f'href="/admin/manuals/{manual_id}/structure"' in listing
    assert "불량 항목 3개" in listing
    assert ".docx" in listing

    page = client.get(f"/admin/manuals/{manual_id}/structure").text
    assert "<h1>인식한 구조</h1>" in page
    assert page.count('data-section-index="') == 3
    assert "hole (기공)" in page
    assert "주조 과정 중 금속 용탕 내 공기나 가스가" in page
    assert "발생 원인" in page
    assert "조치 가이드" in page
    assert page.count('class="badge state-missing">없음') == 3  # no prevention part anywhere
    unmapped = re.search(r'<ul id="unmapped">(.*?)</ul>', page, re.S)
    assert unmapped is not None
    assert "균열" in unmapped.group(1)
    assert "기공" not in unmapped.group(1)

    # The admin links the "Scratch (긁힘)" section to 균열 instead (id 4); the flag moves to 긁힘.
    scratch = re.search(r'data-section-index="(\d+)">\s*<h3>Scratch', page)
    assert scratch is not None
    done = post_form(
        client, f"/admin/manuals/{manual_id}/sections/{scratch.group(1)}", csrf, defect_type_id="4"
    )
    assert done.status_code == 200  # type: ignore[attr-defined]
    page = done.text  # type: ignore[attr-defined]
    unmapped = re.search(r'<ul id="unmapped">(.*?)</ul>', page, re.S)
    assert unmapped is not None
    assert "긁힘" in unmapped.group(1)
    assert "균열" not in unmapped.group(1)
    assert "관리자 지정" in page

    # Re-indexing keeps the admin's choice.
    post_form(client, f"/admin/manuals/{manual_id}/reindex", csrf)
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    english = client.get(f"/admin/manuals/{manual_id}/structure", params={"lang": "en"}).text
    assert "<h1>Understood structure</h1>" in english
    assert "set by admin" in english
    assert "Defect types without a manual section" in english
    assert '<option value="4" selected>' in english
    client.get("/admin/manuals", params={"lang": "ko"})

    worker_csrf = login_page(client, "worker1")
    assert client.get(f"/admin/manuals/{manual_id}/structure").status_code == 403
    refused = post_form(client, f"/admin/manuals/{manual_id}/sections/0", worker_csrf, defect_type_id="1")
    assert refused.status_code == 403  # type: ignore[attr-defined]
