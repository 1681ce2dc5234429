"""Grounding check: invented numbers, units and codes are flagged per section; the manual's text is not."""

from __future__ import annotations

from app.ml.grounding import check_answer, claims, ground_result, renumber_citations, sentences
from app.ml.guidance.extractive import ExtractiveGenerator
from app.ml.guidance.prompt import result_from_text
from app.ml.guidance.types import GuidanceRequest, Passage

CAUSE = "이송 롤러 표면에 박힌 금속 칩이 판 표면을 끌면서 길고 가는 선형 긁힘을 만든다."
ACTION = (
    "긁힘 깊이가 0.05 mm 이상이면 불합격이다. 같은 로트의 판 10매를 추가 검사하고 양식 QF-102에 기록한다."
)
PREVENTION = "이송 롤러 표면 청소 주기를 교대당 1회로 하고 청소 기록표에 서명한다."
PASSAGES = [
    Passage(12, 2, "긁힘 > 발생 원인", CAUSE),
    Passage(12, 2, "긁힘 > 조치 가이드", ACTION),
    Passage(12, 3, "긁힘 > 예방 조치", PREVENTION),
]


def request(**kw: object) -> GuidanceRequest:
    base: dict[str, object] = {
        "product_code": "metal_plate",
        "product_name": "금속 판재",
        "defect_code": "scratch",
        "defect_name": "긁힘",
        "similarity": 0.873,
        "anomaly_score": 0.734,
        "anomaly_threshold": 0.5,
        "is_anomaly": True,
        "passages": PASSAGES,
    }
    base.update(kw)
    return GuidanceRequest(**base)  # type: ignore[arg-type]


def test_invented_number_unit_and_code_are_flagged_in_their_section() -> None:
    answer = (
        "## 불량 현황\n- 금속 판재에서 긁힘이 유사도 87.3%로 확인되었습니다. 이상 점수는 0.73입니다.\n"
        "## 원인 분석\n- 이송 롤러 표면에 박힌 금속 칩이 판 표면을 끌어 긁힘을 만듭니다. [자료 1]\n"
        "## 대응 방안\n- 긁힘 깊이가 0.05 mm 이상이면 불합격 처리합니다. [자료 2]\n"
        "- 압력을 3.0 bar로 낮추고 양식 QF-999에 기록합니다. [자료 2]\n"
        "- 같은 로트의 판 10매를 추가 검사합니다. [자료 2]\n"
        "## 예방 조치\n- 롤러 청소 주기를 교대당 1회로 합니다. [자료 3]\n"
        "- 롤러 청소 주기를 교대당 5회로 합니다. [자료 3]\n"
    )
    result = ground_result(result_from_text(answer, request(), generator="openai:m", elapsed_ms=5), request())
    assert result.unsupported == {
        "status": [],
        "cause": [],
        "action": ["압력을 3.0 bar로 낮추고 양식 QF-999에 기록합니다. [자료 2]"],
        "prevention": ["롤러 청소 주기를 교대당 5회로 합니다. [자료 3]"],
    }


def test_number_from_another_passage_than_the_cited_one_is_not_support() -> None:
    sections = {
        "status": "긁힘",
        "cause": "금속 칩이 판 표면에 선형 긁힘을 만든다.",
        # 0.05 mm is in passage 2, not in passage 3 which this sentence cites.
        "action": "긁힘 깊이가 0.05 mm 이상이면 불합격이다. [자료 3]",
        "prevention": "이송 롤러 표면 청소 주기를 교대당 1회로 한다. [자료 3]",
    }
    report = check_answer(sections, PASSAGES, [])  # type: ignore[arg-type]
    assert report.unsupported["action"] == ["긁힘 깊이가 0.05 mm 이상이면 불합격이다. [자료 3]"]
    assert report.missing_claims == 1
    assert report.supported_share == 3 / 4


def test_a_sentence_unrelated_to_its_passages_is_flagged_but_saying_nothing_is_found_is_not() -> None:
    sections = {
        "status": "긁힘 확인",
        "cause": "작업장의 조명이 어두워 작업자가 피로를 느끼기 때문입니다.",
        "action": "매뉴얼에 해당 내용이 없습니다.",
        "prevention": "이송 롤러 표면 청소 주기를 지킵니다.",
    }
    report = check_answer(sections, PASSAGES, [])  # type: ignore[arg-type]
    assert report.unsupported["cause"] == ["작업장의 조명이 어두워 작업자가 피로를 느끼기 때문입니다."]
    assert report.unsupported["action"] == []
    assert report.unsupported["prevention"] == []


def test_status_numbers_are_checked_against_the_inspection_facts() -> None:
    answer = (
        "## 불량 현황\n- 유사도 87%, 이상 점수 0.734, 이상 영역 7곳입니다.\n"
        "## 원인 분석\n- 금속 칩이 판 표면을 끌면서 긁힘을 만든다. [자료 1]\n"
        "## 대응 방안\n- 판 10매를 추가 검사한다. [자료 2]\n"
        "## 예방 조치\n- 청소 주기를 교대당 1회로 한다. [자료 3]\n"
    )
    req = request(regions=[{"bbox": [0.1, 0.1, 0.2, 0.2]}])
    result = ground_result(result_from_text(answer, req, generator="m", elapsed_ms=1), req)
    assert result.unsupported is not None
    assert result.unsupported["status"] == ["유사도 87%, 이상 점수 0.734, 이상 영역 7곳입니다."]


def test_extractive_answer_has_empty_lists_and_per_answer_citation_numbers() -> None:
    req = request()
    result = ground_result(ExtractiveGenerator().generate(req), req)
    assert result.unsupported == {"status": [], "cause": [], "action": [], "prevention": []}
    text = "\n".join(result.sections.as_dict().values())
    assert "[매뉴얼 12" not in text  # the database id is gone
    # cause and action share page 2: each sentence cites its own passage, not the page's first one
    assert result.sections.cause.rstrip().endswith("[자료 1]")
    assert "[자료 2]" in result.sections.action
    assert "[자료 1]" not in result.sections.action
    assert "[자료 3]" in result.sections.prevention
    assert {c.ref for c in result.citations} == {1, 2, 3}


def test_claims_and_sentences_ignore_citation_tags_and_bullets() -> None:
    assert [c.text for c in claims("깊이 0.05 mm [자료 2] 양식 QF-102")] == ["QF-102", "0.05 mm"]
    assert sentences("(매뉴얼 항목: 긁힘)\n- 첫 문장이다. 둘째 문장이다. [자료 1]\n1. 셋째") == [
        "첫 문장이다.",
        "둘째 문장이다. [자료 1]",
        "셋째",
    ]
    renumbered = renumber_citations("확인 [매뉴얼 12 p.3] [매뉴얼 99 p.1]", PASSAGES)
    assert renumbered == "확인 [자료 3] [매뉴얼 99 p.1]"
