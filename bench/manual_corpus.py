"""A corpus of manuals in the layouts factories write, each with its ground truth as short phrases.

Three sources:
- the four real seed manuals (``shared/seeds/manuals``, PDF and DOCX, read at run time, never copied):
  ground truth written by hand from their text in ``bench/manual_truth/seeds.json``;
- the demo manuals (three heading styles of app.ml.manual_samples);
- generated layouts (``LAYOUTS``): numbered Korean, 가./나./다. with other part words, ①②③ with ○ parts,
  ■/□ bullets, [원인]/【대책】 brackets with inline text, English headings, bilingual headings, a table
  with one row per defect (DOCX and PDF), bold / larger-font headings without numbers, DOCX heading
  styles, sections missing parts, parts given by sentences only (no part headings), parts in reverse order,
  inline "Cause: ..." English parts, numbered items inside parts under plain numbered titles, a Word
  document with bold labels but no heading styles, and a two-column table per defect with one row per part
  (DOCX and PDF).

Truth per defect code: for each part a list of phrases (one must appear in the part), or None when the
manual has no such part (the part must then be empty and the answer must say so).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.ml.manual_samples import SAMPLE_DEFECTS, build_sample_manual

Truth = dict[str, dict[str, list[str] | None]]
TRUTH_DIR = Path(__file__).parent / "manual_truth"
SEEDS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "seeds" / "manuals"


@dataclass(frozen=True)
class DefectSpec:
    """A defect type as a product registers it (code, name, description)."""

    code: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class CorpusManual:
    """One manual of the corpus: its bytes, the product's defect types and the ground truth."""

    name: str
    family: str
    data: bytes
    defect_types: tuple[DefectSpec, ...]
    truth: Truth


# ----- content of the generated layouts ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Content:
    code: str
    ko: str
    en: str
    cause: tuple[str, ...]
    action: tuple[str, ...]
    prevention: tuple[str, ...]
    cause_en: tuple[str, ...] = ()
    action_en: tuple[str, ...] = ()
    prevention_en: tuple[str, ...] = ()


_DEFECTS: tuple[_Content, ...] = (
    _Content(
        "scratch",
        "긁힘",
        "Scratch",
        (
            "이송 컨베이어 가이드 레일 마모로 부품 표면이 레일 모서리에 닿음",
            "부품을 겹쳐 적재하여 운반 중 표면이 마찰됨",
        ),
        (
            "해당 로트를 격리하고 긁힘 깊이를 표면 조도계로 측정한다",
            "깊이 0.05 mm 이하는 버핑 연마 후 재검사한다",
        ),
        ("가이드 레일에 우레탄 보호 테이프를 부착한다", "적재 시 간지를 넣어 부품끼리 닿지 않게 한다"),
        (
            "Worn conveyor guide rails rub the part surface",
            "Parts stacked without separators scrape each other",
        ),
        (
            "Quarantine the lot and measure the scratch depth",
            "Buff scratches shallower than 0.05 mm and re-inspect",
        ),
        ("Fit urethane tape on the guide rails", "Put separator sheets between stacked parts"),
    ),
    _Content(
        "crack",
        "균열",
        "Crack",
        ("금형 온도가 너무 낮아 냉각 중 응력이 집중됨", "소재 로트의 연신율이 규격 하한에 가까움"),
        ("균열 부품은 전량 폐기하고 앞뒤 20개를 침투 탐상한다", "금형 예열 온도를 기록과 대조한다"),
        ("금형 예열 절차를 작업 표준서에 명시한다", "입고 소재의 연신율 성적서를 매 로트 확인한다"),
        (
            "Die temperature too low concentrates stress while cooling",
            "Material lot elongation near the lower limit",
        ),
        (
            "Scrap every cracked part and dye-check twenty before and after",
            "Compare die preheat with the log",
        ),
        (
            "Write the die preheat procedure into the work standard",
            "Check the elongation certificate of every lot",
        ),
    ),
    _Content(
        "bubble",
        "기포",
        "Bubble",
        ("도료에 수분이 섞여 경화 중 기화함", "스프레이 건 공기압이 높아 공기가 말려 들어감"),
        ("기포 부위를 샌딩 후 재도장한다", "도료 탱크의 수분 필터를 교체한다"),
        ("도료 보관실 습도를 60% 이하로 관리한다", "스프레이 공기압을 교대마다 기록한다"),
        ("Moisture in the paint vaporises while curing", "Spray gun air pressure too high traps air"),
        ("Sand the bubbled area and repaint", "Replace the moisture filter of the paint tank"),
        ("Keep the paint store below 60% humidity", "Log the spray air pressure every shift"),
    ),
    _Content(
        "dent",
        "찍힘",
        "Dent",
        ("프레스 하사점 위치가 어긋나 국부 압력이 걸림", "운반 대차의 모서리에 부품이 부딪힘"),
        ("찍힘 깊이를 다이얼 게이지로 측정하고 0.1 mm 초과는 폐기한다", "프레스 하사점을 재설정한다"),
        ("운반 대차 모서리에 고무 패드를 붙인다", "프레스 하사점을 매일 시업 전에 점검한다"),
        ("Press bottom dead centre drifts and presses locally", "Parts hit the corners of the trolley"),
        ("Measure the dent with a dial gauge and scrap beyond 0.1 mm", "Reset the press bottom dead centre"),
        ("Put rubber pads on trolley corners", "Check bottom dead centre before each day's start"),
    ),
)


def _phrase(sentence: str) -> str:
    """The ground-truth phrase of a sentence: its first words (enough to be unique in the corpus)."""
    return sentence[:14]


def _truth(
    defects: Sequence[_Content], *, english: bool = False, drop: dict[str, set[str]] | None = None
) -> Truth:
    drop = drop or {}
    out: Truth = {}
    for d in defects:
        parts: dict[str, list[str] | None] = {}
        for kind in ("cause", "action", "prevention"):
            sentences: tuple[str, ...] = getattr(d, f"{kind}_en" if english else kind)
            parts[kind] = None if kind in drop.get(d.code, set()) else [_phrase(s) for s in sentences]
        out[d.code] = parts
    return out


def _specs(defects: Sequence[_Content]) -> tuple[DefectSpec, ...]:
    return tuple(DefectSpec(d.code, d.ko, "") for d in defects)


# ----- rendering --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    """A line to render: text, size, bold, or table cells; ``page_break`` starts a new page."""

    text: str = ""
    size: float = 10.0
    bold: bool = False
    cells: tuple[str, ...] = ()
    page_break: bool = False
    level: int = 0


def _font_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("koreanize_matplotlib (NanumGothic fonts) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "fonts"


def render_pdf(lines: Sequence[Line], *, header: str = "", footer: str = "") -> bytes:
    """An A4 PDF: Nanum Gothic regular/bold at each line's size, running header and footer per page."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    for name, file in (("NanumGothic", "NanumGothic.ttf"), ("NanumGothicBold", "NanumGothicBold.ttf")):
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(name, str(_font_dir() / file)))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    width, height = (float(v) for v in A4)
    margin = 56.0
    usable = width - 2 * margin
    page = 1

    def start() -> float:
        c.setFont("NanumGothic", 8)
        if header:
            c.drawString(margin, height - 30, header)
        c.drawCentredString(width / 2, 24, footer.format(page=page) if footer else f"- {page} -")
        return height - margin

    y = start()
    for line in lines:
        if line.page_break or y < margin + 20:
            c.showPage()
            page += 1
            y = start()
            if line.page_break:
                continue
        font = "NanumGothicBold" if line.bold else "NanumGothic"
        if line.cells:
            col = usable / len(line.cells)
            c.setFont(font, line.size)
            for i, cell in enumerate(line.cells):
                c.drawString(margin + i * col, y, cell)
            y -= line.size * 1.8
            continue
        c.setFont(font, line.size)
        rest = line.text
        while True:
            cut = len(rest)
            while cut > 1 and float(pdfmetrics.stringWidth(rest[:cut], font, line.size)) > usable:
                cut -= 1
            c.drawString(margin, y, rest[:cut])
            y -= line.size * 1.6
            rest = rest[cut:]
            if not rest:
                break
        if line.size > 11:
            y -= 4
    c.showPage()
    c.save()
    return buf.getvalue()


def render_docx(lines: Sequence[Line]) -> bytes:
    """A Word document: ``level`` lines as Heading N, bold runs, tables from consecutive cell rows."""
    import docx
    from docx.shared import Pt

    document = docx.Document()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.cells:
            rows = []
            while i < len(lines) and lines[i].cells:
                rows.append(lines[i].cells)
                i += 1
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            for r, row in enumerate(rows):
                for col, value in enumerate(row):
                    table.cell(r, col).text = value
            continue
        if line.page_break:
            document.add_page_break()
        elif line.level:
            document.add_heading(line.text, level=line.level)
        else:
            paragraph = document.add_paragraph()
            run = paragraph.add_run(line.text)
            run.bold = line.bold or None
            if line.size != 10.0:
                run.font.size = Pt(line.size)
        i += 1
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


# ----- the generated layouts --------------------------------------------------------------------------------
def _intro(title: str) -> list[Line]:
    return [
        Line(title, size=16, bold=True),
        Line("본 문서는 생산 라인에서 발견되는 외관 불량의 원인과 처리 절차를 정리한 작업 표준이다."),
        Line("불량을 발견한 작업자는 즉시 라인 리더에게 알린다."),
    ]


def numbered_ko() -> tuple[list[Line], Truth]:
    """1. 긁힘 / 1) 원인 분석 / 2) 시정 조치 / 3) 재발 방지 대책, items as 가) sentences."""
    out = _intro("외관 불량 처리 기준서")
    for i, d in enumerate(_DEFECTS, start=1):
        out += [Line(f"{i}. {d.ko} 불량", size=12, bold=True), Line("1) 원인 분석")]
        out += [Line(f"- {s}") for s in d.cause]
        out += [Line("2) 시정 조치"), *[Line(f"- {s}") for s in d.action]]
        out += [Line("3) 재발 방지 대책"), *[Line(f"- {s}") for s in d.prevention]]
        if i == 2:
            out.append(Line(page_break=True))
    return out, _truth(_DEFECTS)


def hangul_letters() -> tuple[list[Line], Truth]:
    """제N장 titles, 가. 추정 원인 / 나. 처리 방법 / 다. 관리 방안."""
    out = _intro("품질 관리 지침")
    for i, d in enumerate(_DEFECTS, start=2):
        out += [Line(f"제{i}장 {d.ko}({d.en})", size=13, bold=True)]
        out += [Line("가. 추정 원인"), *[Line(f"  {s}.") for s in d.cause]]
        out += [Line("나. 처리 방법"), *[Line(f"  {s}.") for s in d.action]]
        out += [Line("다. 관리 방안"), *[Line(f"  {s}.") for s in d.prevention]]
    return out, _truth(_DEFECTS)


def circled() -> tuple[list[Line], Truth]:
    """① 긁힘 titles with ○ 발생 요인 / ○ 대응 방안 / ○ 예방 대책 parts."""
    marks = "①②③④"
    out = _intro("불량 유형별 조치 요령")
    for i, d in enumerate(_DEFECTS):
        out += [Line(f"{marks[i]} {d.ko}", size=11, bold=True)]
        out += [Line("○ 발생 요인"), *[Line(f"· {s}") for s in d.cause]]
        out += [Line("○ 대응 방안"), *[Line(f"· {s}") for s in d.action]]
        out += [Line("○ 예방 대책"), *[Line(f"· {s}") for s in d.prevention]]
    return out, _truth(_DEFECTS)


def square_bullets() -> tuple[list[Line], Truth]:
    """■ 긁힘 불량 titles with □ 원인 / □ 조치 사항 / □ 예방 parts and - items."""
    out = _intro("현장 불량 대응 가이드")
    for i, d in enumerate(_DEFECTS):
        out += [Line(f"■ {d.ko} 불량 ({d.en})")]
        out += [Line("□ 원인"), *[Line(f"- {s}") for s in d.cause]]
        out += [Line("□ 조치 사항"), *[Line(f"- {s}") for s in d.action]]
        if i == 1:
            out.append(Line(page_break=True))  # a part continues on the next page
        out += [Line("□ 예방"), *[Line(f"- {s}") for s in d.prevention]]
    return out, _truth(_DEFECTS)


def brackets() -> tuple[list[Line], Truth]:
    """Numbered titles, parts as [원인] / 【대책】 / [재발 방지] with the text on the same line."""
    out = _intro("불량 조치 표준")
    for i, d in enumerate(_DEFECTS, start=1):
        out += [Line(f"{i}. {d.ko}", bold=True)]
        out += [Line(f"[원인] {d.cause[0]}."), Line(f"{d.cause[1]}.")]
        out += [Line(f"【대책】 {d.action[0]}."), Line(f"{d.action[1]}.")]
        out += [Line(f"[재발 방지] {d.prevention[0]}."), Line(f"{d.prevention[1]}.")]
    return out, _truth(_DEFECTS)


def english() -> tuple[list[Line], Truth]:
    """English: bold larger titles without numbers, Root Cause / Corrective Action / Preventive Action."""
    out = [
        Line("Surface Defect Response Manual", size=16, bold=True),
        Line("This manual lists known defects."),
    ]
    for d in _DEFECTS:
        out += [Line(f"{d.en} Defect", size=13, bold=True)]
        out += [Line("Root Cause", bold=True), *[Line(f"• {s}.") for s in d.cause_en]]
        out += [Line("Corrective Action", bold=True), *[Line(f"• {s}.") for s in d.action_en]]
        out += [Line("Preventive Action", bold=True), *[Line(f"• {s}.") for s in d.prevention_en]]
    return out, _truth(_DEFECTS, english=True)


def bilingual() -> tuple[list[Line], Truth]:
    """긁힘 / Scratch titles, 원인 (Cause) / 조치 (Action) / 예방 (Prevention) parts."""
    out = _intro("불량 대응 매뉴얼 (Defect Response Manual)")
    for d in _DEFECTS:
        out += [Line(f"{d.ko} / {d.en}", size=12, bold=True)]
        out += [Line("원인 (Cause)"), *[Line(f"• {s}") for s in d.cause]]
        out += [Line("조치 (Action)"), *[Line(f"• {s}") for s in d.action]]
        out += [Line("예방 (Prevention)"), *[Line(f"• {s}") for s in d.prevention]]
    return out, _truth(_DEFECTS)


def table_rows() -> tuple[list[Line], Truth]:
    """One table, one row per defect: 불량 유형 | 발생 원인 | 조치 방법 | 예방 대책 (first sentences only)."""
    out = _intro("불량 조치표")
    out.append(Line(cells=("불량 유형", "발생 원인", "조치 방법", "예방 대책")))
    for d in _DEFECTS:
        out.append(Line(cells=(d.ko, d.cause[0], d.action[0], d.prevention[0])))
    truth = {
        d.code: {
            "cause": [_phrase(d.cause[0])],
            "action": [_phrase(d.action[0])],
            "prevention": [_phrase(d.prevention[0])],
        }
        for d in _DEFECTS
    }
    return out, truth


def table_rows_pdf() -> tuple[list[Line], Truth]:
    """The same table in a PDF with short single-line cells (columns drawn apart)."""
    out = _intro("불량 조치표")
    out.append(Line(cells=("불량 유형", "원인", "조치", "예방")))
    short = {
        "scratch": ("레일 마모", "로트 격리", "보호 테이프"),
        "crack": ("금형 저온", "전량 폐기", "예열 표준화"),
        "bubble": ("도료 수분", "샌딩 재도장", "습도 관리"),
        "dent": ("하사점 이탈", "하사점 재설정", "고무 패드"),
    }
    for d in _DEFECTS:
        out.append(Line(cells=(d.ko, *short[d.code])))
    truth: Truth = {
        code: {"cause": [c], "action": [a], "prevention": [p]} for code, (c, a, p) in short.items()
    }
    return out, truth


def bold_headings() -> tuple[list[Line], Truth]:
    """Titles only by a larger bold font (no numbers, no parentheses); 발생 원인 / 조치 가이드 / 예방 조치."""
    out = _intro("작업 표준서")
    for d in _DEFECTS:
        out += [Line(d.ko, size=14, bold=True)]
        out += [Line("발생 원인", bold=True), *[Line(f"{s}.") for s in d.cause]]
        out += [Line("조치 가이드", bold=True), *[Line(f"{s}.") for s in d.action]]
        out += [Line("예방 조치", bold=True), *[Line(f"{s}.") for s in d.prevention]]
    return out, _truth(_DEFECTS)


def docx_styles() -> tuple[list[Line], Truth]:
    """Word heading styles: Heading 1 per defect, Heading 2 원인 분석 / 대응 방법 / 예방 대책."""
    out = [Line("불량 대응 매뉴얼", level=1), Line("이 문서는 불량별 대응을 설명한다.")]
    out += [Line("불량 유형별 대응", level=1)]
    for d in _DEFECTS:
        out += [Line(f"{d.ko} ({d.en})", level=2)]
        out += [Line("원인 분석", level=3), *[Line(f"{s}.") for s in d.cause]]
        out += [Line("대응 방법", level=3), *[Line(f"{s}.") for s in d.action]]
        out += [Line("예방 대책", level=3), *[Line(f"{s}.") for s in d.prevention]]
    return out, _truth(_DEFECTS)


def missing_parts() -> tuple[list[Line], Truth]:
    """Numbered sections where some parts are absent: no prevention, no cause, only an action."""
    drop = {"scratch": {"prevention"}, "crack": {"cause"}, "bubble": {"cause", "prevention"}}
    out = _intro("불량 대응 매뉴얼")
    for i, d in enumerate(_DEFECTS, start=1):
        out += [Line(f"{i}. {d.ko} ({d.en})", bold=True)]
        if "cause" not in drop.get(d.code, set()):
            out += [Line("발생 원인"), *[Line(f"- {s}") for s in d.cause]]
        out += [Line("조치 가이드"), *[Line(f"- {s}") for s in d.action]]
        if "prevention" not in drop.get(d.code, set()):
            out += [Line("예방 조치"), *[Line(f"- {s}") for s in d.prevention]]
    return out, _truth(_DEFECTS, drop=drop)


def sentences_only() -> tuple[list[Line], Truth]:
    """Bold titles, no part headings: each sentence says by itself whether it is a cause, an action or
    a prevention (cue words), as short work instructions often do."""
    out = _intro("간이 불량 안내")
    content = {
        "scratch": (
            "가이드 레일 마모로 인해 표면이 긁힌다.",
            "해당 로트를 격리하고 부품을 재검사한다.",
            "가이드 레일을 주기적으로 점검하여 예방한다.",
        ),
        "crack": (
            "금형 온도 부족 때문에 균열이 생긴다.",
            "균열 부품은 폐기하고 금형 온도를 보정한다.",
            "금형 예열을 매일 기록하여 재발을 방지한다.",
        ),
        "bubble": (
            "도료 수분 과다로 인해 기포가 발생한다.",
            "기포 부위를 샌딩하고 수분 필터를 교체한다.",
            "도료 보관 습도를 정기적으로 관리한다.",
        ),
        "dent": (
            "운반 대차 모서리에 의한 충격으로 찍힘이 생긴다.",
            "찍힘 부품을 격리하고 깊이를 측정한다.",
            "대차 모서리 패드를 매주 점검한다.",
        ),
    }
    for d in _DEFECTS:
        out += [Line(f"{d.ko} 불량", size=12, bold=True), *[Line(s) for s in content[d.code]]]
    truth: Truth = {
        code: {"cause": [_phrase(c)], "action": [_phrase(a)], "prevention": [_phrase(p)]}
        for code, (c, a, p) in content.items()
    }
    return out, truth


def reversed_parts() -> tuple[list[Line], Truth]:
    """Bold titles, the action part before the cause, • items, no prevention part."""
    out = [Line("작업 표준", size=16, bold=True)]
    for d in _DEFECTS:
        out += [Line(f"{d.ko} 불량", bold=True), Line("조치 방법"), *[Line(f"• {x}") for x in d.action]]
        out += [Line("원인"), *[Line(f"• {x}") for x in d.cause]]
    return out, _truth(_DEFECTS, drop={d.code: {"prevention"} for d in _DEFECTS})


def inline_english() -> tuple[list[Line], Truth]:
    """English titles in a larger bold font, parts inline: "Cause: ...", "Action: ...", "Prevention: ..."."""
    out = [Line("Defect guide", size=16, bold=True)]
    for d in _DEFECTS:
        out += [Line(d.en, size=12, bold=True)]
        out += [Line(f"Cause: {d.cause_en[0]}."), Line(f"Action: {d.action_en[0]}.")]
        out += [Line(f"Prevention: {d.prevention_en[0]}.")]
    truth: Truth = {
        d.code: {
            "cause": [_phrase(d.cause_en[0])],
            "action": [_phrase(d.action_en[0])],
            "prevention": [_phrase(d.prevention_en[0])],
        }
        for d in _DEFECTS
    }
    return out, truth


def numbered_items() -> tuple[list[Line], Truth]:
    """Plain "1. 긁힘" titles under a larger document title, 가. 원인 / 나. 대책 parts with 1) 2) items."""
    out = [Line("품질 기준", size=14)]
    for i, d in enumerate(_DEFECTS, start=1):
        out += [
            Line(f"{i}. {d.ko}"),
            Line("가. 원인"),
            *[Line(f"{j}) {x}") for j, x in enumerate(d.cause, 1)],
        ]
        out += [Line("나. 대책"), *[Line(f"{j}) {x}") for j, x in enumerate(d.action, 1)]]
    return out, _truth(_DEFECTS, drop={d.code: {"prevention"} for d in _DEFECTS})


def docx_bold() -> tuple[list[Line], Truth]:
    """A Word document without heading styles: bold 12 pt titles, bold 원인 / 조치 / 예방 labels."""
    out = [Line("매뉴얼", size=16, bold=True)]
    for d in _DEFECTS:
        out += [
            Line(f"{d.ko}({d.en})", bold=True, size=12),
            Line("원인", bold=True),
            *[Line(x) for x in d.cause],
        ]
        out += [Line("조치", bold=True), *[Line(x) for x in d.action]]
        out += [Line("예방", bold=True), *[Line(x) for x in d.prevention]]
    return out, _truth(_DEFECTS)


def part_rows() -> tuple[list[Line], Truth]:
    """A small two-column table per defect, one row per part: | 원인 | ... | 조치 | ... | 예방 | ... |."""
    out = [Line("불량 대응표", size=16, bold=True)]
    for d in _DEFECTS:
        out += [Line(f"{d.ko} ({d.en})", bold=True, size=12)]
        out += [
            Line(cells=("원인", d.cause[0])),
            Line(cells=("조치", d.action[0])),
            Line(cells=("예방", d.prevention[0])),
        ]
    truth: Truth = {
        d.code: {
            "cause": [_phrase(d.cause[0])],
            "action": [_phrase(d.action[0])],
            "prevention": [_phrase(d.prevention[0])],
        }
        for d in _DEFECTS
    }
    return out, truth


@dataclass(frozen=True)
class Layout:
    """A generated layout: name, family, builder, and whether it is written as DOCX."""

    name: str
    build: Callable[[], tuple[list[Line], Truth]]
    docx: bool = False
    header: str = "사내 품질 문서 QM-{page}"


LAYOUTS: tuple[Layout, ...] = (
    Layout("numbered_ko", numbered_ko),
    Layout("hangul_letters", hangul_letters),
    Layout("circled", circled),
    Layout("square_bullets", square_bullets),
    Layout("brackets", brackets),
    Layout("english", english),
    Layout("bilingual", bilingual),
    Layout("table_docx", table_rows, docx=True),
    Layout("table_pdf", table_rows_pdf),
    Layout("bold_headings", bold_headings),
    Layout("docx_styles", docx_styles, docx=True),
    Layout("missing_parts", missing_parts),
    Layout("sentences_only", sentences_only),
    Layout("reversed_parts", reversed_parts),
    Layout("inline_english", inline_english),
    Layout("numbered_items", numbered_items),
    Layout("docx_bold", docx_bold, docx=True),
    Layout("part_rows_docx", part_rows, docx=True),
    Layout("part_rows_pdf", part_rows),
)


def build_layout(layout: Layout) -> CorpusManual:
    """Render one generated layout (PDF with a running header and footer, or DOCX)."""
    lines, truth = layout.build()
    if layout.docx:
        data = render_docx(lines)
    else:
        data = render_pdf(lines, header="사내 품질 문서 QM-07 (개정 3)", footer="- {page} -")
    return CorpusManual(layout.name, layout.name, data, _specs(_DEFECTS), truth)


# ----- the seed and demo manuals ----------------------------------------------------------------------------
def seed_manuals(seeds_dir: Path = SEEDS_DIR) -> list[CorpusManual]:
    """The four real manuals as PDF and DOCX with the hand-written truth (empty when absent here)."""
    spec = json.loads((TRUTH_DIR / "seeds.json").read_text(encoding="utf-8"))
    out: list[CorpusManual] = []
    for stem, entry in spec.items():
        types = tuple(DefectSpec(code, name, "") for code, name in entry["defect_types"].items())
        truth: Truth = {code: dict(parts) for code, parts in entry["truth"].items()}
        for ext in ("pdf", "docx"):
            path = seeds_dir / f"{stem}.{ext}"
            if path.is_file():
                out.append(CorpusManual(f"seed_{stem}.{ext}", f"seed_{ext}", path.read_bytes(), types, truth))
    return out


def demo_manuals() -> list[CorpusManual]:
    """The demo generator's manuals in its three heading styles."""
    types = tuple(DefectSpec(d.code, d.name, d.description) for d in SAMPLE_DEFECTS)
    truth: Truth = {
        d.code: {
            "cause": [_phrase(s) for s in d.causes],
            "action": [_phrase(s) for s in d.actions],
            "prevention": [_phrase(s) for s in d.preventions],
        }
        for d in SAMPLE_DEFECTS
    }
    return [
        CorpusManual(f"demo_{style}", "demo", build_sample_manual("브레이크 패드", style), types, truth)  # type: ignore[arg-type]
        for style in ("numbered", "bullets", "chapters")
    ]


def demo_product_manuals() -> list[CorpusManual]:
    """The manuals `defectlens demo` registers (app.demo: one per demo product, its defect types)."""
    from app.demo.catalog import PRODUCTS
    from app.demo.manual_pdf import render_manual

    out: list[CorpusManual] = []
    for product in PRODUCTS:
        data, _ = render_manual(product)
        types = tuple(DefectSpec(d.code, d.name, d.description) for d in product.defects)
        truth: Truth = {
            d.code: {
                "cause": [_phrase(s) for s in d.causes],
                "action": [_phrase(s) for s in d.actions],
                "prevention": [_phrase(s) for s in d.preventions],
            }
            for d in product.defects
        }
        out.append(CorpusManual(f"demo_product_{product.code}", "demo", data, types, truth))
    return out


def corpus(seeds_dir: Path = SEEDS_DIR, *, names: Sequence[str] | None = None) -> list[CorpusManual]:
    """Every manual of the corpus (optionally only the named ones)."""
    items = [
        *seed_manuals(seeds_dir),
        *demo_product_manuals(),
        *demo_manuals(),
        *(build_layout(x) for x in LAYOUTS),
    ]
    return [m for m in items if names is None or m.name in names]


@dataclass
class Score:
    """Per manual: sections mapped right, parts right, and the extractive answer's parts right."""

    name: str
    defects: int = 0
    mapped: int = 0
    parts: int = 0
    parts_right: int = 0
    answer_parts: int = 0
    answer_right: int = 0
    errors: list[str] = field(default_factory=list)

    def ratio(self, a: int, b: int) -> float:
        """a / b (1.0 when there is nothing to score)."""
        return a / b if b else 1.0

    def as_row(self) -> dict[str, Any]:
        """The table row."""
        return {
            "manual": self.name,
            "defects": self.defects,
            "sections_mapped": round(self.ratio(self.mapped, self.defects), 3),
            "parts_right": round(self.ratio(self.parts_right, self.parts), 3),
            "answer_right": round(self.ratio(self.answer_right, self.answer_parts), 3),
        }
