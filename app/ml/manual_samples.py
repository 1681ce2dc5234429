"""Synthetic Korean defect-response manuals (PDF) for demos, tests and the retrieval benchmark.

The eight defect types deliberately share vocabulary (표면, 금형, 점검, 로트, 작업자 ...) so that a
retriever which ignores the section structure mixes them up.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ManualStyle = Literal["numbered", "bullets", "chapters"]
PAGE_BREAK = "\f"


@dataclass(frozen=True)
class SampleDefect:
    """One defect type of the sample manuals (code/name/description as a product would register it)."""

    code: str
    name: str
    english: str
    description: str
    causes: tuple[str, ...]
    actions: tuple[str, ...]
    preventions: tuple[str, ...]


SAMPLE_DEFECTS: tuple[SampleDefect, ...] = (
    SampleDefect(
        "scratch",
        "긁힘",
        "Scratch",
        "표면에 가늘고 긴 선 형태의 긁힌 자국이 있음",
        (
            "이송 컨베이어 가이드 레일이 마모되어 부품 표면이 레일 모서리에 직접 닿는다.",
            "작업자가 부품을 겹쳐 적재하여 운반 중 부품끼리 표면이 마찰된다.",
            "금형 표면에 붙은 칩이 프레스 작업 중 부품 표면을 끌고 지나간다.",
        ),
        (
            "해당 로트의 부품을 격리하고 긁힘 깊이를 표면 조도계로 측정한다.",
            "깊이 0.05mm 이하는 버핑 연마 후 재검사하고, 초과하면 폐기한다.",
            "가이드 레일의 마모 상태를 점검하고 마모 한도를 넘으면 교체한다.",
        ),
        (
            "가이드 레일에 우레탄 보호 테이프를 부착하고 주 1회 마모를 점검한다.",
            "부품 적재 시 간지를 넣어 부품끼리 직접 접촉하지 않게 한다.",
            "금형 표면의 칩은 매 교대 시작 시 에어 블로우로 제거한다.",
        ),
    ),
    SampleDefect(
        "dent",
        "찍힘",
        "Dent",
        "표면이 국부적으로 움푹 눌린 자국",
        (
            "지그 클램프 압력이 설정값보다 높아 부품 표면이 눌린다.",
            "이송 로봇 그리퍼가 부품 모서리에 충돌한다.",
            "작업자가 부품을 작업대에 떨어뜨리거나 상부 적재 하중이 과다하다.",
        ),
        (
            "찍힘 깊이와 면적을 측정하여 판정 기준을 넘으면 로트를 격리한다.",
            "클램프 압력 설정값을 확인하고 표준값으로 다시 맞춘다.",
            "로봇 그리퍼의 티칭 위치를 재교정한 뒤 시험 가동한다.",
        ),
        (
            "클램프 압력 상한 인터록을 설정하고 매일 시업 점검에서 확인한다.",
            "적재 단수를 3단 이하로 제한하고 완충 매트를 깐다.",
            "그리퍼 충돌 감지 센서를 설치하여 충돌 시 설비를 정지시킨다.",
        ),
    ),
    SampleDefect(
        "contamination",
        "오염",
        "Contamination",
        "표면에 기름이나 먼지 얼룩이 묻어 있음",
        (
            "세척 공정의 세척액 농도가 낮아져 절삭유가 표면에 남는다.",
            "작업장 먼지와 절삭유 미스트가 부품 표면에 내려앉는다.",
            "작업자가 맨손으로 부품 표면을 만져 지문이 남는다.",
        ),
        (
            "오염 부품은 세척 공정에 재투입하고 이소프로필 알코올로 닦아 재검사한다.",
            "세척액 농도를 측정하여 기준 미달이면 세척액을 교체한다.",
            "오염원이 된 구역의 먼지를 청소하고 미스트 배기 장치를 점검한다.",
        ),
        (
            "세척액 농도를 매 교대 측정하여 점검표에 기록한다.",
            "절삭유 비산 방지 커버를 설치하고 배기 필터를 월 1회 교체한다.",
            "작업자는 클린 장갑을 착용하고 맨손 취급을 금지한다.",
        ),
    ),
    SampleDefect(
        "crack",
        "균열",
        "Crack",
        "표면이나 모서리에 가늘게 갈라진 틈이 있음",
        (
            "프레스 성형 압력이 과다하거나 소재 연신율이 부족하여 소재가 갈라진다.",
            "금형 R부가 마모되어 모서리에 응력이 집중된다.",
            "열처리 후 급랭으로 내부 응력이 남아 표면이 갈라진다.",
        ),
        (
            "즉시 라인을 정지하고 같은 로트를 전수 검사한다.",
            "균열 부품은 재작업하지 않고 전량 폐기한다.",
            "소재 성적서의 연신율을 확인하고 금형 R부를 점검한다.",
        ),
        (
            "소재 입고 시 연신율 시험을 로트마다 실시한다.",
            "금형 R부를 5만 타마다 정기 연마한다.",
            "열처리 냉각 속도를 표준 조건으로 관리하고 기록한다.",
        ),
    ),
    SampleDefect(
        "discoloration",
        "변색",
        "Discoloration",
        "표면 일부의 색이 변하거나 얼룩 무늬가 생김",
        (
            "열처리로 내부 온도 편차로 부품 일부가 과열된다.",
            "도금액이 오염되었거나 전류 밀도가 불균일하다.",
            "보관 창고 습도가 높아 표면이 산화된다.",
        ),
        (
            "색차계로 색차를 측정하고 기준을 넘으면 재도금한다.",
            "열처리로 온도 프로파일을 확인하여 과열 구간을 찾는다.",
            "보관 중 변색된 로트는 격리하고 창고 습도 기록을 확인한다.",
        ),
        (
            "열처리로 온도 센서를 월 1회 교정한다.",
            "도금액 성분 분석 주기를 주 1회로 단축한다.",
            "창고 습도를 60% 이하로 관리하고 방청 포장을 적용한다.",
        ),
    ),
    SampleDefect(
        "bubble",
        "기포",
        "Bubble",
        "도장면이나 사출면에 부풀어 오른 작은 기포",
        (
            "도장 전 부품 표면에 수분이 남아 도막 아래에서 기화한다.",
            "사출 수지의 건조가 부족하여 성형 중 가스가 발생한다.",
            "도료 점도가 높아 도장 중 공기가 빠져나가지 못한다.",
        ),
        (
            "기포 부위를 연마한 뒤 재도장하고 도막 두께를 측정한다.",
            "수지 건조기의 온도와 건조 시간을 확인한다.",
            "도료 점도를 측정하고 기준보다 높으면 희석제로 조정한다.",
        ),
        (
            "수지 건조 조건을 80℃ 4시간으로 준수하고 기록한다.",
            "도장 부스 습도를 관리하고 도장 전 에어 블로우를 실시한다.",
            "도료 점도를 매 로트 측정한다.",
        ),
    ),
    SampleDefect(
        "burr",
        "버",
        "Burr",
        "절단면 모서리에 날카롭게 남은 돌기",
        (
            "전단 금형의 클리어런스가 과다하다.",
            "펀치 날이 마모되어 절단면이 뜯겨 나간다.",
            "소재 두께가 규격보다 두꺼워 금형과 맞지 않는다.",
        ),
        (
            "디버링 장비로 버를 제거하고 모서리를 재검사한다.",
            "금형 클리어런스를 측정하여 표준값으로 조정한다.",
            "마모된 펀치 날을 교체하거나 재연마한다.",
        ),
        (
            "펀치 날을 3만 타마다 정기 연마한다.",
            "소재 입고 시 두께를 측정하여 규격을 확인한다.",
            "금형 클리어런스를 월 1회 점검한다.",
        ),
    ),
    SampleDefect(
        "foreign",
        "이물",
        "Foreign Material",
        "부품 표면이나 내부에 이물질이 섞여 있음",
        (
            "원료 투입구 덮개가 열린 채 작업하여 이물질이 혼입된다.",
            "설비 구동부의 마모 분진이 부품에 떨어진다.",
            "포장재 섬유가 부품에 붙는다.",
        ),
        (
            "이물 부품을 격리하고 이물 성분을 분석하여 발생원을 찾는다.",
            "원료 투입구와 호퍼 내부를 청소한다.",
            "설비 구동부 커버를 점검하고 마모 부품을 교체한다.",
        ),
        (
            "원료 투입구 덮개 개폐 상태를 시업 점검 항목에 추가한다.",
            "구동부에 분진 커버를 설치한다.",
            "무진 포장재를 사용한다.",
        ),
    ),
)

_INTRO = (
    "본 매뉴얼은 생산 라인에서 발견된 외관 불량의 원인과 대응 절차를 정리한 것이다.",
    "모든 작업자는 불량을 발견하면 해당 부품을 격리하고 품질 담당자에게 보고한다.",
)
_COMMON = (
    "설비 점검 중에는 반드시 전원을 차단하고 잠금 장치를 건다.",
    "불량 로트 처리 결과는 품질 시스템에 기록한다.",
)


def sample_manual_lines(
    product_name: str, defects: Sequence[SampleDefect] = SAMPLE_DEFECTS, style: ManualStyle = "numbered"
) -> list[str]:
    """Manual text as lines (``PAGE_BREAK`` forces a new page) in one of three heading styles."""
    lines: list[str] = [f"{product_name} 불량 대응 매뉴얼", ""]
    if style == "chapters":
        lines += ["제 1 장 개요", *_INTRO, PAGE_BREAK]
        for i, d in enumerate(defects, start=2):
            lines += [
                f"제 {i} 장 {d.name} ({d.english})",
                f"증상: {d.description}.",
                "1. 발생 원인",
                *d.causes,
                "2. 대응 방법",
                *d.actions,
                "3. 예방 대책",
                *d.preventions,
            ]
            if i % 2 == 1:
                lines.append(PAGE_BREAK)
        lines += [f"제 {len(defects) + 2} 장 공통 안전 수칙", *_COMMON]
        return lines
    if style == "bullets":
        lines += ["[개요]", *_INTRO]
        for i, d in enumerate(defects):
            lines += [
                f"{d.name} ({d.english.upper()})",
                f"증상: {d.description}.",
                "■ 발생 원인",
                *(f"- {c}" for c in d.causes),
                "■ 조치 가이드",
                *(f"- {a}" for a in d.actions),
            ]
            if i % 3 == 1:
                lines.append(PAGE_BREAK)  # page break inside a defect section: section must carry over
            lines += ["[예방 조치]", *(f"- {p}" for p in d.preventions)]
        return lines
    lines += ["제 1 장 개요", *_INTRO, "제 2 장 불량 유형별 대응"]
    for i, d in enumerate(defects, start=1):
        lines += [f"{i}. {d.name} ({d.english})", f"증상: {d.description}.", f"{i}.1 발생 원인", d.causes[0]]
        if i % 3 == 2:
            lines.append(PAGE_BREAK)  # break in the middle of the cause list
        lines += [
            *d.causes[1:],
            f"{i}.2 조치 가이드",
            *(f"{n}. {a}" for n, a in enumerate(d.actions, start=1)),  # numbered steps, not headings
            f"{i}.3 예방 조치",
            *d.preventions,
        ]
    lines += ["제 3 장 공통 안전 수칙", *_COMMON]
    return lines


def _font_path() -> Path:
    """NanumGothic shipped inside koreanize_matplotlib (located without importing it: importing
    it reconfigures matplotlib globally)."""
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("koreanize_matplotlib (NanumGothic font) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "fonts" / "NanumGothic.ttf"


def render_pdf(lines: Sequence[str], *, header: str = "", font_size: float = 10.0) -> bytes:
    """Render text lines to an A4 PDF with a Korean font, a running header and page-number footer."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    if "NanumGothic" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("NanumGothic", str(_font_path())))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    width, height = A4
    margin, leading = 56.0, font_size * 1.6
    usable = float(width) - 2 * margin
    page = 1

    def start_page() -> float:
        """Draw header/footer of the current page; return the first baseline."""
        c.setFont("NanumGothic", 8)
        if header:
            c.drawString(margin, height - 30, header)
        c.drawCentredString(width / 2, 24, f"- {page} -")
        c.setFont("NanumGothic", font_size)
        return float(height) - margin

    y = start_page()
    for line in lines:
        if line == PAGE_BREAK or y < margin:
            c.showPage()
            page += 1
            y = start_page()
            if line == PAGE_BREAK:
                continue
        # Greedy wrap on character width (Korean has no reliable word breaks in PDFs anyway).
        rest = line
        while True:
            cut = len(rest)
            while cut > 1 and float(pdfmetrics.stringWidth(rest[:cut], "NanumGothic", font_size)) > usable:
                cut -= 1
            c.drawString(margin, y, rest[:cut])
            y -= leading
            rest = rest[cut:]
            if not rest:
                break
    c.showPage()
    c.save()
    return buf.getvalue()


def build_sample_manual(
    product_name: str, style: ManualStyle = "numbered", defects: Sequence[SampleDefect] = SAMPLE_DEFECTS
) -> bytes:
    """A complete synthetic manual PDF for ``product_name``."""
    return render_pdf(sample_manual_lines(product_name, defects, style), header=f"{product_name} 품질 매뉴얼")
