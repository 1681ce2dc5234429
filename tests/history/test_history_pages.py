"""History pages and the admin dashboard: what workers and admins see, in Korean and English."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.catalog import service as catalog_service
from app.core.artifacts import ArtifactState
from app.core.config import Settings
from app.db.tables import Inspection, Manual
from app.history import dashboard as dashboard_service
from app.inspection import service as inspection_service
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, png_bytes
from tests.deployments.test_pages import login_page, render_template
from tests.factories import make_inspection
from tests.history.conftest import History


def _row(html: str, attr: str, value: str) -> str:
    match = re.search(rf'<tr {attr}="{value}">(.*?)</tr>', html, re.S)
    assert match, f"no row {attr}={value}"
    return match.group(1)


def test_worker_reads_history_list_with_filters_and_paging(client: TestClient, history: History) -> None:
    login_page(client, "worker1", WORKER_PASSWORD)
    page = client.get("/history")
    assert page.status_code == 200
    assert "검사 이력" in page.text
    assert "총 7건" in page.text
    row = _row(page.text, "data-inspection", str(history.ids["scratch_today"]))
    label = "매뉴얼 발췌 (오프라인, 모델 불필요)"  # the generator in words, not "extractive"
    for text in ("금속 판", "긁힘", "이상", label, "★★★★★", "조치 완료", "worker1"):
        assert text in row, text
    assert f'src="/api/v1/inspections/{history.ids["scratch_today"]}/image"' in row
    assert "미조치" in _row(page.text, "data-inspection", str(history.ids["dent"]))
    # filters from the form (empty fields mean "any")
    scratch = history.catalog.defects["scratch"]
    filtered = client.get(
        f"/history?product_id=&defect_type_id={scratch}&generator=&date_from=&feedback_score="
    )
    assert "총 2건" in filtered.text
    assert f'value="{scratch}" data-product' in filtered.text
    assert re.search(rf'<option value="{scratch}" data-product="\d+" selected>', filtered.text)
    # paging keeps the filters
    many = client.get("/history?status=completed")
    assert "총 4건" in many.text
    english = client.get("/history?lang=en")
    assert "7 in all" in english.text
    assert "Action done" in english.text
    # bad conditions: a clear 400 page in the user's language, not a 500
    bad = client.get("/history?date_from=yesterday&lang=ko")
    assert bad.status_code == 400
    assert "검색 조건이 올바르지 않습니다: date_from = yesterday" in bad.text
    backwards = client.get("/history?date_from=2026-02-01&date_to=2026-01-01")
    assert backwards.status_code == 400


def test_history_list_pages(client: TestClient, settings: Settings) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        for _ in range(23):
            make_inspection(session, client.app.state.storage, settings)  # type: ignore[attr-defined]
    login_page(client, "worker1", WORKER_PASSWORD)
    first = client.get("/history")
    assert "1 / 2 페이지 (총 23건)" in first.text
    assert first.text.count("data-inspection=") == 20
    second = client.get("/history?page=2")
    assert second.text.count("data-inspection=") == 3


def test_detail_shows_every_step_and_the_workers_record(
    client: TestClient, settings: Settings, history: History
) -> None:
    storage = client.app.state.storage  # type: ignore[attr-defined]
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        metal = history.catalog.products["metal_plate"]
        scratch = history.catalog.defects["scratch"]
        row = make_inspection(
            session,
            storage,
            settings,
            product_id=metal,
            defect_type_id=scratch,
            anomaly=True,
            generator="extractive",
            score=4,
            action="연마기 교체 후 재검사 완료",
        )
        for name in ("heatmap.png", "overlay.png", "comparison.png"):
            storage.put(inspection_service.file_key(row, name), png_bytes(color=(200, 40, 40)), "image/png")
        row.search_result = {
            "matches": [
                {
                    "image_id": 1,
                    "score": 0.912,
                    "image_url": "/api/v1/images/1/file",
                    "product": {"id": metal, "code": "metal_plate", "name": "금속 판"},
                    "defect_type": {"id": scratch, "code": "scratch", "name": "긁힘"},
                },
                {"image_id": 2, "score": 0.7, "image_url": "https://evil.example/x.png", "product": {}},
            ],
            "verdict": {"product_id": metal, "defect_type_id": scratch, "score": 0.912, "margin": 0.2},
        }
        row.anomaly_result = {
            "score": 3.25,
            "threshold": 2.5,
            "is_anomaly": True,
            "regions": [{"x": 10, "y": 12, "width": 20, "height": 8, "score": 3.1}],
            "heatmap_url": inspection_service.file_url(row, "heatmap.png"),
            "overlay_url": inspection_service.file_url(row, "overlay.png"),
            "comparison_url": inspection_service.file_url(row, "comparison.png"),
        }
        row.guidance = {
            "sections": {
                "status": "표면에 길이 5mm 긁힘이 있습니다.",
                "cause": "이송 롤러 이물질",
                "action": "롤러 청소 후 연마",
                "prevention": "매 교대 롤러 점검",
            },
            "citations": [{"manual_id": 3, "page": 2, "text": "긁힘 발생 원인: 이송 롤러"}],
            "generator": "extractive",
            "elapsed_ms": 12.4,
        }
        row.timings_ms = {"search": 41.2, "anomaly": 230.0}
        session.commit()
        inspection_id = row.id
    login_page(client, "worker1", WORKER_PASSWORD)
    page = client.get(f"/history/{inspection_id}")
    assert page.status_code == 200
    text = page.text
    for expected in (
        f"검사 #{inspection_id}",
        "판정: 긁힘 (scratch)",
        "0.912",
        "이상이 검출되었습니다",
        "3.250",
        "2.500",
        "불량 현황",
        "표면에 길이 5mm 긁힘이 있습니다.",
        "원인 분석",
        "예방 조치",
        "매 교대 롤러 점검",
        "/api/v1/manuals/3/file#page=2",
        "긁힘 발생 원인: 이송 롤러",
        "연마기 교체 후 재검사 완료",
        "★★★★☆",
        "search 41 ms",
    ):
        assert expected in text, expected
    assert "evil.example" not in text  # stored URLs outside our API are never shown
    for name in ("heatmap", "overlay", "comparison"):
        url = f"/api/v1/inspections/{inspection_id}/files/{name}.png"
        assert f'src="{url}"' in text
        assert client.get(url).status_code == 200
    english = client.get(f"/history/{inspection_id}?lang=en")
    assert "Cause analysis" in english.text
    assert "Anomaly found" in english.text
    # an inspection with nothing but the photo says so for every step
    bare = client.get(f"/history/{history.ids['uploaded']}?lang=ko")
    assert bare.text.count("이 단계는 실행되지 않았습니다.") == 3
    assert client.get("/history/999999").status_code == 404


def test_stats_page_draws_charts(client: TestClient, history: History) -> None:
    login_page(client, "worker1", WORKER_PASSWORD)
    page = client.get("/history/stats")
    assert page.status_code == 200
    chart = re.search(r'data-chart="defect_types">(.*?)</section>', page.text, re.S)
    assert chart
    assert "<svg" in chart.group(1)
    assert "<title>긁힘 · metal_plate: 2</title>" in chart.group(1)
    generators = re.search(r'data-chart="generators">(.*?)</section>', page.text, re.S)
    assert generators
    assert "<title>매뉴얼 발췌 (오프라인, 모델 불필요): 3</title>" in generators.group(1)  # labels, not names
    assert "<title>llm: 1</title>" in generators.group(1)
    feedback = re.search(r'data-chart="feedback">(.*?)</section>', page.text, re.S)
    assert feedback
    assert "<title>5점: 1</title>" in feedback.group(1)
    assert "<title>1점: 0</title>" in feedback.group(1)
    assert re.search(r'data-stat="total"><div class="stat-value">6<', page.text)
    assert re.search(r'data-stat="score"><div class="stat-value">4.0<', page.text)
    # a product filter narrows every chart
    fabric = history.catalog.products["fabric"]
    narrowed = client.get(f"/history/stats?product_id={fabric}&lang=en")
    assert re.search(r'data-stat="total"><div class="stat-value">2<', narrowed.text)
    assert "Usefulness ratings" in narrowed.text
    empty = client.get("/history/stats?date_from=2020-01-01&date_to=2020-01-31&lang=ko")
    assert "이 기간에 표시할 데이터가 없습니다." in empty.text


def test_history_needs_login(client: TestClient) -> None:
    for url in ("/history", "/history/stats", "/history/1"):
        response = client.get(url, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")


def test_dashboard_numbers_match_the_database(
    client: TestClient, settings: Settings, history: History
) -> None:
    storage = client.app.state.storage  # type: ignore[attr-defined]
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        metal = history.catalog.products["metal_plate"]
        for index in range(3):
            catalog_service.upload_images(
                session,
                storage=storage,
                settings=settings,
                product_id=metal,
                kind="normal",
                defect_type_id=None,
                files=[(f"ok{index}.png", png_bytes(color=(index * 40, 90, 90)))],
                actor_id=None,
            )
        catalog_service.upload_images(
            session,
            storage=storage,
            settings=settings,
            product_id=metal,
            kind="defect",
            defect_type_id=history.catalog.defects["scratch"],
            files=[("s.png", png_bytes(color=(10, 10, 200)))],
            actor_id=None,
        )
        session.add(
            Manual(
                product_id=metal,
                file_name="m.pdf",
                object_key="manuals/m.pdf",
                size_bytes=10,
                checksum="x",
                status="indexed",
            )
        )
        session.commit()
        total = session.scalar(select(func.count()).select_from(Inspection))
        anomalies = session.scalar(
            select(func.count()).select_from(Inspection).where(Inspection.is_anomaly.is_(True))
        )
        completed = session.scalar(
            select(func.count()).select_from(Inspection).where(Inspection.completed_at.is_not(None))
        )
    login_page(client, "admin1", ADMIN_PASSWORD)
    page = client.get("/admin")
    assert page.status_code == 200
    html = page.text
    assert re.search(rf'data-stat="inspections"><div class="stat-value">{total}<', html)
    assert re.search(rf'data-stat="anomalies"><div class="stat-value">{anomalies}<', html)
    assert re.search(rf'data-stat="completed"><div class="stat-value">{completed}<', html)
    assert (total, anomalies, completed) == (7, 5, 4)
    assert "미조치 3건" in html
    assert re.search(r'data-stat="products"><div class="stat-value">2<', html)
    assert re.search(r'data-stat="score"><div class="stat-value">3.2<', html)  # (5+3+4+1)/4 = 3.25
    metal_row = _row(html, "data-product", "metal_plate")
    assert '<td data-col="normal">3</td>' in metal_row
    assert '<td data-col="defect">1</td>' in metal_row
    assert '<td data-col="defect_types">2</td>' in metal_row
    assert "1/1건 색인" in metal_row
    assert "미등록" in _row(html, "data-product", "fabric")
    # the 30-day chart counts the defect types of the last 30 days (the 40-day-old dent is not there)
    assert "<title>찍힘 · metal_plate: 1</title>" in html
    assert "<title>긁힘 · metal_plate: 2</title>" in html
    # the latest 10 inspections link to their detail pages
    assert f'href="/history/{history.ids["scratch_today"]}"' in html
    english = client.get("/admin?lang=en")
    assert "Defects found per type (last 30 days)" in english.text


def test_dashboard_is_for_admins(client: TestClient) -> None:
    login_page(client, "worker1", WORKER_PASSWORD)
    assert client.get("/admin").status_code == 403
    home = client.get("/")
    assert 'href="/history"' in home.text


def test_dashboard_renders_artifact_states_per_product(client: TestClient, history: History) -> None:
    """The states come from the engines; here they are constructed to check how each one is shown."""
    metal = history.catalog.products["metal_plate"]
    fabric = history.catalog.products["fabric"]
    states = [
        ArtifactState(
            kind="search_index",
            product_id=metal,
            state="current",
            built_at=datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
        ),
        ArtifactState(
            kind="anomaly_model",
            product_id=metal,
            state="stale",
            reasons=["errors.history_range_too_long"],  # any translated key with params
            params={"days": 9},
        ),
        ArtifactState(kind="manual_index", product_id=metal, state="failed"),
        ArtifactState(kind="search_index", product_id=fabric, state="missing"),
        ArtifactState(kind="anomaly_model", product_id=fabric, state="building"),
    ]
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        view = dashboard_service.dashboard(session, states=states)
    by_code = {row.product.code: row for row in view.products}
    assert view.artifacts[by_code["metal_plate"].product.id]["search_index"] is states[0]
    assert view.artifacts[by_code["fabric"].product.id]["manual_index"] is None
    for lang, words in (
        (
            "ko",
            {
                "current": "최신",
                "stale": "갱신 필요",
                "failed": "실패",
                "missing": "없음",
                "building": "생성 중",
            },
        ),
        (
            "en",
            {
                "current": "Current",
                "stale": "Stale",
                "failed": "Failed",
                "missing": "Missing",
                "building": "Building",
            },
        ),
    ):
        html = render_template(
            "admin/dashboard/dashboard_view.html", lang=lang, active="dashboard", view=view
        )
        metal_row = _row(html, "data-product", "metal_plate")
        fabric_row = _row(html, "data-product", "fabric")

        def cell(row: str, kind: str) -> str:
            match = re.search(rf'data-kind="{kind}">(.*?)</td>', row, re.S)
            assert match
            return match.group(1)

        assert words["current"] in cell(metal_row, "search_index")
        assert "2026-03-02" in cell(metal_row, "search_index")
        assert words["stale"] in cell(metal_row, "anomaly_model")
        assert ("9일" if lang == "ko" else "9 days") in cell(metal_row, "anomaly_model")
        assert words["failed"] in cell(metal_row, "manual_index")
        assert words["missing"] in cell(fabric_row, "search_index")
        assert words["building"] in cell(fabric_row, "anomaly_model")
        assert 'href="/admin/deploy/anomaly"' in cell(fabric_row, "anomaly_model")
