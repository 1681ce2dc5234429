"""Both object-store backends behave the same; S3 runs against a real SeaweedFS server with SigV4."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.core.storage import LocalStorage, ObjectNotFoundError, ObjectStorage, S3Storage, validate_key


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStorage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "objects")
        return
    server = request.getfixturevalue("s3_server")
    yield S3Storage(
        endpoint_url=server["endpoint"],
        bucket=f"b{tmp_path.name[-12:].lower().replace('_', '-')}x",
        access_key=server["access_key"],
        secret_key=server["secret_key"],
        region="kr-standard",
        create_bucket=True,
    )


def test_put_get_delete_roundtrip(storage: ObjectStorage) -> None:
    storage.put("images/normal/1/p_ok_001.png", b"png-bytes", "image/png")
    assert storage.exists("images/normal/1/p_ok_001.png")
    assert storage.get("images/normal/1/p_ok_001.png") == b"png-bytes"
    storage.delete("images/normal/1/p_ok_001.png")
    assert not storage.exists("images/normal/1/p_ok_001.png")
    with pytest.raises(ObjectNotFoundError):
        storage.get("images/normal/1/p_ok_001.png")


def test_list_pages_past_one_thousand_keys_by_prefix(storage: ObjectStorage) -> None:
    count = 1005 if isinstance(storage, LocalStorage) else 1003  # more than one ListObjects page
    for i in range(count):
        storage.put(f"uploads/2026-11-21/{i:05d}.png", b"x", "image/png")
    storage.put("uploads/2026-11-22/other.png", b"x", "image/png")
    keys = list(storage.list("uploads/2026-11-21/"))
    assert len(keys) == count
    assert keys == sorted(keys)


@pytest.mark.parametrize("key", ["../etc/passwd", "/etc/passwd", "images/../../x", "a//b", "", "images/./x"])
def test_unsafe_keys_are_refused(storage: ObjectStorage, key: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        storage.put(key, b"x", "text/plain")
    with pytest.raises(ValueError, match="unsafe"):
        validate_key(key)


def test_presigned_url_is_signed_and_expires(s3_server: dict[str, str], tmp_path: Path) -> None:
    storage = S3Storage(
        endpoint_url=s3_server["endpoint"],
        bucket="presign-test",
        access_key=s3_server["access_key"],
        secret_key=s3_server["secret_key"],
        region="kr-standard",
        create_bucket=True,
    )
    storage.put("results/1/overlay.png", b"overlay", "image/png")
    url = storage.presigned_url("results/1/overlay.png", ttl_s=60)
    assert url is not None
    assert httpx.get(url).content == b"overlay"
    assert httpx.get(url.replace("Signature=", "Signature=0")).status_code == 403
    unsigned = f"{s3_server['endpoint']}/presign-test/results/1/overlay.png"
    assert httpx.get(unsigned).status_code == 403


def test_wrong_secret_is_rejected_by_the_real_server(s3_server: dict[str, str]) -> None:
    storage = S3Storage(
        endpoint_url=s3_server["endpoint"],
        bucket="presign-test",
        access_key=s3_server["access_key"],
        secret_key="wrong-secret",
        region="kr-standard",
    )
    with pytest.raises(Exception, match=r"(?i)signature|denied|forbidden|403"):
        storage.put("uploads/x.png", b"x", "image/png")


def test_servers_starting_at_once_share_the_new_bucket(s3_server: dict[str, str], tmp_path: Path) -> None:
    """Several servers starting together on an empty S3 all come up; the losers of the race to
    create the bucket find it made by the winner (CI saw a second server die of BucketAlreadyOwnedByYou)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from botocore.exceptions import ClientError

    bucket = f"race{tmp_path.name[-10:].lower().replace('_', '-')}x"
    barrier = threading.Barrier(6)

    def start() -> S3Storage:
        barrier.wait()
        return S3Storage(
            endpoint_url=s3_server["endpoint"],
            bucket=bucket,
            access_key=s3_server["access_key"],
            secret_key=s3_server["secret_key"],
            region="kr-standard",
            create_bucket=True,
        )

    with ThreadPoolExecutor(6) as pool:
        servers = list(pool.map(lambda _: start(), range(6)))
    servers[0].put("a/b.txt", b"one", "text/plain")
    assert all(s.get("a/b.txt") == b"one" for s in servers)

    # The race in its narrowest form: the bucket appears between our HEAD and our CREATE.
    late = S3Storage(
        endpoint_url=s3_server["endpoint"],
        bucket=bucket,
        access_key=s3_server["access_key"],
        secret_key=s3_server["secret_key"],
        region="kr-standard",
    )

    def head_missing(**_: object) -> None:
        raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadBucket")

    late.client.head_bucket = head_missing
    late._ensure_bucket()
    assert late.get("a/b.txt") == b"one"
