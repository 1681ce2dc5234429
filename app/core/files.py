"""Files over HTTP: reading an upload within a size limit, and serving stored objects to browsers (a
short-lived presigned URL, or the bytes through the app)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import UploadFile
from fastapi.responses import RedirectResponse, Response

from app.core.config import Settings
from app.core.errors import NotFoundError, PayloadTooLargeError
from app.core.storage import ObjectNotFoundError, ObjectStorage


async def read_upload(file: UploadFile, *, limit: int, error_key: str = "errors.file_too_large") -> bytes:
    """The uploaded bytes, refusing more than `limit` (413, `error_key` with the file's name and the
    limit in MB) without reading it all."""
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(error_key, name=file.filename or "", limit_mb=limit // 2**20)
    return data


def object_response(
    storage: ObjectStorage,
    settings: Settings,
    *,
    key: str,
    content_type: str,
    file_name: str,
    download: bool = False,
) -> Response:
    """Redirect to a presigned URL (S3) or stream the object (local storage / S3_SERVE_VIA_APP)."""
    if not settings.s3_serve_via_app:
        url = storage.presigned_url(key, ttl_s=settings.presigned_url_ttl_s, file_name=file_name)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "private, no-store"})
    try:
        data = storage.get(key)
    except ObjectNotFoundError as exc:
        raise NotFoundError("errors.file_missing") from exc
    disposition = "attachment" if download else "inline"
    return Response(
        content=data,
        media_type=content_type,
        headers={
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(file_name, safe='')}",
            "Cache-Control": "private, max-age=300",
        },
    )
