"""Milvus gallery rows out to archive pages and back, against the real Milvus server (`milvus_uri`).

Pages must hold exactly the wanted images (ids Milvus lacks left out, rows of other images never read), in
id order, across several sealed segments; a gallery rebuilt from the pages, in Milvus or in FAISS, must answer
every search as the original does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.ml import vector_archive
from app.ml.gallery import Gallery
from app.ml.milvus_gallery import MilvusConfig, MilvusGallery, client_for
from app.ml.vector_archive import GalleryImport, VectorPage, export_pages, saved_collection
from app.ml.vector_backend import VectorBackend

DIM = 24
PREFIX = "t_vector_archive"


@pytest.fixture
def config(milvus_uri: str) -> Iterator[MilvusConfig]:
    """This module's Milvus prefix; its collections are dropped after each test."""
    yield MilvusConfig(uri=milvus_uri, prefix=PREFIX)
    client = client_for(MilvusConfig(uri=milvus_uri))
    for name in client.list_collections():
        if name.startswith(PREFIX + "_"):
            client.drop_collection(name)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _filled(config: MilvusConfig) -> tuple[MilvusGallery, dict[int, np.ndarray]]:
    """900 images in 3 products, written in three interleaved, separately sealed batches."""
    rng = np.random.default_rng(3)
    gallery = MilvusGallery.create(config, "defect", "test-embedder", DIM)
    gallery.set_preprocessing_key(1, "p1")
    stored: dict[int, np.ndarray] = {}
    for batch in range(3):
        ids = list(range(10 + batch, 910, 3))  # 10, 13, ... then 11, 14, ...: segments overlap in id range
        vectors = _unit(rng, len(ids))
        gallery.add(ids, vectors, [1 + i % 3 for i in ids], [None if i % 7 == 0 else i % 4 for i in ids])
        gallery.seal()
        stored.update(zip(ids, vectors, strict=True))
    return gallery, stored


def test_pages_hold_the_wanted_rows_in_id_order(
    config: MilvusConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    gallery, stored = _filled(config)
    monkeypatch.setattr(vector_archive, "PAGE_BYTES", 7 * 4 * DIM)  # 7 rows a page
    wanted = [i for i in stored if i % 5 != 0] + [5_000, 5_001]  # two ids Milvus never held
    pages = list(export_pages(config, gallery.collection, DIM, wanted))
    assert all(len(p) <= 7 for p in pages)
    assert len(pages) >= len(wanted) // 7

    decoded = [VectorPage.decode(p.encode(), DIM) for p in pages]
    ids = np.concatenate([p.image_ids for p in decoded]).tolist()
    assert ids == sorted(i for i in stored if i % 5 != 0)
    vectors = np.concatenate([p.vectors for p in decoded])
    np.testing.assert_allclose(vectors, np.stack([stored[i] for i in ids]), atol=1e-6)
    labels = np.concatenate([p.labels for p in decoded]).tolist()
    assert labels == [-1 if i % 7 == 0 else i % 4 for i in ids]
    assert np.concatenate([p.product_ids for p in decoded]).tolist() == [1 + i % 3 for i in ids]


@pytest.mark.parametrize("into", ["milvus", "faiss"])
def test_a_gallery_rebuilt_from_pages_answers_the_same_searches(
    config: MilvusConfig, into: str, tmp_path: Path
) -> None:
    gallery, stored = _filled(config)
    gallery.save(tmp_path / "source")
    saved = saved_collection((tmp_path / "source" / "gallery.json").read_bytes())
    assert saved is not None
    target = None if into == "faiss" else MilvusConfig(uri=config.uri, prefix=PREFIX)
    restored = GalleryImport(saved, target, vector_archive.new_collection_name(PREFIX, "defect"))
    for page in export_pages(config, gallery.collection, DIM, list(stored)):
        restored.add(VectorPage.decode(page.encode(), DIM))
    folder = tmp_path / "defect"
    folder.mkdir()
    for name, data in restored.finish().items():
        (folder / name).write_bytes(data)
    loaded = VectorBackend("milvus", config).load(folder)  # each saved gallery names its backend
    assert isinstance(loaded, Gallery if into == "faiss" else MilvusGallery)
    assert loaded.preprocessing_keys == {1: "p1"}
    assert loaded.count == len(stored) == 900

    for query in _unit(np.random.default_rng(11), 6):
        for product in (None, 1, 2):
            want, got = gallery.search(query, 10, product), loaded.search(query, 10, product)
            assert [(h.image_id, h.product_id, h.label) for h in got] == [
                (h.image_id, h.product_id, h.label) for h in want
            ]
            assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
