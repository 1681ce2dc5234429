"""Text extraction from uploaded PDF manuals (pypdf), with typed, user-explainable errors."""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

from pypdf import PdfReader

logger = logging.getLogger(__name__)

PdfErrorCode = Literal["not_pdf", "encrypted", "too_many_pages", "too_large", "no_text"]

_PDF_MAGIC = b"%PDF-"
# The PDF spec lets the header sit anywhere in the first 1024 bytes (some writers prepend junk).
_HEADER_WINDOW = 1024
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")

_MESSAGES: dict[str, str] = {
    "not_pdf": "PDF 파일이 아니거나 손상되어 읽을 수 없습니다.",
    "encrypted": "암호로 보호된 PDF입니다. 암호를 해제한 뒤 다시 올려 주세요.",
    "too_many_pages": "PDF 페이지 수가 허용 한도를 넘습니다.",
    "too_large": "PDF 파일 크기가 허용 한도를 넘습니다.",
    "no_text": (
        "PDF에서 텍스트를 추출할 수 없습니다(스캔 이미지만 있는 문서로 보입니다). "
        "텍스트가 있는 PDF를 올려 주세요."
    ),
}


class PdfError(Exception):
    """A PDF that cannot be used as a manual.

    Attributes:
        code: machine-readable reason: "not_pdf", "encrypted", "too_many_pages", "too_large", "no_text".
        message: a Korean sentence suitable for showing to the uploader.
    """

    def __init__(self, code: PdfErrorCode, detail: str = "") -> None:
        self.code: PdfErrorCode = code
        self.message = _MESSAGES[code] + (f" ({detail})" if detail else "")
        super().__init__(self.message)


@dataclass(frozen=True)
class PageText:
    """Extracted text of one page; ``number`` is 1-based."""

    number: int
    text: str


@dataclass(frozen=True)
class ParsedPdf:
    """Result of :func:`parse_pdf`.

    Args:
        pages: every page in order (pages without text have ``text == ""``).
    """

    pages: list[PageText] = field(default_factory=list)

    @property
    def page_count(self) -> int:
        """Number of pages in the document."""
        return len(self.pages)

    @property
    def text_page_count(self) -> int:
        """Number of pages that produced text."""
        return sum(1 for p in self.pages if p.text)


def _clean(text: str) -> str:
    """Normalise extracted text: NFC Hangul, collapsed spaces, no blank-line runs."""
    # Some PDF writers emit decomposed jamo; NFC makes them match typed queries.
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    return "\n".join(out).strip()


def parse_pdf(data: bytes, *, max_pages: int = 300, max_bytes: int = 50 * 1024 * 1024) -> ParsedPdf:
    """Extract per-page text from PDF bytes.

    Args:
        data: the uploaded file content.
        max_pages: reject documents with more pages.
        max_bytes: reject files larger than this.

    Returns:
        ParsedPdf with one PageText per page (1-based numbers).

    Raises:
        PdfError: with ``code`` not_pdf / encrypted / too_many_pages / too_large / no_text.
            No pypdf exception escapes.
    """
    if len(data) > max_bytes:
        raise PdfError("too_large", f"{len(data):,} > {max_bytes:,} bytes")
    if _PDF_MAGIC not in data[:_HEADER_WINDOW]:
        raise PdfError("not_pdf")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except Exception as exc:  # pypdf raises many unrelated types on garbage input
        logger.info("unreadable PDF: %s", exc)
        raise PdfError("not_pdf") from exc

    try:
        encrypted = reader.is_encrypted
    except Exception as exc:
        raise PdfError("not_pdf") from exc
    if encrypted:
        # Owner-password-only PDFs (printing/copy restrictions) open with an empty user password.
        try:
            ok = bool(reader.decrypt(""))
        except Exception as exc:  # e.g. AES without the optional crypto dependency
            logger.info("cannot decrypt PDF: %s", exc)
            ok = False
        if not ok:
            raise PdfError("encrypted")

    try:
        n_pages = len(reader.pages)
    except Exception as exc:
        raise PdfError("not_pdf") from exc
    if n_pages == 0:
        raise PdfError("not_pdf", "0 pages")
    if n_pages > max_pages:
        raise PdfError("too_many_pages", f"{n_pages} > {max_pages}")

    pages: list[PageText] = []
    for i in range(n_pages):
        try:
            raw = reader.pages[i].extract_text() or ""
        except Exception as exc:  # one broken page must not sink the whole manual
            logger.warning("text extraction failed on page %d: %s", i + 1, exc)
            raw = ""
        pages.append(PageText(number=i + 1, text=_clean(raw)))

    if not any(p.text for p in pages):
        raise PdfError("no_text")
    return ParsedPdf(pages=pages)
