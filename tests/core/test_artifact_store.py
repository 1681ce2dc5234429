"""Artifact versions in the object storage: published with checksums, fetched and verified into a cache,
refused when tampered with, pruned oldest first; the change log cursor catches rows that commit late."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import insert

from app.cli import run_migrations
from app.core import artifact_store, changelog
from app.core.storage import LocalStorage, ObjectStorage, make_storage
from app.db.session import make_engine, make_session_factory
from app.db.tables import ChangeLog
from app.ml.errors import ArtifactError
from tests.conftest import make_settings


def _version(tmp_path: Path, name: str = "v") -> Path:
    folder = tmp_path / "build" / name
    (folder / "defect").mkdir(parents=True)
    (folder / "defect" / "gallery.json").write_text('{"n": 1}')
    (folder / "bank.bin").write_bytes(bytes(range(256)) * 40)
    return folder


def _roundtrip(storage: ObjectStorage, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "reader")
    key = artifact_store.version_key("search_index", "all", "20261201T000000-aa")
    published = artifact_store.publish(storage, _version(tmp_path), key)
    assert published.files == 2
    assert storage.exists(f"{key}/manifest.json")
    fetched = artifact_store.fetch(storage, settings, key, published.checksum)
    assert fetched == settings.artifacts_path / "cache" / key
    assert (fetched / "bank.bin").read_bytes() == bytes(range(256)) * 40
    assert (fetched / "defect" / "gallery.json").read_text() == '{"n": 1}'
    # Cached: a second fetch reads nothing from the storage.
    storage.delete(f"{key}/bank.bin")
    assert artifact_store.fetch(storage, settings, key, published.checksum) == fetched


def test_publish_and_fetch_through_local_files(tmp_path: Path) -> None:
    _roundtrip(LocalStorage(tmp_path / "objects"), tmp_path)


@pytest.mark.s3
def test_publish_and_fetch_through_s3(tmp_path: Path, s3_server: dict[str, str]) -> None:
    settings = make_settings(
        tmp_path,
        storage_backend="s3",
        s3_endpoint_url=s3_server["endpoint"],
        s3_bucket=f"artifacts-{uuid.uuid4().hex[:8]}",
        s3_access_key=s3_server["access_key"],
        s3_secret_key=s3_server["secret_key"],
        s3_create_bucket=True,
    )
    _roundtrip(make_storage(settings), tmp_path)


def test_a_tampered_object_or_manifest_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects")
    settings = make_settings(tmp_path / "reader")
    key = artifact_store.version_key("anomaly_model", "product-1", "20261201T000000")
    published = artifact_store.publish(storage, _version(tmp_path), key)
    storage.put(f"{key}/bank.bin", b"not the bank", "application/octet-stream")
    with pytest.raises(ArtifactError, match=r"checksum of bank\.bin"):
        artifact_store.fetch(storage, settings, key, published.checksum)
    assert not artifact_store.local_dir(settings, key).exists()
    with pytest.raises(ArtifactError, match="manifest checksum"):
        artifact_store.fetch(storage, settings, key, "0" * 64)
    storage.delete(f"{key}/manifest.json")
    with pytest.raises(ArtifactError, match="manifest unreadable"):
        artifact_store.fetch(storage, settings, key, published.checksum)


def test_prune_keeps_the_kept_versions_and_anything_newer(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects")
    settings = make_settings(tmp_path)
    names = ["20261201T000001", "20261201T000002", "20261201T000003", "20261201T000004"]
    for name in names:
        key = artifact_store.version_key("manual_index", "product-3", name)
        published = artifact_store.publish(storage, _version(tmp_path, name), key)
        artifact_store.fetch(storage, settings, key, published.checksum)
    # keep 2 and 3 (current and the one it replaced); 4 is newer (someone is publishing it): untouched
    artifact_store.prune(storage, settings, "manual_index", "product-3", {names[1], names[2]})
    left = {k.split("/")[3] for k in storage.list("artifacts/manual_index/product-3/")}
    assert left == set(names[1:])
    cached = {p.name for p in (settings.artifacts_path / "cache/artifacts/manual_index/product-3").iterdir()}
    assert cached == set(names[1:])


def test_the_cursor_applies_rows_that_commit_after_a_higher_id(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    run_migrations(settings)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    cursor = changelog.ChangeCursor()
    row = {"kind": changelog.IMAGE_ADDED, "origin": "test", "payload": {}}
    with factory() as session:
        session.execute(insert(ChangeLog), [{"id": 1, **row}, {"id": 3, **row}])
        session.commit()
        assert [c.id for c in cursor.poll(session)] == [1, 3]
        assert set(cursor.gaps) == {2}  # id 2 was given out but not committed yet
        assert cursor.poll(session) == []
        session.execute(insert(ChangeLog), [{"id": 2, **row}, {"id": 4, **row}])
        session.commit()
        assert [c.id for c in cursor.poll(session)] == [2, 4]
        assert cursor.gaps == {}
        assert cursor.position == 4
    engine.dispose()


def test_vectors_survive_the_log_payload() -> None:
    import numpy as np

    vector = np.linspace(-1, 1, 512, dtype=np.float32)
    assert np.array_equal(changelog.decode_vector(changelog.encode_vector(vector)), vector)
    assert changelog.decode_vector(None) is None
