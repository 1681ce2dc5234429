"""Section-aware chunking: pages and "defect > subsection" paths survive, defects never mix."""

from __future__ import annotations

import pytest

from app.ml.chunking import Chunk, chunk_pages, section_kind, split_section
from app.ml.manual_samples import SAMPLE_DEFECTS, ManualStyle, build_sample_manual
from app.ml.pdf_text import PageText, parse_pdf


def _chunks(style: ManualStyle, **kw: int) -> list[Chunk]:
    return chunk_pages(parse_pdf(build_sample_manual("브래킷 A", style)).pages, **kw)


@pytest.fixture(scope="module")
def numbered() -> list[Chunk]:
    return _chunks("numbered")


def test_defect_and_subsection_form_the_section_path(numbered: list[Chunk]) -> None:
    cause = next(c for c in numbered if "가이드 레일이 마모되어" in c.text)
    assert cause.section == "1. 긁힘 (Scratch) > 발생 원인"
    assert cause.kind == "cause"
    assert cause.page == 1
    prevention = next(c for c in numbered if "우레탄 보호 테이프" in c.text)
    assert prevention.section == "1. 긁힘 (Scratch) > 예방 조치"


def test_numbered_action_steps_are_not_mistaken_for_defect_headings(numbered: list[Chunk]) -> None:
    action = next(c for c in numbered if "표면 조도계로 측정한다" in c.text)
    assert action.section == "1. 긁힘 (Scratch) > 조치 가이드"
    assert "2. 깊이 0.05mm" in action.text


def test_section_carries_across_a_page_break(numbered: list[Chunk]) -> None:
    # The sample manual breaks the page in the middle of 찍힘's cause list.
    before = next(c for c in numbered if "지그 클램프 압력" in c.text)
    after = next(c for c in numbered if "로봇 그리퍼가 부품 모서리에 충돌" in c.text)
    assert after.page == before.page + 1
    assert before.section == after.section == "2. 찍힘 (Dent) > 발생 원인"


@pytest.mark.parametrize("style", ["numbered", "bullets", "chapters"])
def test_chunks_never_mix_two_defects(style: ManualStyle) -> None:
    chunks = _chunks(style, chunk_size=200, chunk_overlap=40)
    for d in SAMPLE_DEFECTS:
        for sentence in (*d.causes, *d.actions, *d.preventions):
            holders = [c for c in chunks if sentence[:20] in c.text]
            assert holders, sentence
            for c in holders:
                assert d.name in c.section, (sentence, c.section)
                others = [o.name for o in SAMPLE_DEFECTS if o is not d and f"{o.name} (" in c.text]
                assert not others


@pytest.mark.parametrize("style", ["bullets", "chapters"])
def test_other_heading_styles_are_recognised(style: ManualStyle) -> None:
    chunks = _chunks(style)
    crack = [c for c in chunks if "균열" in c.section]
    assert {c.kind for c in crack} >= {"cause", "action", "prevention"}


def test_running_header_and_page_numbers_are_dropped(numbered: list[Chunk]) -> None:
    assert not any("품질 매뉴얼" in c.text or "- 2 -" in c.text for c in numbered)


def test_bracket_bullet_and_chapter_headings_in_plain_pages() -> None:
    pages = [
        PageText(
            1,
            "제 2 장 불량 유형별 조치\n3. 긁힘 (Scratch)\n■ 발생 원인\n레일이 마모되었다.\n"
            "■ 조치 가이드\n부품을 격리한다.",
        ),
        PageText(
            2, "[예방 조치]\n레일을 주 1회 점검한다.\n4. 찍힘 (Dent)\n3.1 발생 원인\n클램프 압력이 높다."
        ),
    ]
    got = {c.text: (c.page, c.section) for c in chunk_pages(pages)}
    assert got["레일이 마모되었다."] == (1, "3. 긁힘 (Scratch) > 발생 원인")
    assert got["부품을 격리한다."] == (1, "3. 긁힘 (Scratch) > 조치 가이드")
    assert got["레일을 주 1회 점검한다."] == (2, "3. 긁힘 (Scratch) > 예방 조치")
    assert got["클램프 압력이 높다."] == (2, "4. 찍힘 (Dent) > 발생 원인")


def test_long_sections_are_split_but_keep_page_and_section() -> None:
    body = "\n".join(f"{i}번째 원인 설명 문장으로 설비 점검 기록을 확인해야 한다." for i in range(40))
    chunks = chunk_pages(
        [PageText(5, f"7. 변색 (Discoloration)\n7.1 발생 원인\n{body}")], chunk_size=200, chunk_overlap=40
    )
    assert len(chunks) > 3
    assert all(len(c.text) <= 200 and c.page == 5 for c in chunks)
    assert {c.section for c in chunks} == {"7. 변색 (Discoloration) > 발생 원인"}
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_section_helpers() -> None:
    assert section_kind("발생 원인") == "cause"
    assert section_kind("조치 가이드") == "action"
    assert section_kind("예방 조치") == "prevention"
    assert section_kind("재발 방지 대책") == "prevention"
    assert split_section("3. 긁힘 (Scratch) > 발생 원인") == ("3. 긁힘 (Scratch)", "발생 원인")
    assert split_section("예방 조치") == ("", "예방 조치")
    assert split_section("3. 긁힘 (Scratch)") == ("3. 긁힘 (Scratch)", "")
