"""Expanding uploaded ZIP archives safely: no zip slip, no zip bombs, no nested archives."""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from app.core.errors import InvalidInputError, PayloadTooLargeError

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
_ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz"}


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an archive may expand to."""

    max_entries: int
    max_total_bytes: int
    max_entry_bytes: int


@dataclass(frozen=True)
class ArchiveEntry:
    """One entry: its bytes, or the reason it was refused (translation key)."""

    name: str
    data: bytes | None
    reason: str | None = None


def is_zip(data: bytes) -> bool:
    """True for ZIP bytes (by signature, not by file name)."""
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def iter_zip_images(data: bytes, limits: ArchiveLimits) -> Iterator[ArchiveEntry]:
    """Yield image entries of a ZIP; the whole archive is refused up front if it is a bomb or unreadable."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [info for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidInputError("errors.bad_zip") from exc
    if len(infos) > limits.max_entries:
        raise PayloadTooLargeError("errors.zip_too_many_entries", limit=limits.max_entries)
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_total_bytes:
        raise PayloadTooLargeError("errors.zip_too_large", limit_mb=limits.max_total_bytes // (1024 * 1024))
    total = 0
    for info in infos:
        name = info.filename
        path = PurePosixPath(name.replace("\\", "/"))
        if not path.parts or path.name in {"", ".", ".."}:
            yield ArchiveEntry(name=name, data=None, reason="errors.zip_entry_bad_name")
            continue
        base = path.name
        if path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")) or ":" in path.parts[0]:
            yield ArchiveEntry(name=name, data=None, reason="errors.zip_unsafe_path")
            continue
        if base.startswith(".") or "__MACOSX" in path.parts:
            continue
        suffix = path.suffix.lower()
        if suffix in _ARCHIVE_SUFFIXES:
            yield ArchiveEntry(name=name, data=None, reason="errors.zip_nested_archive")
            continue
        if suffix not in _IMAGE_SUFFIXES:
            yield ArchiveEntry(name=name, data=None, reason="errors.zip_not_image")
            continue
        if info.file_size > limits.max_entry_bytes:
            yield ArchiveEntry(name=name, data=None, reason="errors.file_too_large_plain")
            continue
        if info.flag_bits & 0x1:
            yield ArchiveEntry(name=name, data=None, reason="errors.zip_entry_encrypted")
            continue
        # Declared sizes can lie: read with a hard cap and count what really comes out. One entry is
        # decompressed at a time; a damaged one is refused and the rest still come.
        try:
            with archive.open(info) as handle:
                content = handle.read(limits.max_entry_bytes + 1)
        except NotImplementedError:
            yield ArchiveEntry(name=name, data=None, reason="errors.zip_entry_compression")
            continue
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError):
            yield ArchiveEntry(name=name, data=None, reason="errors.zip_entry_unreadable")
            continue
        total += len(content)
        if len(content) > limits.max_entry_bytes:
            yield ArchiveEntry(name=name, data=None, reason="errors.file_too_large_plain")
            continue
        if total > limits.max_total_bytes:
            raise PayloadTooLargeError(
                "errors.zip_too_large", limit_mb=limits.max_total_bytes // (1024 * 1024)
            )
        yield ArchiveEntry(name=base, data=content)
