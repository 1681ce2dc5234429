"""Backup and restore of an instance whose galleries live in Milvus (`VECTOR_BACKEND=milvus`), on the real
Milvus server, SQLite, MariaDB and SeaweedFS S3.

The archive must hold the vectors themselves, consistent with its database rows: a restored instance answers
the same searches without embedding anything, whether it keeps its galleries in Milvus (under the archived
collection names on a Milvus that lost them, or under new names beside the source's) or in FAISS files.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

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
from app.ml.gallery import Gallery
from app.ml.milvus_gallery import MilvusConfig, MilvusGallery, client_for
from app.ml.search_runtime import SEARCH, SearchEngine
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, seed_users
from tests.factories import mariadb_s3_settings
from tests.inspection.search.conftest import (
    CountingEmbedder,
    deploy,
    hole_photo,
    inspect,
    make_catalog,
    png,
    scratch_photo,
    upload,
)

PREFIX = "t_bk_src"
COPY_PREFIX = "t_bk_copy"
Matches = list[tuple[int, float, int | None]]


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
def milvus(milvus_uri: str) -> Iterator[str]:
    """The Milvus server; every collection this module made is dropped after the test."""
    yield milvus_uri
    client = client_for(MilvusConfig(uri=milvus_uri))
    for name in client.list_collections():
        if name.startswith(("t_bk_",)):
            client.drop_collection(name)


def _searches(client: TestClient, inspections: list[tuple[int, int | None]]) -> list[Matches]:
    worker = bearer(client, "worker1", WORKER_PASSWORD)
    found = []
    for inspection_id, product_id in inspections:
        body = {"top_k": 10} if product_id is None else {"top_k": 10, "product_id": product_id}
        response = client.post(f"/api/v1/inspections/{inspection_id}/search", json=body, headers=worker)
        assert response.status_code == 200, response.text
        found.append(
            [
                (m["image_id"], m["score"], (m["defect_type"] or {}).get("id"))
                for m in response.json()["matches"]
            ]
        )
    return found


def _assert_same(after: list[Matches], before: list[Matches]) -> None:
    assert len(after) == len(before)
    for got, want in zip(after, before, strict=True):
        assert [(i, t) for i, _, t in got] == [(i, t) for i, _, t in want]
        assert [s for _, s, _ in got] == pytest.approx([s for _, s, _ in want], abs=1e-5)


def _engine(client: TestClient) -> SearchEngine:
    engine: SearchEngine = client.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
    return engine


def _image_count(settings: Settings, kind: str) -> int:
    engine = sa.create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT COUNT(*) FROM reference_image WHERE kind = :kind")
            return int(conn.execute(query, {"kind": kind}).scalar_one())
    finally:
        engine.dispose()


def _source(tmp_path: Path, milvus_uri: str) -> tuple[Settings, list[tuple[int, int | None]], list[Matches]]:
    """A Milvus instance: built galleries, then one image registered and one deleted (not rebuilt)."""
    src = make_settings(
        tmp_path / "src",
        load_models=True,
        vector_backend="milvus",
        milvus_uri=milvus_uri,
        milvus_collection_prefix=PREFIX,
    )
    run_migrations(src)
    with TestClient(create_app(src)) as client:
        seed_users(src, client)
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        catalog = make_catalog(client, admin)
        assert deploy(client, admin)["status"] == "succeeded"
        # After the build: these go into Milvus directly (and the change log), not into a version.
        upload(client, admin, catalog.product_id, "defect", [png(hole_photo(61))], catalog.hole_id)
        gone = catalog.images["scratch"][0]
        assert client.delete(f"/api/v1/images/{gone}", headers=admin).status_code == 204
        worker = bearer(client, "worker1", WORKER_PASSWORD)
        inspections: list[tuple[int, int | None]] = []
        for photo in (hole_photo(50), scratch_photo(51)):
            inspection_id = inspect(client, worker, png(photo))
            inspections += [(inspection_id, None), (inspection_id, catalog.product_id)]
        before = _searches(client, inspections)
        assert all(gone not in [i for i, _, _ in found] for found in before)
        defect = _engine(client).galleries["defect"]
        assert isinstance(defect, MilvusGallery)
        # A row of an image the database does not know (registered after the snapshot, say): the archive
        # must leave it out, or the restored instance would answer with an image it has no record of.
        stray = defect.get_vectors([before[0][0][0]])
        client_for(defect.config).insert(
            defect.collection,
            [
                {
                    "image_id": 99_999,
                    "product_id": catalog.product_id,
                    "label": catalog.hole_id,
                    "vector": stray[0].tolist(),
                }
            ],
        )
    return src, inspections, before


def _restored_searches(
    settings: Settings, inspections: list[tuple[int, int | None]], embedder: CountingEmbedder
) -> tuple[list[Matches], SearchEngine]:
    embedded = embedder.images_embedded
    with TestClient(create_app(settings)) as client:
        found, engine = _searches(client, inspections), _engine(client)
    # The searched inspections' photos were embedded, nothing else: the galleries came from the archive.
    assert embedder.images_embedded - embedded == len({i for i, _ in inspections})
    return found, engine


@pytest.mark.mariadb
@pytest.mark.s3
@pytest.mark.slow
def test_a_milvus_backup_restores_into_milvus_and_faiss_and_serves_the_same_searches(
    tmp_path: Path, embedder: CountingEmbedder, milvus: str, s3_server: dict[str, str]
) -> None:
    src, inspections, before = _source(tmp_path, milvus)
    archive = tmp_path / "backup.tar"
    report = create_backup(src, archive)
    defects, normals = _image_count(src, "defect"), _image_count(src, "normal")
    assert report.vectors == defects + normals == 8 + 3  # 4 holes + 4 scratches + 1 new - 1 deleted, 3 normal
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert any(m.startswith("vectors/") for m in tar.getnames())
    assert sorted(v["rows"] for v in manifest["vectors"].values()) == [normals, defects]
    assert {v["missing"] for v in manifest["vectors"].values()} == {0}

    # 1. Into MariaDB + S3 on the same Milvus under another prefix (a copy beside the source).
    for copy in mariadb_s3_settings(
        tmp_path / "copy",
        s3_server,
        bucket_prefix="bk-milvus",
        load_models=True,
        vector_backend="milvus",
        milvus_uri=milvus,
        milvus_collection_prefix=COPY_PREFIX,
    ):
        restored = restore_backup(copy, archive)
        assert restored.vectors == defects + normals
        after, engine = _restored_searches(copy, inspections, embedder)
        _assert_same(after, before)
        for kind, count in (("defect", defects), ("normal", normals)):
            gallery = engine.galleries[kind]
            assert isinstance(gallery, MilvusGallery)
            assert gallery.collection.startswith(COPY_PREFIX + "_")
            assert gallery.count == count
            assert 99_999 not in gallery
        # Identification's collection is the source's: the copy searches the version's arrays instead.
        assert engine.identification
        assert engine.regions is None
        # And from MariaDB + S3 + Milvus (the copy's renamed collections) into a FAISS instance.
        archive_back = tmp_path / "back.tar"
        assert create_backup(copy, archive_back).vectors == defects + normals
        back = make_settings(tmp_path / "back", load_models=True)
        restore_backup(back, archive_back)
        _assert_same(_restored_searches(back, inspections, embedder)[0], before)

    # 2. Into a default (FAISS) instance: the archived vectors become FAISS galleries.
    embedded = make_settings(tmp_path / "faiss", load_models=True)
    restore_backup(embedded, archive)
    after, engine = _restored_searches(embedded, inspections, embedder)
    _assert_same(after, before)
    assert all(isinstance(g, Gallery) for g in engine.galleries.values())
    assert engine.galleries["defect"].count == defects

    # 3. The source's Milvus lost its collections: restore under the same names into an empty instance.
    source_milvus = client_for(MilvusConfig(uri=milvus))
    for name in source_milvus.list_collections():
        if name.startswith(PREFIX + "_"):
            source_milvus.drop_collection(name)
    same = make_settings(
        tmp_path / "same",
        load_models=True,
        vector_backend="milvus",
        milvus_uri=milvus,
        milvus_collection_prefix=PREFIX,
    )
    restore_backup(same, archive)
    after, engine = _restored_searches(same, inspections, embedder)
    _assert_same(after, before)
    assert {g.collection for g in engine.galleries.values()} == set(manifest["vectors"])  # type: ignore[attr-defined]
    assert engine.identification
    assert engine.regions is None  # its collection was lost with the others: the arrays answer

    # Those collections now exist: another restore with that prefix is refused and leaves nothing behind.
    collections = sorted(source_milvus.list_collections())
    again = make_settings(
        tmp_path / "again",
        load_models=True,
        vector_backend="milvus",
        milvus_uri=milvus,
        milvus_collection_prefix=PREFIX,
    )
    with pytest.raises(InvalidInputError) as refused:
        restore_backup(again, archive)
    assert "Milvus" in translate(refused.value.message_key, "ko", **refused.value.params)
    assert sorted(source_milvus.list_collections()) == collections
    assert _image_count(again, "defect") == 0
    assert list(make_storage(again).list("")) == []


@pytest.mark.slow
def test_a_restore_that_fails_drops_the_collections_it_made(
    tmp_path: Path, embedder: CountingEmbedder, milvus: str
) -> None:
    src, _, _ = _source(tmp_path, milvus)
    archive = tmp_path / "backup.tar"
    # Without MILVUS_URI the backup cannot hold the vectors: it says so instead of writing a partial archive.
    with pytest.raises(InvalidInputError) as unconfigured:
        create_backup(src.model_copy(update={"vector_backend": "faiss", "milvus_uri": ""}), archive)
    assert "MILVUS_URI" in translate(unconfigured.value.message_key, "ko", **unconfigured.value.params)
    assert not archive.exists()
    create_backup(src, archive)
    # Damage the last member restored before the rows (an object or file), after the vectors went in.
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(archive) as tar_in, tarfile.open(damaged, "w") as tar_out:
        members = tar_in.getmembers()
        victim = [m for m in members if m.name.startswith(("objects/", "artifacts/", "manual_store/"))][-1]
        for member in members:
            data = tar_in.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == victim.name:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            tar_out.addfile(info, io.BytesIO(data))
    client = client_for(MilvusConfig(uri=milvus))
    existing = sorted(client.list_collections())
    target = make_settings(
        tmp_path / "target", vector_backend="milvus", milvus_uri=milvus, milvus_collection_prefix=COPY_PREFIX
    )
    with pytest.raises(InvalidInputError) as refused:
        restore_backup(target, damaged)
    assert refused.value.message_key == "errors.backup_checksum_mismatch"
    assert sorted(client.list_collections()) == existing
    assert _image_count(target, "defect") == 0
    # The intact archive restores into the same target.
    assert restore_backup(target, archive).vectors == _image_count(src, "defect") + _image_count(
        src, "normal"
    )
    assert len(client.list_collections()) == len(existing) + 2
