"""The OpenAI-compatible generator against a real llama.cpp server and a real small model (SmolLM2-135M).

Each call asks for a handful of tokens: the point is the real HTTP/SSE protocol, the parser and the
fallbacks on a real model's output, not the answer's quality.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.ml.grounding import ground_result
from app.ml.guidance.fallback import generate_with_fallback
from app.ml.guidance.openai_http import OpenAICompatibleGenerator
from app.ml.guidance.types import GeneratorError, GuidanceRequest, Passage
from app.ml.llm_server import LlamaServer
from tests.llm_server import ALIAS, llama_server

PASSAGES = [
    Passage(3, 2, "긁힘 > 발생 원인", "이송 롤러 표면에 박힌 금속 칩이 판 표면을 끌면서 긁힘을 만든다."),
    Passage(3, 2, "긁힘 > 조치 가이드", "로트를 격리하고 깊이가 0.05 mm 이상이면 불합격이다."),
    Passage(3, 3, "긁힘 > 예방 조치", "이송 롤러를 교대당 1회 청소한다."),
]
# llama.cpp's GBNF grammar holds even a 135M model to the four headings; the lines are the model's own
# (Latin letters: SmolLM2's Korean is poor and costs several tokens a syllable).
FOUR_SECTIONS = (
    'root ::= "## 불량 현황\\n" line "## 원인 분석\\n" line "## 대응 방안\\n" line "## 예방 조치\\n" line\n'
    'line ::= "- " [A-Za-z] [a-zA-Z0-9 ,.%]{8,40} "\\n"\n'
)


def request(**kw: object) -> GuidanceRequest:
    base: dict[str, object] = {
        "product_code": "metal_plate",
        "product_name": "금속 판재",
        "defect_code": "scratch",
        "defect_name": "긁힘",
        "similarity": 0.91,
        "passages": PASSAGES,
    }
    base.update(kw)
    return GuidanceRequest(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    yield from llama_server()


def generator(server: LlamaServer, **kw: object) -> OpenAICompatibleGenerator:
    options: dict[str, object] = {"timeout_s": 120.0, "max_tokens": 12, "temperature": 0.0}
    options.update(kw)
    return OpenAICompatibleGenerator(server.base_url, ALIAS, **options)  # type: ignore[arg-type]


def test_a_server_slower_than_the_timeout_falls_back_as_timeout(server: LlamaServer) -> None:
    # ~1,800 prompt tokens take the single-threaded server well over 0.3 s before the first byte. First in
    # the module: the server finishes the abandoned prompt while the next test's identical prefix waits.
    result = generate_with_fallback(generator(server, timeout_s=0.3, max_tokens=4), request(), timeout_s=30)
    assert result.is_fallback is True
    assert result.fallback_reason == "timeout"
    assert "금속 칩" in result.sections.cause


def test_a_model_that_ignores_the_format_falls_back_to_the_manual_marked_streamed_or_not(
    server: LlamaServer,
) -> None:
    gen = generator(server)
    pieces = list(gen.stream(request()))
    assert len(pieces) >= 3  # token by token over server-sent events, ended by [DONE]
    result = generate_with_fallback(gen, request(), timeout_s=60)
    # 12 tokens of a 135M model hold no four sections: the manual's own text answers, marked.
    assert result.is_fallback is True
    assert result.fallback_reason == "unparseable"
    assert result.generator == "extractive"
    assert result.requested_generator == f"openai:{ALIAS}"
    assert result.raw_text == "".join(pieces)  # greedy decoding: the same real text both ways
    assert "금속 칩" in result.sections.cause
    assert ground_result(result, request()).unsupported == {
        "status": [],
        "cause": [],
        "action": [],
        "prevention": [],
    }


def test_the_section_parser_and_the_grounding_check_run_on_real_output(server: LlamaServer) -> None:
    # English requested: SmolLM2 writes little Korean, and the parser rejects a "Korean" answer without it.
    req = request(language="en")
    # Enough tokens for the grammar to end by itself: a cut answer would miss its last heading.
    gen = generator(server, max_tokens=400, extra_body={"grammar": FOUR_SECTIONS})
    result = generate_with_fallback(gen, req, timeout_s=120)
    assert result.is_fallback is False, result.fallback_reason
    assert result.generator == f"openai:{ALIAS}"
    raw = result.raw_text or ""
    for name, heading in (("status", "## 불량 현황"), ("cause", "## 원인 분석")):
        assert heading in raw
        body = raw.split(heading, 1)[1].split("##", 1)[0].strip()
        assert getattr(result.sections, name) == body.lstrip("- ").strip() or body in getattr(
            result.sections, name
        )
    grounded = ground_result(result, req)
    assert grounded.unsupported is not None
    for name, flagged in grounded.unsupported.items():
        for sentence in flagged:
            assert sentence in getattr(grounded.sections, name)


def test_a_server_that_dies_mid_stream_is_an_error_not_a_short_answer(server: LlamaServer) -> None:
    # Last in this module: it kills the module's server.
    gen = generator(server, max_tokens=400)
    pieces: list[str] = []

    def read_and_kill_after_three_pieces() -> None:
        for piece in gen.stream(request()):
            pieces.append(piece)
            if len(pieces) == 3:
                server.kill()

    with pytest.raises(GeneratorError) as failure:
        read_and_kill_after_three_pieces()
    assert failure.value.reason == "unavailable"
    assert len(pieces) >= 3
    assert not server.is_running()
