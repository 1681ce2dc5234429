"""Guidance on the previous system's real manuals (PDF and DOCX): the mapped section's own cause and action,
an honest "no prevention part", "no section for this defect" with the sections the manual has, the
structure API, and an admin's re-mapping that is used at once and kept across re-indexing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.inspection.guidance.conftest import make_inspection
from tests.manual_library import install_library

SEEDS = Path(__file__).resolve().parents[3].parent / "shared" / "seeds" / "manuals"
CARPET_TYPES = {
    "color": "색상 이상",
    "cut": "절단",
    "hole": "구멍",
    "metal_contamination": "금속 오염",
    "thread": "실밥",
    "stain": "얼룩",  # no section in the manual
}

pytestmark = pytest.mark.skipif(not (SEEDS / "carpet_manual.pdf").is_file(), reason="seed manuals absent")


def _carpet(client: TestClient, headers: dict[str, str], file_name: str) -> tuple[int, dict[str, int], int]:
    pid = int(
        client.post("/api/v1/products", json={"code": "carpet", "name": "카펫"}, headers=headers).json()["id"]
    )
    types = {
        code: int(
            client.post(
                f"/api/v1/products/{pid}/defect-types", json={"code": code, "name": name}, headers=headers
            ).json()["id"]
        )
        for code, name in CARPET_TYPES.items()
    }
    data = (SEEDS / file_name).read_bytes()
    created = client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": (file_name, data, "application/octet-stream")},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "pending"
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    return pid, types, int(created.json()["id"])


@pytest.mark.parametrize("file_name", ["carpet_manual.pdf", "carpet_manual.docx"])
def test_real_manual_answers_from_the_defects_own_section(
    client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], file_name: str
) -> None:
    install_library(client.app.state.services)  # type: ignore[attr-defined]
    pid, types, manual_id = _carpet(client, admin_headers, file_name)
    listed = client.get(f"/api/v1/products/{pid}/manuals", headers=admin_headers).json()
    assert listed[0]["status"] == "indexed", listed
    assert listed[0]["error"] == ""

    structure = client.get(f"/api/v1/manuals/{manual_id}/structure", headers=worker_headers).json()
    mapped = {s["defect_type"]["code"]: s for s in structure["sections"] if s["defect_type"]}
    assert set(mapped) == {"color", "cut", "hole", "metal_contamination", "thread"}
    assert mapped["color"]["title"] == "Color Defect (오염·얼룩 불량)"
    assert "염료 찌꺼기" in mapped["color"]["parts"]["cause"]["text"]
    assert mapped["color"]["parts"]["cause"]["label"] == "발생 원인"
    assert mapped["color"]["parts"]["cause"]["pages"] == [1]
    assert mapped["color"]["missing"] == ["prevention"]
    assert [d["code"] for d in structure["unmapped_defect_types"]] == ["stain"]

    inspection = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["cut"])
    body = client.post(f"/api/v1/inspections/{inspection}/guidance", json={}, headers=worker_headers).json()
    sections = body["sections"]
    assert body["has_manual"] is True
    assert "칼날 마모 또는 세팅 불량" in sections["cause"]
    assert "칼날 점검 및 주기적 교체" in sections["action"]
    assert "Cut Defect" in sections["cause"]  # the quoted section is named
    assert "등록된 대응 매뉴얼이 없" not in sections["cause"]
    # No prevention part in this manual: said so, nothing of the cause or action repeated.
    assert "예방 조치 내용이 없습니다" in sections["prevention"]
    assert "칼날" not in sections["prevention"]
    assert {c["page"] for c in body["citations"]} == {1}

    # A defect type the manual has no section for: said so, with the sections it has.
    other = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["stain"])
    body = client.post(f"/api/v1/inspections/{other}/guidance", json={}, headers=worker_headers).json()
    assert body["has_manual"] is True
    assert "이 불량(얼룩) 항목이 없습니다" in body["sections"]["cause"]
    assert "Thread Defect (실/섬유 이물 부착 불량)" in body["sections"]["cause"]
    assert body["citations"] == []


def test_admin_remaps_a_section_used_at_once_and_kept_across_reindexing(
    client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str]
) -> None:
    install_library(client.app.state.services)  # type: ignore[attr-defined]
    pid, types, manual_id = _carpet(client, admin_headers, "carpet_manual.docx")
    structure = client.get(f"/api/v1/manuals/{manual_id}/structure", headers=admin_headers).json()
    color = next(s for s in structure["sections"] if s["title"].startswith("Color"))

    # Workers cannot re-map; a defect type of another product is refused in the user's language.
    url = f"/api/v1/manuals/{manual_id}/structure/sections/{color['index']}"
    assert client.put(url, json={"defect_type_id": types["stain"]}, headers=worker_headers).status_code == 403
    assert client.put(url, json={"defect_type_id": 9999}, headers=admin_headers).status_code == 422
    bad = client.put(
        f"/api/v1/manuals/{manual_id}/structure/sections/99",
        json={"defect_type_id": None},
        headers=admin_headers,
    )
    assert bad.status_code == 404

    # The admin says the "Color" section is what this plant calls 얼룩 (stain).
    changed = client.put(url, json={"defect_type_id": types["stain"]}, headers=admin_headers)
    assert changed.status_code == 200, changed.text
    remapped = next(s for s in changed.json()["sections"] if s["index"] == color["index"])
    assert remapped["defect_type"]["code"] == "stain"
    assert remapped["mapped_by"] == "admin"
    assert [d["code"] for d in changed.json()["unmapped_defect_types"]] == ["color"]

    inspection = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["stain"])
    body = client.post(f"/api/v1/inspections/{inspection}/guidance", json={}, headers=worker_headers).json()
    assert "염료 찌꺼기" in body["sections"]["cause"]

    again = client.post(f"/api/v1/manuals/{manual_id}/reindex", headers=admin_headers)
    assert again.status_code == 202
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    kept = client.get(f"/api/v1/manuals/{manual_id}/structure", headers=admin_headers).json()
    assert next(s for s in kept["sections"] if s["index"] == color["index"])["defect_type"]["code"] == "stain"


def test_a_registered_manual_not_indexed_yet_is_not_called_missing(
    client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str]
) -> None:
    client.app.state.runner.handlers.pop("manual_index", None)  # type: ignore[attr-defined]  # stays pending
    pid = int(
        client.post("/api/v1/products", json={"code": "c", "name": "C"}, headers=admin_headers).json()["id"]
    )
    defect = client.post(
        f"/api/v1/products/{pid}/defect-types", json={"code": "cut", "name": "절단"}, headers=admin_headers
    ).json()["id"]
    data = (SEEDS / "carpet_manual.pdf").read_bytes()
    client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": ("carpet.pdf", data, "application/pdf")},
        headers=admin_headers,
    )
    inspection = make_inspection(client, worker_headers, product_id=pid, defect_type_id=defect)
    body = client.post(f"/api/v1/inspections/{inspection}/guidance", json={}, headers=worker_headers).json()
    assert body["has_manual"] is False  # nothing indexed to quote
    assert "carpet.pdf" in body["sections"]["cause"]
    assert "아직 색인되지 않았거나" in body["sections"]["cause"]
    assert "등록된 대응 매뉴얼이 없" not in body["sections"]["cause"]
