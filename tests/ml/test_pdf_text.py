"""PDF manual parsing: Korean text per page, and clear typed errors for unusable uploads."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pypdf import PdfWriter
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from app.ml.manual_samples import build_sample_manual
from app.ml.pdf_text import PdfError, parse_pdf


@pytest.fixture(scope="module")
def manual_pdf() -> bytes:
    return build_sample_manual("브래킷 A")


def _encrypt(data: bytes, *, user: str, owner: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password=user, owner_password=owner, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_extracts_korean_text_with_one_based_page_numbers(manual_pdf: bytes) -> None:
    parsed = parse_pdf(manual_pdf, max_pages=50, max_bytes=10_000_000)
    assert [p.number for p in parsed.pages] == list(range(1, parsed.page_count + 1))
    assert parsed.page_count >= 3
    assert "1. 긁힘 (Scratch)" in parsed.pages[0].text
    assert any("균열 부품은 재작업하지 않고 전량 폐기한다." in p.text for p in parsed.pages)


@pytest.mark.parametrize("data", [b"hello, not a pdf", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, b""])
def test_rejects_non_pdf_bytes(data: bytes) -> None:
    with pytest.raises(PdfError) as err:
        parse_pdf(data, max_pages=10, max_bytes=1_000_000)
    assert err.value.code == "not_pdf"
    assert "PDF" in err.value.message


def test_rejects_corrupt_pdf_with_valid_header() -> None:
    with pytest.raises(PdfError) as err:
        parse_pdf(b"%PDF-1.7\n" + b"\x00garbage" * 50, max_pages=10, max_bytes=1_000_000)
    assert err.value.code == "not_pdf"


def test_rejects_password_protected_pdf(manual_pdf: bytes) -> None:
    locked = _encrypt(manual_pdf, user="secret", owner="owner")
    with pytest.raises(PdfError) as err:
        parse_pdf(locked, max_pages=50, max_bytes=10_000_000)
    assert err.value.code == "encrypted"
    assert "암호" in err.value.message


def test_opens_pdf_with_only_an_owner_password(manual_pdf: bytes) -> None:
    """Copy/print-restricted manuals (empty user password) are common and must still be readable."""
    restricted = _encrypt(manual_pdf, user="", owner="owner")
    parsed = parse_pdf(restricted, max_pages=50, max_bytes=10_000_000)
    assert "긁힘" in parsed.pages[0].text


def test_image_only_pdf_reports_no_text() -> None:
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawImage(ImageReader(Image.new("RGB", (64, 64), (200, 30, 30))), 100, 500, 200, 200)
    c.showPage()
    c.save()
    with pytest.raises(PdfError) as err:
        parse_pdf(buf.getvalue(), max_pages=10, max_bytes=1_000_000)
    assert err.value.code == "no_text"


def test_rejects_too_many_pages(manual_pdf: bytes) -> None:
    with pytest.raises(PdfError) as err:
        parse_pdf(manual_pdf, max_pages=2, max_bytes=10_000_000)
    assert err.value.code == "too_many_pages"


def test_rejects_too_large_file(manual_pdf: bytes) -> None:
    with pytest.raises(PdfError) as err:
        parse_pdf(manual_pdf, max_pages=50, max_bytes=1000)
    assert err.value.code == "too_large"
