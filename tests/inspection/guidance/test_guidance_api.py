"""Guidance API: the right defect's manual sections with citations, fallbacks, generators, feedback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.catalog.service import get_model_settings
from app.db.tables import Inspection
from app.demo.catalog import PRODUCTS
from app.inspection.guidance.service import load_generators
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer
from tests.inspection.guidance.conftest import (
    GOOD_ANSWER as GOOD,
)
from tests.inspection.guidance.conftest import (
    AppFactory,
    ChatDouble,
    add_demo_product,
    make_inspection,
)
from tests.manual_library import install_library
from tests.ml._tiny_models import save_scripted_gpt2


def _sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.fixture
def indexed_client(client: TestClient) -> TestClient:
    install_library(client.app.state.services)  # type: ignore[attr-defined]
    return client


def test_each_defect_gets_its_own_cause_and_action_with_citations(
    indexed_client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    client = indexed_client
    pid, types = add_demo_product(client, admin_headers, demo_root, 0)
    spec = next(p for p in PRODUCTS if p.code == "metal_plate")
    for defect in spec.defects:
        inspection_id = make_inspection(
            client, worker_headers, product_id=pid, defect_type_id=types[defect.code]
        )
        response = client.post(
            f"/api/v1/inspections/{inspection_id}/guidance", json={}, headers=worker_headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["generator"] == "extractive"
        assert body["is_fallback"] is False
        assert body["has_manual"] is True
        sections = body["sections"]
        assert defect.name in sections["status"]
        assert any(cause[:20] in sections["cause"] for cause in defect.causes), (
            defect.code,
            sections["cause"],
        )
        assert any(action[:20] in sections["action"] for action in defect.actions), defect.code
        assert any(p[:20] in sections["prevention"] for p in defect.preventions), defect.code
        others = [c for d in spec.defects if d.code != defect.code for c in d.causes]
        assert not any(other[:20] in sections["cause"] for other in others), defect.code
        assert body["citations"]
        for citation in body["citations"]:
            assert citation["page"] >= 1
            assert citation["url"] == f"/api/v1/manuals/{citation['manual_id']}/file#page={citation['page']}"
            assert citation["manual_name"].endswith(".pdf")

    stored = client.get(f"/api/v1/inspections/{inspection_id}", headers=worker_headers).json()
    assert stored["status"] == "guided"
    assert stored["generator"] == "extractive"
    assert stored["guidance"]["sections"] == sections
    assert "guidance" in stored["timings_ms"]


def test_defect_type_argument_overrides_the_verdict_and_must_belong_to_the_product(
    indexed_client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    client = indexed_client
    pid, types = add_demo_product(client, admin_headers, demo_root, 0)
    other_pid, other_types = add_demo_product(client, admin_headers, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["scratch"])
    body = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance",
        json={"defect_type_id": types["dent"]},
        headers=worker_headers,
    ).json()
    assert body["defect_type_id"] == types["dent"]
    assert "찍힘" in body["sections"]["status"]
    wrong = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance",
        json={"defect_type_id": other_types["snag"]},
        headers=worker_headers,
    )
    assert wrong.status_code == 422
    assert "다른 제품" in wrong.json()["detail"]
    assert other_pid != pid


def test_unknown_defect_gets_general_sections_only(
    indexed_client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    client = indexed_client
    pid, _ = add_demo_product(client, admin_headers, demo_root, 0)
    inspection_id = make_inspection(client, worker_headers, product_id=pid, defect_type_id=None)
    body = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={}, headers=worker_headers
    ).json()
    assert "미확인" in body["sections"]["status"]
    spec = next(p for p in PRODUCTS if p.code == "metal_plate")
    every_cause = [c for d in spec.defects for c in d.causes]
    assert not any(cause[:20] in body["sections"]["cause"] for cause in every_cause)


def test_product_without_a_manual_says_so_and_still_reports_the_facts(
    indexed_client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    client = indexed_client
    pid, types = add_demo_product(client, admin_headers, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["hole"])
    response = client.post(f"/api/v1/inspections/{inspection_id}/guidance", json={}, headers=worker_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["has_manual"] is False
    assert body["citations"] == []
    assert "매뉴얼이 없" in body["sections"]["cause"]
    assert "91.0%" in body["sections"]["status"]  # the similarity fact is kept


def test_unknown_generator_and_bad_ids_are_clear_errors(
    indexed_client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    client = indexed_client
    pid, types = add_demo_product(client, admin_headers, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["hole"])
    unknown = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={"generator": "gpt-99"}, headers=worker_headers
    )
    assert unknown.status_code == 422
    assert "알 수 없는 생성기" in unknown.json()["detail"]
    english = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance?lang=en",
        json={"generator": "gpt-99"},
        headers=worker_headers,
    )
    assert "Unknown generator" in english.json()["detail"]
    missing = client.post("/api/v1/inspections/9999/guidance", json={}, headers=worker_headers)
    assert missing.status_code == 404
    unavailable = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={"generator": "openai"}, headers=admin_headers
    )
    assert unavailable.status_code == 422
    assert "openai" in unavailable.json()["detail"]


def test_generators_list_marks_default_availability_and_worker_permission(
    make_client: AppFactory, chat_server: str
) -> None:
    client = make_client(openai_base_url=chat_server, openai_model="good")
    worker = bearer(client, "worker1", WORKER_PASSWORD)
    listed = {g["name"]: g for g in client.get("/api/v1/generators", headers=worker).json()}
    assert listed["extractive"]["available"] is True
    assert listed["extractive"]["is_default"] is True
    assert listed["extractive"]["is_allowed"] is True
    assert listed["openai:good"]["available"] is True
    assert listed["openai:good"]["is_allowed"] is False  # not in the allowed list for workers
    preset = listed["hyperclovax-seed-1.5b"]
    assert preset["available"] is False
    assert "모델 가중치가 없습니다" in preset["reason"]
    assert listed["openai:good"]["label"] == "good (OpenAI 호환 서버)"
    english = {g["name"]: g for g in client.get("/api/v1/generators?lang=en", headers=worker).json()}
    assert english["hyperclovax-seed-1.5b"]["reason"].startswith("Model weights not found")
    assert english["extractive"]["label"] == "Manual excerpts (offline, no model)"
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    assert client.get("/api/v1/generators", headers=admin).json()[0]["is_allowed"] is True


def test_worker_cannot_use_a_generator_that_is_not_allowed(
    make_client: AppFactory, chat_server: str, demo_root: Path
) -> None:
    client = make_client(openai_base_url=chat_server, openai_model="good")
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    worker = bearer(client, "worker1", WORKER_PASSWORD)
    pid, types = add_demo_product(client, admin, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, worker, product_id=pid, defect_type_id=types["hole"])
    refused = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={"generator": "openai:good"}, headers=worker
    )
    assert refused.status_code == 403
    assert "허용되지 않은" in refused.json()["detail"]


def test_openai_compatible_answer_is_used_and_cited(
    make_client: AppFactory, chat_server: str, demo_root: Path
) -> None:
    client = make_client(openai_base_url=chat_server, openai_model="good", llm_timeout_s=5)
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    pid, types = add_demo_product(client, admin, demo_root, 0)
    inspection_id = make_inspection(client, admin, product_id=pid, defect_type_id=types["scratch"])
    manual_id = client.get(f"/api/v1/products/{pid}/manuals", headers=admin).json()[0]["id"]
    page = 2
    ChatDouble.answer = GOOD.format(manual_id=manual_id, page=page)
    body = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={"generator": "openai:good"}, headers=admin
    ).json()
    assert body["generator"] == "openai:good"
    assert body["is_fallback"] is False
    assert "이송 롤러" in body["sections"]["cause"]
    assert "<manual_data" in ChatDouble.bodies[-1]["messages"][1]["content"]


def test_slow_or_down_llm_server_falls_back_to_extractive_marked(
    make_client: AppFactory, chat_server: str, demo_root: Path
) -> None:
    slow = make_client(openai_base_url=chat_server, openai_model="slow", llm_timeout_s=0.5)
    admin = bearer(slow, "admin1", ADMIN_PASSWORD)
    pid, types = add_demo_product(slow, admin, demo_root, 0)
    inspection_id = make_inspection(slow, admin, product_id=pid, defect_type_id=types["scratch"])
    body = slow.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={"generator": "openai:slow"}, headers=admin
    ).json()
    assert body["is_fallback"] is True
    assert body["fallback_reason"] == "timeout"
    assert body["generator"] == "extractive"
    assert body["requested_generator"] == "openai:slow"
    spec = next(p for p in PRODUCTS if p.code == "metal_plate")
    assert any(c[:20] in body["sections"]["cause"] for c in spec.defects[0].causes)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = make_client(openai_base_url=f"http://127.0.0.1:{port}/v1", openai_model="m", llm_timeout_s=2)
    admin = bearer(down, "admin1", ADMIN_PASSWORD)
    pid, types = add_demo_product(down, admin, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(down, admin, product_id=pid, defect_type_id=types["hole"])
    body = down.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={"generator": "openai:m"}, headers=admin
    ).json()
    assert body["is_fallback"] is True
    assert body["fallback_reason"] == "unavailable"


def test_streaming_sends_pieces_then_the_stored_result(
    make_client: AppFactory, chat_server: str, demo_root: Path
) -> None:
    client = make_client(openai_base_url=chat_server, openai_model="good", llm_timeout_s=5)
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    pid, types = add_demo_product(client, admin, demo_root, 0)
    inspection_id = make_inspection(client, admin, product_id=pid, defect_type_id=types["scratch"])
    ChatDouble.answer = GOOD.format(manual_id=1, page=2)
    response = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance/stream",
        json={"generator": "openai:good"},
        headers=admin,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse(response.text)
    assert events[0] == ("start", {"generator": "openai:good", "streaming": True})
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert len(deltas) > 5
    assert "".join(deltas) == ChatDouble.answer
    name, result = events[-1]
    assert name == "result"
    assert "이송 롤러" in result["sections"]["cause"]
    stored = client.get(f"/api/v1/inspections/{inspection_id}", headers=admin).json()
    assert stored["guidance"]["sections"] == result["sections"]
    assert stored["status"] == "guided"

    extractive = client.post(f"/api/v1/inspections/{inspection_id}/guidance/stream", json={}, headers=admin)
    events = _sse(extractive.text)
    assert [name for name, _ in events] == ["start", "result"]
    assert events[-1][1]["generator"] == "extractive"


def test_local_transformers_model_answers_through_the_api(
    make_client: AppFactory, demo_root: Path, tmp_path: Path
) -> None:
    client = make_client(models_dir=tmp_path / "models")
    save_scripted_gpt2(
        tmp_path / "models" / "llm" / "tiny",
        [
            "\n## 불량 현황\n",
            "긁힘 확인.",
            "\n## 원인 분석\n",
            "롤러 이물",
            "\n## 대응 방안\n",
            "로트 격리",
            "\n## 예방 조치\n",
            "롤러 청소",
        ],
    )
    services = client.app.state.services  # type: ignore[attr-defined]
    load_generators(services)
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    pid, types = add_demo_product(client, admin, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, admin, product_id=pid, defect_type_id=types["hole"])
    body = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={"generator": "local:tiny"}, headers=admin
    ).json()
    assert body["generator"] == "local:tiny", body
    assert body["is_fallback"] is False
    assert body["sections"]["cause"] == "롤러 이물"


def test_feedback_completes_the_inspection_and_checks_the_score(
    indexed_client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    client = indexed_client
    pid, types = add_demo_product(client, admin_headers, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["hole"])
    for bad in (0, 6):
        refused = client.post(
            f"/api/v1/inspections/{inspection_id}/feedback",
            json={"action_taken": "격리", "score": bad},
            headers=worker_headers,
        )
        assert refused.status_code == 422
        assert "1에서 5" in refused.json()["detail"]
    assert (
        client.get(f"/api/v1/inspections/{inspection_id}", headers=worker_headers).json()["status"]
        == "searched"
    )
    saved = client.post(
        f"/api/v1/inspections/{inspection_id}/feedback",
        json={"action_taken": "로트 격리 후 롤러 청소", "score": 4},
        headers=worker_headers,
    )
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["status"] == "completed"
    assert body["feedback_score"] == 4
    assert body["action_taken"] == "로트 격리 후 롤러 청소"
    assert body["completed_at"] is not None
    me = client.get("/api/v1/auth/me", headers=worker_headers).json()
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        assert session.get(Inspection, inspection_id).feedback_by == me["id"]
    missing = client.post(
        "/api/v1/inspections/9999/feedback", json={"action_taken": "", "score": 3}, headers=worker_headers
    )
    assert missing.status_code == 404


def test_unusable_default_generator_answers_extractive_marked_as_fallback(
    indexed_client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    client = indexed_client
    pid, types = add_demo_product(client, admin_headers, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["hole"])
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        settings_row = get_model_settings(session)
        settings_row.default_generator = "exaone-3.5-2.4b"  # chosen earlier; its weights are gone now
        session.commit()
    body = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={}, headers=worker_headers
    ).json()
    assert body["generator"] == "extractive"
    assert body["is_fallback"] is True
    assert body["fallback_reason"] == "unavailable"
    assert body["requested_generator"] == "exaone-3.5-2.4b"


def test_anomaly_facts_reach_the_answer_and_the_page_shows_the_comparison(
    indexed_client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    client = indexed_client
    pid, types = add_demo_product(client, admin_headers, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["hole"])
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Inspection, inspection_id)
        row.anomaly_score, row.is_anomaly = 0.82, True
        row.anomaly_result = {
            "score": 0.82,
            "threshold": 0.5,
            "is_anomaly": True,
            "regions": [{"x": 2, "y": 2, "width": 10, "height": 10, "score": 0.9}],
            "reference_image": {"id": 1, "image_url": "/api/v1/images/1/file"},
            "overlay_url": f"/api/v1/inspections/{inspection_id}/files/overlay.png",
        }
        session.commit()
    status = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={}, headers=worker_headers
    ).json()["sections"]["status"]
    assert "이상 점수: 0.820" in status
    assert "임계값 0.500" in status
    assert "좌측 상단" in status  # the region sits in the top-left of the 64x64 photo
