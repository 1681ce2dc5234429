"""Hostile manual files built in code: a PDF whose pages share one huge content stream, a DOCX ZIP bomb."""

from __future__ import annotations

import io
import zipfile
import zlib


def shared_stream_pdf(pages: int = 10, decoded_bytes: int = 1_000_000) -> bytes:
    """A few-KB PDF whose ``pages`` all draw one ``decoded_bytes`` content stream of tiny text operators
    (issue 14 item 6: every page parses the whole stream again)."""
    ops = b"BT /F1 1 Tf (a) Tj ET\n"
    content = zlib.compress(ops * (decoded_bytes // len(ops)), 9)
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    objects += [
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
        b"/Contents 4 0 R >>"
        for _ in range(pages)
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def docx_zip_bomb(unpacked_bytes: int = 300 * 1024 * 1024) -> bytes:
    """A ZIP with the parts a DOCX has, one of them inflating to ``unpacked_bytes`` of zeros."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
        with archive.open("word/media/filler.bin", "w", force_zip64=True) as entry:
            block = b"\0" * (1024 * 1024)
            for _ in range(unpacked_bytes // len(block)):
                entry.write(block)
    return buf.getvalue()
