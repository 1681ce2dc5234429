"""What the worker sees of the grounding check and the polish around it (API, page, history)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD, bearer
from tests.inspection.guidance.conftest import AppFactory, ChatDouble, add_demo_product, make_inspection
from tests.manual_library import install_library

INVENTED = "압력을 3.0 bar로 낮추고 양식 QF-999에 기록합니다."


def _first_line(section: str) -> str:
    return next(line for line in section.split("\n") if line.startswith("- "))[2:]


def test_invented_numbers_are_listed_marked_on_the_page_and_the_manual_text_is_beside_them(
    make_client: AppFactory, chat_server: str, demo_root: Path
) -> None:
    client = make_client(openai_base_url=chat_server, openai_model="good", llm_timeout_s=5)
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    pid, types = add_demo_product(client, admin, demo_root, 0)
    inspection_id = make_inspection(client, admin, product_id=pid, defect_type_id=types["scratch"])
    manual = client.post(f"/api/v1/inspections/{inspection_id}/guidance", json={}, headers=admin).json()
    assert manual["unsupported"] == {"status": [], "cause": [], "action": [], "prevention": []}
    assert manual["manual_sections"] is None
    sections = manual["sections"]
    cause, action, prevention = (_first_line(sections[n]) for n in ("cause", "action", "prevention"))
    assert re.search(r"\[자료 \d+\]$", cause)  # per-answer numbers, not database ids
    assert "[매뉴얼" not in "".join(manual["sections"].values())
    action_ref = re.search(r"\[자료 \d+\]", action)
    assert action_ref is not None
    invented = f"{INVENTED} {action_ref.group(0)}"
    ChatDouble.answer = (
        f"## 불량 현황\n- 긁힘 불량이 확인되었습니다.\n## 원인 분석\n- {cause}\n"
        f"## 대응 방안\n- {action}\n- {invented}\n## 예방 조치\n- {prevention}\n"
    )
    body = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance", json={"generator": "openai:good"}, headers=admin
    ).json()
    assert body["is_fallback"] is False
    assert body["unsupported"] == {"status": [], "cause": [], "action": [invented], "prevention": []}
    assert body["manual_sections"]["cause"] == manual["sections"]["cause"]  # the manual's own text beside it
    refs = {c["ref"] for c in body["citations"]}
    assert int(action_ref.group(0)[4:-1]) in refs
    file_name = client.get(f"/api/v1/products/{pid}/manuals", headers=admin).json()[0]["file_name"]
    assert file_name.endswith(".pdf")
    assert all(c["manual_name"] == file_name for c in body["citations"])  # the file, not a database id
    stored = client.get(f"/api/v1/inspections/{inspection_id}", headers=admin).json()["guidance"]
    assert stored["unsupported"]["action"] == [invented]

    page = client.get(f"/inspect/{inspection_id}/guidance", headers=admin).text
    marks = re.findall(r'<mark class="gd-unsupported"[^>]*>([^<]*)</mark>', page)
    assert marks == [invented]
    assert "문장 1개는 인용한 매뉴얼에서 근거" in page
    assert "매뉴얼 원문과 나란히 보기" in page
    assert re.search(rf"\[자료 \d+\]</span> <a [^>]*>{re.escape(file_name)} · \d+쪽", page)  # the legend
    assert "(OpenAI 호환 서버)</strong>" in page  # the generator in words, not "openai:good"


def test_english_mode_writes_the_status_lines_in_english(
    client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    install_library(client.app.state.services)  # type: ignore[attr-defined]
    pid, types = add_demo_product(client, admin_headers, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["hole"])
    body = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance?lang=en", json={}, headers=worker_headers
    ).json()
    status = body["sections"]["status"]
    assert "Product:" in status
    assert "Verdict:" in status
    assert "similarity to past defect images 91.0%" in status
    assert "제품:" not in status
    assert body["generator_label"] == "Manual excerpts (offline, no model)"


def test_feedback_needs_an_action_or_an_explicit_no_action_and_history_says_which(
    client: TestClient, admin_headers: dict[str, str], worker_headers: dict[str, str], demo_root: Path
) -> None:
    install_library(client.app.state.services)  # type: ignore[attr-defined]
    pid, types = add_demo_product(client, admin_headers, demo_root, 1, with_manual=False)
    first = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["hole"])
    client.post(f"/api/v1/inspections/{first}/guidance", json={}, headers=worker_headers)
    empty = client.post(
        f"/api/v1/inspections/{first}/feedback",
        json={"action_taken": "  ", "score": 4},
        headers=worker_headers,
    )
    assert empty.status_code == 422
    assert "조치하지 않음" in empty.json()["detail"]
    assert client.get(f"/api/v1/inspections/{first}", headers=worker_headers).json()["status"] == "guided"
    none = client.post(
        f"/api/v1/inspections/{first}/feedback",
        json={"action_taken": "", "no_action": True, "score": 2},
        headers=worker_headers,
    )
    assert none.status_code == 200
    assert none.json()["status"] == "completed"
    second = make_inspection(client, worker_headers, product_id=pid, defect_type_id=types["hole"])
    client.post(
        f"/api/v1/inspections/{second}/feedback",
        json={"action_taken": "로트 격리", "score": 5},
        headers=worker_headers,
    )
    history = client.get("/history", headers=worker_headers).text
    assert history.count("조치 없음") == 1
    assert history.count(">조치 완료</span>") == 1
    assert "매뉴얼 발췌 (오프라인, 모델 불필요)" in history  # generator labels, not "extractive"
    assert "<td>extractive</td>" not in history
    stats = client.get("/history/stats", headers=worker_headers).text
    assert "답변 유용도" in stats
    assert "만족도" not in stats
