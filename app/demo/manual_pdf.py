"""Render a product's Korean response manual to PDF (reportlab, embedded NanumGothic, reproducible bytes)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from app.demo.catalog import SUBSECTIONS, ProductSpec
from app.demo.textures import nanum_font_path

FONT = "NanumGothic"
FONT_BOLD = "NanumGothic-Bold"
PAGE_W, PAGE_H = A4
MARGIN_X = 64.0
MARGIN_TOP = 72.0
MARGIN_BOTTOM = 72.0
BODY_SIZE = 10.5
LEADING = 17.0


@dataclass(frozen=True)
class ManualSection:
    """A heading of the manual and the 1-based page it starts on."""

    number: str  # "3", "3.1"
    title: str  # full heading text, e.g. "3. 긁힘 (Scratch)"
    page: int
    defect_code: str | None  # set for defect chapters and their subsections


@lru_cache(maxsize=1)
def register_fonts() -> None:
    """Register NanumGothic regular and bold with reportlab once per process."""
    pdfmetrics.registerFont(TTFont(FONT, str(nanum_font_path())))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(nanum_font_path(bold=True))))


def wrap_text(text: str, font: str, size: float, width: float) -> list[str]:
    """Greedy line wrap by measured width; breaks at spaces, or inside a word that is too long by itself."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if pdfmetrics.stringWidth(candidate, font, size) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        # Korean has no hyphenation; a word wider than the line is split between characters.
        for ch in word:
            if pdfmetrics.stringWidth(current + ch, font, size) > width and current:
                lines.append(current)
                current = ""
            current += ch
    if current:
        lines.append(current)
    return lines


class _Writer:
    """Flows headings, paragraphs and bullets down A4 pages, numbering pages and recording headings."""

    def __init__(self, spec: ProductSpec, doc_no: str) -> None:
        self.buf = io.BytesIO()
        # invariant=1 fixes the creation date and document ID so the same input gives the same bytes.
        self.c = canvas.Canvas(self.buf, pagesize=A4, invariant=1, pageCompression=1)
        self.c.setTitle(f"{spec.name} 불량 대응 매뉴얼 ({spec.english} Defect Response Manual)")
        self.c.setAuthor("DefectLens 데모 품질팀")
        self.c.setSubject(spec.description)
        self.spec = spec
        self.doc_no = doc_no
        self.page = 1
        self.y = PAGE_H - MARGIN_TOP
        self.sections: list[ManualSection] = []

    def _decorate(self) -> None:
        # Drawn last on each page so text extraction yields the body before the running header/footer.
        c = self.c
        c.setFont(FONT, 8.5)
        c.setFillGray(0.4)
        c.drawString(MARGIN_X, PAGE_H - 40, f"{self.spec.name} 불량 대응 매뉴얼")
        c.drawRightString(PAGE_W - MARGIN_X, PAGE_H - 40, f"문서 번호 {self.doc_no}")
        c.setStrokeGray(0.75)
        c.line(MARGIN_X, PAGE_H - 46, PAGE_W - MARGIN_X, PAGE_H - 46)
        c.drawCentredString(PAGE_W / 2, 36, f"- {self.page} -")
        c.setFillGray(0.0)

    def new_page(self) -> None:
        self._decorate()
        self.c.showPage()
        self.page += 1
        self.y = PAGE_H - MARGIN_TOP

    def _need(self, height: float) -> None:
        if self.y - height < MARGIN_BOTTOM:
            self.new_page()

    def _lines(self, lines: list[str], font: str, size: float, x: float, leading: float) -> None:
        for line in lines:
            self._need(leading)
            self.c.setFont(font, size)
            self.c.drawString(x, self.y - size, line)
            self.y -= leading

    def heading(self, number: str, title: str, level: int, defect_code: str | None = None) -> None:
        size = 16.0 if level == 1 else 12.5
        # Keep a heading together with at least three lines of what follows it.
        self._need(size + 10 + 3 * LEADING)
        self.y -= 8 if level == 1 else 6
        text = f"{number}. {title}" if level == 1 else f"{number} {title}"
        self.sections.append(ManualSection(number, text, self.page, defect_code))
        self.c.setFont(FONT_BOLD, size)
        self.c.drawString(MARGIN_X, self.y - size, text)
        self.y -= size + (12 if level == 1 else 8)

    def paragraph(self, text: str, indent: float = 0.0) -> None:
        width = PAGE_W - 2 * MARGIN_X - indent
        self._lines(wrap_text(text, FONT, BODY_SIZE, width), FONT, BODY_SIZE, MARGIN_X + indent, LEADING)
        self.y -= 5

    def bullet(self, text: str, marker: str = "•") -> None:
        # Marker and first line are one string so extracted text keeps them on one line.
        indent = 4 + pdfmetrics.stringWidth(f"{marker} ", FONT, BODY_SIZE)
        width = PAGE_W - 2 * MARGIN_X - indent
        lines = wrap_text(text, FONT, BODY_SIZE, width)
        self._need(LEADING)
        self.c.setFont(FONT, BODY_SIZE)
        self.c.drawString(MARGIN_X + 4, self.y - BODY_SIZE, f"{marker} {lines[0]}")
        self.y -= LEADING
        self._lines(lines[1:], FONT, BODY_SIZE, MARGIN_X + indent, LEADING)
        self.y -= 3

    def title_block(self) -> None:
        c = self.c
        spec = self.spec
        self.y -= 40
        c.setFont(FONT_BOLD, 24)
        c.drawString(MARGIN_X, self.y - 24, f"{spec.name} 불량 대응 매뉴얼")
        self.y -= 40
        c.setFont(FONT, 13)
        c.setFillGray(0.3)
        c.drawString(MARGIN_X, self.y - 13, f"{spec.english} Defect Response Manual")
        c.setFillGray(0.0)
        self.y -= 36
        for label, value in (
            ("문서 번호", self.doc_no),
            ("개정", "Rev. 3"),
            ("시행일", "2026-11-01"),
            ("관리 부서", "품질팀 (Quality Assurance)"),
        ):
            c.setFont(FONT_BOLD, BODY_SIZE)
            c.drawString(MARGIN_X, self.y - BODY_SIZE, label)
            c.setFont(FONT, BODY_SIZE)
            c.drawString(MARGIN_X + 70, self.y - BODY_SIZE, value)
            self.y -= LEADING
        self.y -= 20

    def finish(self) -> bytes:
        self._decorate()
        self.c.showPage()
        self.c.save()
        return self.buf.getvalue()


def render_manual(spec: ProductSpec) -> tuple[bytes, list[ManualSection]]:
    """Build the PDF bytes for one product and list where every heading landed."""
    register_fonts()
    w = _Writer(spec, f"DL-QM-{spec.code.upper().replace('_', '-')}")
    w.title_block()
    w.heading("1", "제품 개요 (Product Overview)", 1)
    for para in spec.overview:
        w.paragraph(para)
    w.heading("2", "검사 기준 (Inspection Criteria)", 1)
    for item in spec.criteria:
        w.bullet(item)
    number = 2
    for defect in spec.defects:
        number += 1
        w.new_page()
        w.heading(str(number), f"{defect.name} ({defect.english})", 1, defect.code)
        w.paragraph(f"불량 정의: {defect.description}")
        bodies = (defect.causes, defect.actions, defect.preventions)
        for sub, ((ko, en), items) in enumerate(zip(SUBSECTIONS, bodies, strict=True), start=1):
            w.heading(f"{number}.{sub}", f"{ko} ({en})", 2, defect.code)
            for k, item in enumerate(items, start=1):
                w.bullet(item, marker=f"{k})" if sub == 2 else "•")
    number += 1
    w.new_page()
    w.heading(str(number), "안전 및 보고 체계 (Safety & Escalation)", 1)
    for item in spec.safety:
        w.bullet(item)
    return w.finish(), w.sections
