"""GET /api/v1/inspections/{id}/report.pdf: a one-page PDF of a real analysed inspection (real engines, jobs).

The inspections go through the real search, anomaly (PatchCore built by its job) and extractive guidance
steps over /analyze, then the worker's feedback is saved over the API; the PDF is read back with pypdf.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pypdf import PdfReader

from app.db.tables import Inspection
from tests.conftest import make_settings, png_bytes
from tests.factories import WORKER_PASSWORD, DemoEnv, demo_env

ACTION = "라인 7 로트 격리 후 이송 롤러 청소, 재검사 완료"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoEnv]:
    """Demo data; metal_plate with its search gallery, manual index and anomaly model built by the jobs."""
    settings = make_settings(tmp_path_factory.mktemp("report"))
    builds = [(kind, "metal_plate") for kind in ("search_index", "manual_index", "anomaly_model")]
    with demo_env(settings, defects_per_type=4, builds=builds) as built:
        yield built


def _analyze(env: DemoEnv) -> dict[str, Any]:
    """A held-out metal_plate defect photo through every step, as a line system sends it.

    The first held-out photo whose outcome names a defect type (so the answer quotes the manual):
    identification may rightly call some held-out photos unknown.
    """
    product = next(p for p in env.manifest.products if p.code == "metal_plate")
    labels = []
    for entry in (e for e in product.defect_images if e.holdout):
        response = env.client.post(
            "/api/v1/analyze",
            headers=env.worker,
            files={"file": ("line7.png", (env.root / entry.path).read_bytes(), "image/png")},
            data={"product_id": str(env.products["metal_plate"]), "top_k": "3"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["errors"] == {}
        labels.append(body["inspection"]["outcome"]["label"])
        if labels[-1] == "defect":
            return body
    raise AssertionError(f"no held-out metal_plate defect photo came out as a defect: {labels}")


def _pdf(env: DemoEnv, inspection_id: int, **headers: str) -> tuple[PdfReader, str]:
    env.client.cookies.clear()  # no language cookie left from an earlier call: Korean by default
    response = env.client.get(
        f"/api/v1/inspections/{inspection_id}/report.pdf", headers={**env.worker, **headers}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == f'inline; filename="inspection-{inspection_id}.pdf"'
    reader = PdfReader(io.BytesIO(response.content))
    return reader, "\n".join(page.extract_text() for page in reader.pages)


def _squash(text: str) -> str:
    """Without whitespace: wrapped lines break where the layout decides."""
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def analysed(env: DemoEnv) -> dict[str, Any]:
    """One analysed inspection with the worker's action and rating saved."""
    body = _analyze(env)
    inspection_id = body["inspection"]["id"]
    saved = env.client.post(
        f"/api/v1/inspections/{inspection_id}/feedback",
        json={"action_taken": ACTION, "score": 4},
        headers=env.worker,
    )
    assert saved.status_code == 200, saved.text
    return body


def test_report_is_one_korean_page_with_photo_overlay_outcome_guidance_and_record(
    env: DemoEnv, analysed: dict[str, Any]
) -> None:
    inspection_id = analysed["inspection"]["id"]
    reader, text = _pdf(env, inspection_id)
    assert len(reader.pages) == 1
    page = reader.pages[0]
    assert [round(float(v)) for v in page.mediabox.upper_right] == [595, 842]  # A4
    assert len(page.images) == 2  # the photo and the anomaly overlay, side by side
    flat = _squash(text)
    assert f"검사보고서#{inspection_id}" in flat
    assert "worker1" in flat
    assert "금속" in flat  # the product's Korean name
    for heading in ("불량 현황", "원인 분석", "대응 방안", "예방 조치"):
        assert _squash(heading) in flat, heading
    guidance = analysed["guidance"]
    assert _squash(guidance["sections"]["cause"])[:30] in flat
    # the outcome as the pages show it: the defect type's name, or the translated label
    record = env.client.get(f"/api/v1/inspections/{inspection_id}", headers=env.worker).json()
    outcome = record["outcome"]
    if outcome["label"] == "defect":
        assert _squash(outcome["defect_type"]["name"]) in flat
    else:
        assert {"normal": "정상", "unknown": "알수없음"}[outcome["label"]] in flat
    assert f"신뢰도{round(outcome['confidence'] * 100)}%" in flat
    anomaly = analysed["anomaly"]
    assert f"이상점수{anomaly['score']:.3f}/임계값{anomaly['threshold']:.3f}" in flat
    assert f"이상영역{len(anomaly['regions'])}개" in flat
    # every citation by manual file name and page
    assert guidance["citations"]
    for citation in guidance["citations"]:
        assert _squash(f"{citation['manual_name']} · {citation['page']}쪽") in flat
    # the worker's record and the history
    assert _squash(ACTION) in flat
    assert "(4/5)" in flat
    assert "변경이력" in flat
    assert "조치기록저장" in flat  # the last change is the saved feedback
    assert "일부내용을줄였습니다" not in flat


def test_english_report_follows_the_users_language(env: DemoEnv, analysed: dict[str, Any]) -> None:
    inspection_id = analysed["inspection"]["id"]
    for headers, query in (({}, "?lang=en"), ({"Cookie": "dl_lang=en"}, "")):
        response = env.client.get(
            f"/api/v1/inspections/{inspection_id}/report.pdf{query}", headers={**env.worker, **headers}
        )
        assert response.status_code == 200
        reader = PdfReader(io.BytesIO(response.content))
        assert len(reader.pages) == 1
        text = reader.pages[0].extract_text()
        for label in (
            "Inspection report",
            "Cause analysis",
            "Prevention",
            "Worker's action",
            "Anomaly score",
        ):
            assert label in text, label
        assert "원인 분석" not in text
        assert _squash(ACTION) in _squash(text)  # the worker's own words are not translated
        env.client.cookies.clear()  # ?lang= also sets the language cookie


def test_huge_guidance_and_action_still_give_one_page_cut_with_a_note(env: DemoEnv) -> None:
    body = _analyze(env)
    inspection_id = body["inspection"]["id"]
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        assert row is not None
        huge = {
            "status": "표면 긁힘이 확인되었습니다. " * 900,
            "cause": "원인" + "가" * 20000,  # one word far wider than the page
            "action": "\n".join(f"- 조치 단계 {i}: 로트를 격리하고 확인합니다." for i in range(600)),
            "prevention": "예방 " * 5000,
        }
        row.guidance = {**(row.guidance or {}), "sections": huge}
        row.action_taken = "작업자 메모 " * 900
        session.commit()
    reader, text = _pdf(env, inspection_id)
    assert len(reader.pages) == 1
    flat = _squash(text)
    for heading in ("불량 현황", "원인 분석", "대응 방안", "예방 조치"):
        assert _squash(heading) in flat, heading  # every section keeps its place on the page
    assert "근거(매뉴얼페이지)" in flat  # and the citations are not pushed off
    assert "…" in text
    assert "일부내용을줄였습니다" in flat
    assert "조치단계0:" in flat


def test_a_missing_overlay_is_said_not_drawn(env: DemoEnv, analysed: dict[str, Any]) -> None:
    body = _analyze(env)
    inspection_id = body["inspection"]["id"]
    storage = env.client.app.state.storage  # type: ignore[attr-defined]
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        assert row is not None
        # every file the anomaly step left beside the photo (pictures, or the map they are drawn from)
        folder = row.image_key.rsplit("/", 1)[0] + "/"
        for key in list(storage.list(folder)):
            if key != row.image_key:
                storage.delete(key)
    reader, text = _pdf(env, inspection_id)
    assert len(reader.pages) == 1
    assert len(reader.pages[0].images) == 1  # the photo only
    assert "이상영역그림이저장소에없습니다" in _squash(text)


def test_a_just_uploaded_inspection_says_what_has_not_run(env: DemoEnv) -> None:
    uploaded = env.client.post(
        "/api/v1/inspections",
        files={"file": ("part.png", png_bytes(size=(320, 200)), "image/png")},
        headers=env.worker,
    )
    assert uploaded.status_code == 201
    reader, text = _pdf(env, uploaded.json()["id"])
    assert len(reader.pages) == 1
    assert len(reader.pages[0].images) == 1  # the photo; no overlay yet
    flat = _squash(text)
    for said in (
        "판정대기",
        "이상탐지를실행하지않았습니다",
        "대응방안을아직생성하지않았습니다",
        "아직조치기록이",
    ):
        assert said in flat, said


def test_damaged_stored_results_still_give_a_page(env: DemoEnv) -> None:
    body = _analyze(env)
    inspection_id = body["inspection"]["id"]
    with env.client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        assert row is not None
        row.guidance = {"sections": {"status": None, "cause": 7}, "citations": ["x", {"page": None}]}
        row.anomaly_result = {"score": "high", "regions": [None, {"x": None, "score": "?"}]}
        session.commit()
    reader, text = _pdf(env, inspection_id)
    assert len(reader.pages) == 1
    flat = _squash(text)
    assert "이상탐지를실행하지않았습니다" in flat  # no usable score: not shown as a number
    assert "이상영역1개" in flat


def test_missing_inspection_is_404_and_anonymous_is_401(env: DemoEnv) -> None:
    missing = env.client.get("/api/v1/inspections/999999/report.pdf", headers=env.worker)
    assert missing.status_code == 404
    assert "999999" in missing.json()["detail"]
    anonymous = env.client.get("/api/v1/inspections/1/report.pdf")
    assert anonymous.status_code == 401


def test_guidance_and_history_pages_link_the_report(env: DemoEnv, analysed: dict[str, Any]) -> None:
    inspection_id = analysed["inspection"]["id"]
    client = env.client
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    login = client.post(
        "/login",
        data={"username": "worker1", "password": WORKER_PASSWORD, "next": "/", "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert login.status_code == 303
    try:
        link = f'href="/api/v1/inspections/{inspection_id}/report.pdf?lang=ko"'
        for path in (f"/inspect/{inspection_id}/guidance", f"/history/{inspection_id}"):
            html = client.get(path).text
            assert link in html, path
            assert "보고서 PDF" in html, path
        english = client.get(f"/history/{inspection_id}?lang=en").text
        assert "Report PDF" in english
        # the link works with the page's login cookie
        pdf = client.get(f"/api/v1/inspections/{inspection_id}/report.pdf?lang=ko")
        assert pdf.status_code == 200
        assert pdf.content.startswith(b"%PDF")
    finally:
        client.cookies.clear()
