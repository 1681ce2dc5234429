"""Backup and restore across the real backends: SQLite + local files into MariaDB + SeaweedFS S3 and back.

A restored instance must answer the same searches without re-embedding anything, refuse to be restored over,
and a damaged archive must leave the target as empty as it was.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.core.backup import create_backup, restore_backup
from app.core.config import Settings
from app.core.errors import InvalidInputError
from app.core.i18n import translate
from app.core.storage import make_storage
from app.deployments import search_index
from app.main import create_app
from app.ml.embedders import EfficientNetEmbedder
from tests import services
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, seed_users
from tests.inspection.search.conftest import CountingEmbedder, deploy, hole_photo, inspect, make_catalog, png


@pytest.fixture(scope="module")
def packaged_embedder() -> EfficientNetEmbedder:
    """The packaged EfficientNet-Lite0, loaded once for this module."""
    return EfficientNetEmbedder.load("cpu")


@pytest.fixture
def embedder(packaged_embedder: EfficientNetEmbedder, monkeypatch: pytest.MonkeyPatch) -> CountingEmbedder:
    """Every app started in the test loads this embedder and counts what it embeds."""
    counting = CountingEmbedder(packaged_embedder)
    monkeypatch.setattr(search_index, "load_embedder", lambda name, **_: counting)
    return counting


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database for this test alone (dropped afterwards)."""
    yield from services.mariadb_database()


def _search(client: TestClient, inspection_id: int) -> list[tuple[int, float]]:
    worker = bearer(client, "worker1", WORKER_PASSWORD)
    response = client.post(f"/api/v1/inspections/{inspection_id}/search", json={"top_k": 5}, headers=worker)
    assert response.status_code == 200, response.text
    return [(m["image_id"], m["score"]) for m in response.json()["matches"]]


def _same_matches(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return [i for i, _ in a] == [i for i, _ in b] and all(
        abs(x - y) < 1e-5 for (_, x), (_, y) in zip(a, b, strict=True)
    )


def _source_instance(tmp_path: Path) -> tuple[Settings, int, list[tuple[int, float]]]:
    """An embedded-default instance with a catalog, a built search index and one searched inspection."""
    src = make_settings(tmp_path / "src", load_models=True)
    run_migrations(src)
    with TestClient(create_app(src)) as client:
        seed_users(src, client)
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        make_catalog(client, admin)
        assert deploy(client, admin)["status"] == "succeeded"
        worker = bearer(client, "worker1", WORKER_PASSWORD)
        inspection_id = inspect(client, worker, png(hole_photo(50)))
        matches = _search(client, inspection_id)
    return src, inspection_id, matches


def _row_counts(settings: Settings) -> dict[str, int]:
    engine = sa.create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return {
                t: int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one())  # noqa: S608
                for t in ("user", "product", "reference_image", "inspection", "artifact")
            }
    finally:
        engine.dispose()


@pytest.mark.mariadb
@pytest.mark.s3
@pytest.mark.slow
def test_sqlite_backup_restores_into_mariadb_and_s3_and_back(
    tmp_path: Path, embedder: CountingEmbedder, mariadb_url: str, s3_server: dict[str, str]
) -> None:
    src, inspection_id, before = _source_instance(tmp_path)
    archive = tmp_path / "backup.tar"
    report = create_backup(src, archive)
    assert report.tables["reference_image"] == 11
    assert report.objects >= 12  # 11 catalog images + the inspected photo
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    # The built gallery travels once, as the store's versioned objects; this server's cache copy stays home.
    assert any(n.startswith("objects/artifacts/") and n.endswith("manifest.json") for n in names)
    assert not any(n.startswith("artifacts/cache/") for n in names)

    s3: dict[str, Any] = {
        "storage_backend": "s3",
        "s3_endpoint_url": s3_server["endpoint"],
        "s3_bucket": f"restore-{uuid.uuid4().hex[:8]}",
        "s3_access_key": s3_server["access_key"],
        "s3_secret_key": s3_server["secret_key"],
        "s3_create_bucket": True,
    }
    dst = make_settings(tmp_path / "dst", load_models=True, database_url=mariadb_url, **s3)
    restore_backup(dst, archive)
    assert _row_counts(dst) == _row_counts(src)
    source_store, target_store = make_storage(src), make_storage(dst)
    keys = sorted(source_store.list(""))
    assert sorted(target_store.list("")) == keys
    assert all(source_store.get(k) == target_store.get(k) for k in keys)

    embedded_before = embedder.images_embedded
    with TestClient(create_app(dst)) as client:
        after = _search(client, inspection_id)
    assert _same_matches(after, before)
    # Only the query photo was embedded: the gallery came from the archive, not from a rebuild.
    assert embedder.images_embedded - embedded_before == 1

    # Restoring over a filled instance is refused, and nothing changes.
    with pytest.raises(InvalidInputError) as refused:
        restore_backup(dst, archive)
    assert "비어 있지 않습니다" in translate(refused.value.message_key, "ko", **refused.value.params)
    assert _row_counts(dst) == _row_counts(src)

    # And back: MariaDB + S3 into a fresh embedded-default instance.
    archive_back = tmp_path / "back.tar"
    create_backup(dst, archive_back)
    back = make_settings(tmp_path / "back", load_models=True)
    restore_backup(back, archive_back)
    with TestClient(create_app(back)) as client:
        assert _same_matches(_search(client, inspection_id), before)
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        image_id = before[0][0]
        image = client.get(f"/api/v1/images/{image_id}/file", headers=admin)
        assert image.status_code == 200
        assert image.content[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_damaged_archive_is_refused_and_leaves_the_target_empty(
    tmp_path: Path, embedder: CountingEmbedder
) -> None:
    src, _, _ = _source_instance(tmp_path)
    archive = tmp_path / "backup.tar"
    create_backup(src, archive)

    damaged = tmp_path / "damaged.tar"
    with tarfile.open(archive) as tar_in, tarfile.open(damaged, "w") as tar_out:
        members = tar_in.getmembers()
        victim = next(m for m in members if m.name.startswith("objects/images/"))
        for member in members:
            data = tar_in.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == victim.name:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            tar_out.addfile(info, io.BytesIO(data))

    target = make_settings(tmp_path / "target")
    with pytest.raises(InvalidInputError) as refused:
        restore_backup(target, damaged)
    assert refused.value.message_key == "errors.backup_checksum_mismatch"
    assert victim.name in translate(refused.value.message_key, "en", **refused.value.params)
    assert set(_row_counts(target).values()) == {0}
    assert list(make_storage(target).list("")) == []
    assert not any(p.is_file() for p in target.artifacts_path.rglob("*"))
    # The intact archive still restores into the same (still empty) target.
    restore_backup(target, archive)
    assert _row_counts(target) == _row_counts(src)
