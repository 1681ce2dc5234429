"""In a real browser: a generated answer streams in, the sentence with an invented number is marked, and
the worker opens the manual's own text beside it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from app.core.config import Settings
from tests.browser.conftest import screenshot
from tests.browser.test_guidance_page import PASSWORD, _api, _prepare, _seed_users
from tests.inspection.guidance.conftest import ChatDouble

pytestmark = pytest.mark.browser
INVENTED = "압력을 3.0 bar로 낮추고 양식 QF-999에 기록합니다."


@pytest.fixture
def chat_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatDouble)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture
def settings(settings: Settings, chat_url: str) -> Settings:
    """The app talks to an OpenAI-compatible double whose answer the test writes."""
    return settings.model_copy(update={"openai_base_url": chat_url, "openai_model": "good"})


def test_unsupported_sentence_is_marked_and_the_manual_text_opens_beside_it(
    live_server: tuple[str, Settings], browser_page: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base, settings = live_server
    _seed_users(settings)
    inspection_id = _prepare(base, settings, tmp_path_factory.getbasetemp() / "demo-manuals")
    admin = _api(base, "admin1")
    manual = admin.post(f"/api/v1/inspections/{inspection_id}/guidance", json={}).json()["sections"]
    lines = {n: next(x for x in manual[n].split("\n") if x.startswith("- ")) for n in manual}
    ref = re.search(r"\[자료 \d+\]", lines["action"])
    assert ref is not None
    invented = f"{INVENTED} {ref.group(0)}"
    ChatDouble.answer = (
        f"## 불량 현황\n- 긁힘 불량이 확인되었습니다.\n## 원인 분석\n{lines['cause']}\n"
        f"## 대응 방안\n{lines['action']}\n- {invented}\n## 예방 조치\n{lines['prevention']}\n"
    )
    page = browser_page
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin1")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{base}/inspect/{inspection_id}/guidance?generator=openai:good")
    page.wait_for_selector("#gd-answer[data-state=done]", timeout=60_000)
    marks = page.locator("[data-section=action] mark.gd-unsupported")
    assert marks.count() == 1
    assert marks.first.inner_text().startswith(INVENTED)
    assert page.locator("[data-section=cause] mark").count() == 0
    assert "1개" in page.inner_text("#gd-unsupported")
    assert "good (OpenAI 호환 서버)" in page.inner_text("#gd-meta")
    legend = page.locator("#gd-citations li").first.inner_text()
    assert re.match(r"\[자료 \d+\] manual\.pdf · \d+쪽", legend)
    page.click("#gd-manual summary")
    manual_cause = page.locator("[data-manual-section=cause]")
    assert manual_cause.is_visible()
    assert lines["cause"][2:] in manual_cause.inner_text()
    answer_box = page.locator("#gd-sections").bounding_box()
    manual_box = page.locator("#gd-manual").bounding_box()
    assert manual_box["x"] > answer_box["x"] + answer_box["width"] - 1  # beside it, not below
    screenshot(page, "guidance-unsupported-marked")
