"""Object storage: one interface, a local-files backend (embedded default) and an S3 backend (NCP, SeaweedFS).

Key layout: `manuals/{product_id}/…`, `images/normal/{product_id}/…`,
`images/defect/{product_id}_{defect_type_id}/…`, `uploads/{yyyy-mm-dd}/{uuid}.{ext}`,
`results/{inspection_id}/…`. Keys are validated so that no key can name a path outside the store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from app.core.config import Settings
from app.core.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)*$")


class StorageError(Exception):
    """The object store failed or refused an operation."""


class ObjectNotFoundError(StorageError):
    """No object under that key."""


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise ValueError."""
    if len(key) > 512 or not _KEY_RE.match(key) or any(part in {".", ".."} for part in key.split("/")):
        raise ValueError("unsafe object key")
    return key


class ObjectStorage(Protocol):
    """What DefectLens needs of an object store."""

    backend: str

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]: ...

    def presigned_url(self, key: str, *, ttl_s: int, file_name: str | None = None) -> str | None: ...

    def check(self) -> None: ...


class LocalStorage:
    """Objects as files under one root directory (the embedded default)."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError("unsafe object key")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write atomically: readers see the old object or the new one, never a partial file."""
        atomic_write_bytes(self._path(key), data)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(key) from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return
        for path in sorted(start.rglob("*")):
            if path.is_file() and not path.name.startswith("."):  # in-flight temp files
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def presigned_url(self, key: str, *, ttl_s: int, file_name: str | None = None) -> str | None:
        """Local files have no URL of their own; the app streams them."""
        return None

    def check(self) -> None:
        probe = self.root / ".ready-probe"
        probe.write_bytes(b"ok")
        probe.unlink()


def make_s3_client(*, endpoint_url: str, access_key: str, secret_key: str, region: str) -> Any:
    """A boto3 S3 client set up for NCP Object Storage's gaps (path style, checksums only when required)."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or None,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )


class S3Storage:
    """An S3-compatible bucket via boto3, written for NCP Object Storage's gaps.

    NCP has no ListObjectsV2 (we page `list_objects` by Marker), rejects boto3's default request checksums
    (we compute them only when required) and wants path-style addressing.
    """

    backend = "s3"

    def __init__(
        self,
        *,
        endpoint_url: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str,
        create_bucket: bool = False,
    ) -> None:
        self.bucket = bucket
        self.client: Any = make_s3_client(
            endpoint_url=endpoint_url, access_key=access_key, secret_key=secret_key, region=region
        )
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                # Two servers starting at once both see no bucket; the one that loses the
                # race to create it finds it made by the other, which is what it wanted.
                code = exc.response.get("Error", {}).get("Code")
                if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=validate_key(key), Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                raise ObjectNotFoundError(key) from exc
            raise StorageError(str(exc.response.get("Error", {}).get("Code", "error"))) from exc
        body: bytes = response["Body"].read()
        return body

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=validate_key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def list(self, prefix: str) -> Iterator[str]:
        """Page with ListObjects (v1) and Marker, since NCP does not implement ListObjectsV2."""
        marker = ""
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if marker:
                kwargs["Marker"] = marker
            page = self.client.list_objects(**kwargs)
            contents = page.get("Contents", [])
            for item in contents:
                yield str(item["Key"])
            if not page.get("IsTruncated") or not contents:
                return
            # NextMarker is only returned with a delimiter; fall back to the last key.
            marker = str(page.get("NextMarker") or contents[-1]["Key"])

    def presigned_url(self, key: str, *, ttl_s: int, file_name: str | None = None) -> str | None:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": validate_key(key)}
        if file_name:
            params["ResponseContentDisposition"] = f"inline; filename*=UTF-8''{_quote(file_name)}"
        url: str = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl_s)
        return url

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def make_storage(settings: Settings) -> ObjectStorage:
    """The storage backend the settings ask for."""
    if settings.storage_backend == "s3":
        return S3Storage(
            endpoint_url=settings.s3_endpoint_url,
            bucket=settings.s3_bucket,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            region=settings.s3_region,
            create_bucket=settings.s3_create_bucket,
        )
    return LocalStorage(settings.local_storage_path)
