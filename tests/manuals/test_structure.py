"""Structure of manuals in every layout family: sections found and mapped to defect types, cause / action /
prevention right (a ground-truth phrase present, no other part's phrase), absent parts empty. Fixtures are
generated in the test (bench/manual_corpus.py); the real seed manuals are read from ../shared/seeds."""

from __future__ import annotations

import pytest

from app.manuals.document import DocLine
from app.manuals.mapping import DefectLabel, map_sections, name_similarity
from app.manuals.structure import parse_structure, part_kind
from app.ml.guidance.extractive import ExtractiveGenerator
from app.ml.guidance.types import GuidanceRequest, Passage
from bench.manual_bench import score_structure, understand
from bench.manual_corpus import (
    LAYOUTS,
    SEEDS_DIR,
    build_layout,
    demo_manuals,
    demo_product_manuals,
    seed_manuals,
)


@pytest.mark.parametrize("layout", LAYOUTS, ids=[x.name for x in LAYOUTS])
def test_every_layout_family_is_understood(layout: object) -> None:
    manual = build_layout(layout)  # type: ignore[arg-type]
    score = score_structure(manual, understand(manual))
    assert score.mapped == score.defects, score.errors
    assert score.parts_right == score.parts, score.errors


@pytest.mark.skipif(not SEEDS_DIR.is_dir(), reason="seed manuals absent")
def test_the_real_seed_manuals_pdf_and_docx_are_understood() -> None:
    manuals = seed_manuals()
    assert len(manuals) == 8
    for manual in manuals:
        score = score_structure(manual, understand(manual))
        assert (score.mapped, score.parts_right) == (score.defects, score.parts), (manual.name, score.errors)


def test_the_demo_manuals_keep_working() -> None:
    for manual in [*demo_product_manuals(), *demo_manuals()]:
        score = score_structure(manual, understand(manual))
        assert (score.mapped, score.parts_right) == (score.defects, score.parts), (manual.name, score.errors)


@pytest.mark.parametrize(
    ("label", "kind"),
    [
        ("발생 원인", "cause"),
        ("추정 원인", "cause"),
        ("원인 분석", "cause"),
        ("Root Cause", "cause"),
        ("원인 (Cause)", "cause"),
        ("조치 가이드", "action"),
        ("대응 방안", "action"),
        ("시정 조치", "action"),
        ("처리 방법", "action"),
        ("Corrective Action", "action"),
        ("Countermeasures", "action"),
        ("대책", "action"),
        ("예방 조치", "prevention"),
        ("관리 방안", "prevention"),
        ("재발 방지 대책", "prevention"),
        ("Preventive Action", "prevention"),
        ("품질 관리 체계 개요", None),
        ("금형 온도 부족", None),
    ],
)
def test_part_lexicon(label: str, kind: str | None) -> None:
    assert part_kind(label) == kind


def test_sections_map_to_defect_types_by_code_and_names() -> None:
    labels = [
        DefectLabel(1, "color", "색상 이상"),
        DefectLabel(2, "metal_contamination", "금속 오염"),
        DefectLabel(3, "scratch", "스크래치"),
        DefectLabel(4, "hole", "기공"),
    ]
    sections = [
        {"title": "Color Defect (오염·얼룩 불량)"},
        {"title": "Metal Contamination Defect (금속 이물 오염 불량)"},
        {"title": "3. 긁힘 (Scratch)"},
        {"title": "hole (기공)"},
        {"title": "공통 안전 수칙"},
    ]
    mapped = map_sections(sections, labels)
    assert [s["defect_type_id"] for s in mapped] == [1, 2, 3, 4, None]
    assert name_similarity("Metal Contamination", "Metal Contamination Defect (금속 이물)") >= 0.8
    # An admin's choice wins and frees the type it took from automatic mapping.
    remapped = map_sections(sections, labels, {"공통 안전 수칙": 4})
    assert remapped[4]["defect_type_id"] == 4
    assert remapped[4]["mapped_by"] == "admin"
    assert remapped[3]["defect_type_id"] is None


def test_running_headers_and_page_footers_do_not_leak_into_parts() -> None:
    lines: list[DocLine] = []
    defects = [
        ("긁힘", "Scratch", "레일 마모"),
        ("찍힘", "Dent", "하사점 이탈"),
        ("기포", "Bubble", "도료 수분"),
    ]
    for page, (ko, en, cause) in enumerate(defects, start=1):
        lines += [
            DocLine(page, "QM-07 외관 검사 기준서 (개정 3)"),
            DocLine(page, f"{page}. {ko} ({en})", bold=True),
            DocLine(page, "발생 원인", bold=True),
            DocLine(page, f"{cause} 때문에 생긴다."),
            DocLine(page, "조치 가이드", bold=True),
            DocLine(page, f"{ko} 부품을 격리한다."),
            DocLine(page, f"Copyright ACME 2026 · Page {page} of 3"),
        ]
    structure = parse_structure(lines)
    assert len(structure.sections) == 3
    for section in structure.sections:
        text = section.text("cause") + section.text("action")
        assert "QM-07" not in text
        assert "Copyright" not in text
        assert section.parts["prevention"] == []


def test_extractive_answer_keeps_a_sentence_whose_next_line_starts_with_a_number() -> None:
    passage = Passage(
        manual_id=1,
        page=2,
        section="긁힘 > 조치 가이드",
        text="긁힘의 지름 3 mm 이상 또는 깊이\n0.05 mm 이상이면 불합격이다.\n1. 해당 로트를 격리한다.",
    )
    answer = ExtractiveGenerator().generate(
        GuidanceRequest(product_code="p", product_name="P", passages=[passage])
    )
    action = answer.sections.action
    assert "지름 3 mm 이상 또는 깊이 0.05 mm 이상이면 불합격이다." in action
    assert "해당 로트를 격리한다." in action


def test_a_missing_part_is_said_not_filled_with_another_part() -> None:
    passages = [
        Passage(manual_id=1, page=1, section="Cut Defect > 발생 원인", text="• 칼날 마모 또는 세팅 불량"),
        Passage(manual_id=1, page=1, section="Cut Defect > 조치 가이드", text="• 칼날 점검 및 주기적 교체"),
    ]
    request = GuidanceRequest(
        product_code="p",
        product_name="P",
        passages=passages,
        manual_notes={"prevention": "매뉴얼의 'Cut Defect' 항목에는 예방 조치 내용이 없습니다."},
    )
    sections = ExtractiveGenerator().generate(request).sections
    assert "칼날 마모" in sections.cause
    assert "칼날 점검" in sections.action
    assert sections.prevention == "매뉴얼의 'Cut Defect' 항목에는 예방 조치 내용이 없습니다."
