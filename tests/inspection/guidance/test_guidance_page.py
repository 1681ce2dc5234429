"""Guidance page without JavaScript: answer written by the form, escaped, feedback saved with confirmation."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from app.db.tables import Inspection
from tests.conftest import WORKER_PASSWORD
from tests.inspection.guidance.conftest import add_demo_product, make_inspection
from tests.manual_library import install_library


def _login_page(client: TestClient, username: str, password: str) -> str:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post(
        "/login",
        data={"username": username, "password": password, "next": "/", "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    return str(client.cookies.get("dl_csrf"))


def test_page_writes_the_answer_and_saves_the_record(
    client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    install_library(client.app.state.services)  # type: ignore[attr-defined]
    pid, types = add_demo_product(client, admin_headers, demo_root, 0)
    inspection_id = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["scratch"])
    csrf = _login_page(client, "worker1", WORKER_PASSWORD)

    page = client.get(f"/inspect/{inspection_id}/guidance")
    assert page.status_code == 200
    assert 'data-auto-start="true"' in page.text  # nothing stored yet: the script starts writing
    assert "/static/js/guidance.js" in page.text

    written = client.post(
        f"/inspect/{inspection_id}/guidance", data={"generator": "extractive", "csrf_token": csrf}
    )
    assert written.status_code == 200
    assert 'data-auto-start="false"' in written.text
    assert "원인 분석" in written.text
    assert "/file#page=" in written.text

    # The answer is text, never markup: a manual line with HTML is shown escaped.
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        row.guidance = {
            **row.guidance,
            "sections": {**row.guidance["sections"], "cause": "<script>x()</script>"},
        }
        session.commit()
    assert "&lt;script&gt;x()&lt;/script&gt;" in client.get(f"/inspect/{inspection_id}/guidance").text

    no_score = client.post(
        f"/inspect/{inspection_id}/guidance/feedback",
        data={"action_taken": "로트 격리", "csrf_token": csrf},
    )
    assert no_score.status_code == 422
    assert "유용도 점수를 선택하세요" in no_score.text
    assert "로트 격리" in no_score.text  # what the worker typed is kept

    saved = client.post(
        f"/inspect/{inspection_id}/guidance/feedback",
        data={"action_taken": "로트 격리", "score": "5", "csrf_token": csrf},
    )
    assert saved.status_code == 200
    assert "검사가 완료되었습니다" in saved.text
    assert 'href="/history"' in saved.text
    assert (
        client.get(f"/api/v1/inspections/{inspection_id}", headers=worker_headers).json()["feedback_score"]
        == 5
    )


def test_missing_inspection_page_is_a_404_page(client: TestClient) -> None:
    _login_page(client, "worker1", WORKER_PASSWORD)
    response = client.get("/inspect/424242/guidance")
    assert response.status_code == 404
    assert "검사 기록" in response.text


def test_page_shows_the_reference_image_and_overlay_of_the_anomaly_step(
    client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    install_library(client.app.state.services)  # type: ignore[attr-defined]
    pid, types = add_demo_product(client, admin_headers, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["hole"])
    _login_page(client, "worker1", WORKER_PASSWORD)
    assert "이상 탐지 단계를 실행하지 않아" in client.get(f"/inspect/{inspection_id}/guidance").text
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        row.anomaly_result = {
            "reference_image": {"id": 7, "image_url": "/api/v1/images/7/file"},
            "overlay_url": f"/api/v1/inspections/{inspection_id}/files/overlay.png",
        }
        session.commit()
    page = client.get(f"/inspect/{inspection_id}/guidance").text
    assert 'src="/api/v1/images/7/file"' in page
    assert f'src="/api/v1/inspections/{inspection_id}/files/overlay.png"' in page
    assert "이상 탐지 단계를 실행하지 않아" not in page
