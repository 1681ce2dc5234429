"""Reading manual files (PDF, DOCX) into lines that keep their layout: page, font size, weight, style.

Runs inside the bounded parse process (app.manuals.parse_worker); nothing here imports torch or the
database, so the child process starts fast. Every failure is a ManualFileError with a code the admin
sees translated (``manuals.reason.<code>``).
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)

FileKind = Literal["pdf", "docx"]
ErrorCode = Literal[
    "not_manual",
    "encrypted",
    "too_many_pages",
    "too_large",
    "no_text",
    "too_complex",
    "timeout",
    "zip_bomb",
    "parse_failed",
]

_PDF_MAGIC = b"%PDF-"
_HEADER_WINDOW = 1024
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_BOLD_FONT = re.compile(r"bold|black|heavy|demi|semibold|,b\b|-b\b", re.IGNORECASE)
DOCX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


class ManualFileError(Exception):
    """A manual file that cannot be used; ``code`` names the reason (translated for the admin)."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        self.code: ErrorCode = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)


@dataclass(frozen=True)
class Limits:
    """Bounds on one manual: bytes, pages, decoded content bytes and (DOCX) the ZIP's expansion."""

    max_bytes: int = 50 * 1024 * 1024
    max_pages: int = 300
    max_decoded_bytes: int = 64 * 1024 * 1024
    max_zip_entries: int = 2000
    max_zip_uncompressed: int = 200 * 1024 * 1024
    max_zip_ratio: int = 200


@dataclass
class DocLine:
    """One line of a manual with the layout a reader uses to spot headings.

    Args:
        page: 1-based page (DOCX: counted from explicit and rendered page breaks).
        text: the line, NFC, spaces collapsed.
        size: font size in points (0 when unknown).
        bold: every visible character is bold.
        level: DOCX heading level (1 = "Heading 1"), 0 for body text.
        cells: the row's cell texts when the line is a table row.
        table: index of the table the row belongs to (-1 outside tables).
    """

    page: int
    text: str
    size: float = 0.0
    bold: bool = False
    level: int = 0
    cells: list[str] = field(default_factory=list)
    table: int = -1


@dataclass
class Document:
    """A manual read into lines, with its page count and file kind."""

    kind: FileKind
    page_count: int
    lines: list[DocLine] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (the parse process sends it to the server on stdout)."""
        return {"kind": self.kind, "page_count": self.page_count, "lines": [asdict(x) for x in self.lines]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Document:
        """Inverse of :meth:`to_json`."""
        return cls(
            kind=data["kind"],
            page_count=int(data["page_count"]),
            lines=[DocLine(**x) for x in data.get("lines", [])],
        )


def clean_text(text: str) -> str:
    """NFC (some writers emit decomposed jamo), collapsed spaces, stripped."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def detect_kind(data: bytes) -> FileKind | None:
    """ "pdf" or "docx" from the content (never from the file name), None for anything else."""
    if _PDF_MAGIC in data[:_HEADER_WINDOW]:
        return "pdf"
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
        if "word/document.xml" in names and "[Content_Types].xml" in names:
            return "docx"
    return None


def check_docx_archive(data: bytes, limits: Limits) -> None:
    """Refuse ZIP bombs before python-docx inflates anything: entry count, total size, ratio."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ManualFileError("not_manual", "bad zip") from exc
    if len(infos) > limits.max_zip_entries:
        raise ManualFileError("zip_bomb", f"{len(infos)} entries")
    total = sum(i.file_size for i in infos)
    packed = max(1, sum(i.compress_size for i in infos))
    if total > limits.max_zip_uncompressed or total > packed * limits.max_zip_ratio:
        raise ManualFileError("zip_bomb", f"{total:,} bytes unpacked from {packed:,}")
    for info in infos:
        if info.flag_bits & 0x1:
            raise ManualFileError("encrypted")


def check_upload(data: bytes, limits: Limits) -> tuple[FileKind, int]:
    """Cheap checks done inside the upload request: kind by content, size, ZIP limits, page count.

    Nothing here decodes page content (that happens in the bounded parse process).
    """
    if len(data) > limits.max_bytes:
        raise ManualFileError("too_large", f"{len(data):,} bytes")
    kind = detect_kind(data)
    if kind is None:
        raise ManualFileError("not_manual")
    if kind == "docx":
        check_docx_archive(data, limits)
        return kind, 0
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not _decrypt(reader):
            raise ManualFileError("encrypted")
        pages = len(reader.pages)
    except ManualFileError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # pypdf raises many unrelated types on garbage input
        raise ManualFileError("not_manual", str(exc)[:200]) from exc
    if pages == 0:
        raise ManualFileError("not_manual", "0 pages")
    if pages > limits.max_pages:
        raise ManualFileError("too_many_pages", f"{pages} > {limits.max_pages}")
    return kind, pages


def _decrypt(reader: Any) -> bool:
    """Owner-password-only PDFs open with an empty user password."""
    try:
        return bool(reader.decrypt(""))
    except Exception:
        return False


# ----- PDF --------------------------------------------------------------------------------------------------
@dataclass
class _Frag:
    text: str
    x: float
    size: float
    bold: bool


def _char_width(ch: str) -> float:
    return 1.0 if ord(ch) > 0x2E80 else 0.55


def _line_from_frags(page: int, frags: list[_Frag]) -> DocLine | None:
    text = clean_text("".join(f.text for f in frags))
    if not text:
        return None
    visible = [f for f in frags if f.text.strip()]
    chars = sum(len(f.text.strip()) for f in visible) or 1
    size = max((f.size for f in visible), default=0.0)
    bold = bool(visible) and sum(len(f.text.strip()) for f in visible if f.bold) / chars > 0.8
    # Cells: a horizontal jump much wider than the text before it (table columns drawn separately).
    cells: list[str] = []
    current = ""
    end = None
    for f in frags:
        gap = f.x - end if end is not None else 0.0
        if current.strip() and gap > 2.5 * max(f.size, 1.0):
            cells.append(clean_text(current))
            current = ""
        elif (
            current
            and gap > 0.2 * max(f.size, 1.0)
            and not current.endswith(" ")
            and not f.text.startswith(" ")
        ):
            current += " "
        current += f.text
        end = f.x + sum(_char_width(c) for c in f.text) * max(f.size, 1.0)
    if current.strip():
        cells.append(clean_text(current))
    return DocLine(
        page=page, text=text, size=round(size, 1), bold=bold, cells=cells if len(cells) >= 2 else []
    )


def _content_bytes(page: Any) -> int:
    """Decoded size of a page's content streams, without parsing their operators (that is the cost)."""
    contents = page.get("/Contents")
    if contents is None:
        return 0
    contents = contents.get_object()
    streams = list(contents) if isinstance(contents, list) else [contents]
    return sum(len(stream.get_object().get_data()) for stream in streams)


class _LineCollector:
    """pypdf text visitor grouping fragments into lines by baseline (not by pypdf's newlines: table
    cells drawn one by one share a baseline)."""

    def __init__(self) -> None:
        self.lines: list[list[_Frag]] = []
        self._y: list[float] = []

    def visit(self, text: str, cm: Any, tm: Any, font: Any, font_size: float) -> None:
        """pypdf's visitor_text callback."""
        if not text or not text.strip("\n"):
            return
        name = str((font or {}).get("/BaseFont", "")) if font else ""
        size = float(font_size) * (abs(float(tm[0])) or 1.0) * (abs(float(cm[0])) or 1.0)
        x = float(tm[4]) * float(cm[0]) + float(tm[5]) * float(cm[2]) + float(cm[4])
        y = float(tm[4]) * float(cm[1]) + float(tm[5]) * float(cm[3]) + float(cm[5])
        frag = _Frag(text.replace("\n", " "), x, size, bool(_BOLD_FONT.search(name)))
        if self.lines and abs(y - self._y[-1]) <= max(0.4 * size, 1.0):
            self.lines[-1].append(frag)
        else:
            self.lines.append([frag])
            self._y.append(y)


def _extract_pdf(data: bytes, limits: Limits) -> Document:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not _decrypt(reader):
            raise ManualFileError("encrypted")
        n_pages = len(reader.pages)
    except ManualFileError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise ManualFileError("not_manual", str(exc)[:200]) from exc
    if n_pages > limits.max_pages:
        raise ManualFileError("too_many_pages", f"{n_pages} > {limits.max_pages}")
    # The budget is checked over every page before any text is extracted: pages sharing one huge
    # stream cost its parse once per page, so each page counts it again.
    decoded = 0
    readable: list[bool] = []
    for i in range(n_pages):
        try:
            decoded += _content_bytes(reader.pages[i])
            readable.append(True)
        except MemoryError:
            raise
        except Exception as exc:  # one broken page must not sink the whole manual
            logger.warning("page %d contents unreadable: %s", i + 1, exc)
            readable.append(False)
        if decoded > limits.max_decoded_bytes:
            raise ManualFileError("too_complex", f"{decoded:,} decoded bytes by page {i + 1}")
    lines: list[DocLine] = []
    for i in range(n_pages):
        if not readable[i]:
            continue
        page = reader.pages[i]
        collector = _LineCollector()
        try:
            page.extract_text(visitor_text=collector.visit)
        except MemoryError:
            raise
        except Exception as exc:  # one broken page must not sink the whole manual
            logger.warning("text extraction failed on page %d: %s", i + 1, exc)
            continue
        for group in collector.lines:
            line = _line_from_frags(i + 1, sorted(group, key=lambda f: f.x))
            if line is not None:
                lines.append(line)
    if not lines:
        raise ManualFileError("no_text")
    return Document(kind="pdf", page_count=n_pages, lines=lines)


# ----- DOCX -------------------------------------------------------------------------------------------------
_HEADING_STYLE = re.compile(r"(?:heading|제목)\s*(\d)", re.IGNORECASE)
_TITLE_STYLE = re.compile(r"^(title|제목)$", re.IGNORECASE)


def _style_level(paragraph: Any) -> int:
    style = paragraph.style
    while style is not None:
        name = str(style.name or "")
        if m := _HEADING_STYLE.search(name):
            return int(m.group(1))
        if _TITLE_STYLE.match(name):
            return 1
        style = style.base_style
    try:
        outline = paragraph._p.pPr.outlineLvl if paragraph._p.pPr is not None else None
        if outline is not None:
            return int(outline.val) + 1
    except AttributeError:
        pass
    return 0


def _run_size(paragraph: Any) -> float:
    sizes = [r.font.size.pt for r in paragraph.runs if r.text.strip() and r.font.size is not None]
    if sizes:
        return float(max(sizes))
    style = paragraph.style
    while style is not None:
        if style.font is not None and style.font.size is not None:
            return float(style.font.size.pt)
        style = style.base_style
    return 0.0


def _run_bold(paragraph: Any) -> bool:
    runs = [r for r in paragraph.runs if r.text.strip()]
    if not runs:
        return False

    def bold(run: Any) -> bool:
        if run.bold is not None:
            return bool(run.bold)
        style = paragraph.style
        while style is not None:
            if style.font is not None and style.font.bold is not None:
                return bool(style.font.bold)
            style = style.base_style
        return False

    return all(bold(r) for r in runs)


def _page_breaks(element: Any) -> int:
    xml = element.xml if hasattr(element, "xml") else ""
    return xml.count('w:type="page"') + xml.count("lastRenderedPageBreak")


def _extract_docx(data: bytes, limits: Limits) -> Document:
    check_docx_archive(data, limits)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as exc:
        raise ManualFileError("not_manual", str(exc)[:200]) from exc
    page = 1
    lines: list[DocLine] = []
    tables = 0
    for block in document.element.body.iterchildren():
        tag = block.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(block, document)
            page += _page_breaks(block) if lines else 0
            text = clean_text(paragraph.text)
            if text:
                lines.append(
                    DocLine(
                        page=page,
                        text=text,
                        size=_run_size(paragraph),
                        bold=_run_bold(paragraph),
                        level=_style_level(paragraph),
                    )
                )
        elif tag == "tbl":
            table = Table(block, document)
            for row in table.rows:
                cells: list[str] = []
                for cell in row.cells:
                    value = clean_text(" ".join(p.text for p in cell.paragraphs))
                    if not cells or value != cells[-1] or not value:  # merged cells repeat their text
                        cells.append(value)
                if any(cells):
                    lines.append(DocLine(page=page, text=" | ".join(cells), cells=cells, table=tables))
            tables += 1
        if len(lines) > limits.max_pages * 200:
            raise ManualFileError("too_complex", f"more than {limits.max_pages * 200} lines")
    if not lines:
        raise ManualFileError("no_text")
    return Document(kind="docx", page_count=page, lines=lines)


def extract(data: bytes, limits: Limits) -> Document:
    """Read a PDF or DOCX manual into layout lines (call it inside the bounded parse process)."""
    if len(data) > limits.max_bytes:
        raise ManualFileError("too_large", f"{len(data):,} bytes")
    kind = detect_kind(data)
    if kind == "pdf":
        return _extract_pdf(data, limits)
    if kind == "docx":
        return _extract_docx(data, limits)
    raise ManualFileError("not_manual")
