"""MilvusGallery against a real Milvus server: the FAISS gallery's behaviour, and filtered recall.

The server is the real Milvus engine (the `milvus` 2.3 package), started once per session by
`tests.services.milvus_server`; outside CI a missing engine skips these tests, in CI it fails them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.ml.errors import ArtifactError, JobCancelled
from app.ml.gallery import Gallery, IndexType, VectorGallery, build_gallery
from app.ml.milvus_gallery import MilvusConfig, MilvusGallery, client_for
from app.ml.vector_backend import FAISS, VectorBackend

DIM = 32
INDEX_TYPES: list[IndexType] = ["flat", "hnsw"]


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def backend(milvus_uri: str, request: pytest.FixtureRequest) -> Iterator[VectorBackend]:
    """The Milvus backend with a collection prefix of this test's own; its collections are dropped after."""
    prefix = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:30]
    config = MilvusConfig(uri=milvus_uri, prefix=prefix)
    yield VectorBackend("milvus", config)
    client = client_for(config)
    for name in client.list_collections():
        if name.startswith(prefix + "_"):
            client.drop_collection(name)


def _pair(
    backend: VectorBackend, index_type: IndexType, n: int = 60, seed: int = 0
) -> tuple[VectorGallery, Gallery, np.ndarray]:
    """The same n random vectors in Milvus and in FAISS: ids 100.., products 1/2/3, label = id % 4."""
    vectors = _unit(np.random.default_rng(seed), n)
    ids = list(range(100, 100 + n))
    products = [1 + i % 3 for i in range(n)]
    labels: list[int | None] = [None if i % 5 == 0 else i % 4 for i in ids]
    milvus = backend.empty("defect", "test-embedder", DIM, index_type)
    faiss = FAISS.empty("defect", "test-embedder", DIM, "flat")
    assert isinstance(faiss, Gallery)
    for gallery in (milvus, faiss):
        gallery.add(ids, vectors, products, labels)
    return milvus, faiss, vectors


def _same(milvus: list, faiss: list) -> None:
    assert [h.image_id for h in milvus] == [h.image_id for h in faiss]
    assert [(h.product_id, h.label) for h in milvus] == [(h.product_id, h.label) for h in faiss]
    assert [h.score for h in milvus] == pytest.approx([h.score for h in faiss], abs=1e-5)


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_search_with_and_without_product_filter_matches_faiss(
    backend: VectorBackend, index_type: IndexType
) -> None:
    milvus, faiss, vectors = _pair(backend, index_type)
    assert isinstance(milvus, MilvusGallery)
    queries = _unit(np.random.default_rng(7), 5)
    for query in queries:
        _same(milvus.search(query, 10), faiss.search(query, 10))
        for product in (1, 2, 3):
            hits = milvus.search(query, 10, product_id=product)
            assert len(hits) == 10
            assert {h.product_id for h in hits} == {product}
            _same(hits, faiss.search(query, 10, product_id=product))
    _same(milvus.search(vectors[7], 5)[:1], faiss.search(vectors[7], 5)[:1])
    assert milvus.search(vectors[7], 5)[0].score == pytest.approx(1.0, abs=1e-5)
    batch = milvus.search_batch(queries, 4, product_id=2)
    assert [[h.image_id for h in hits] for hits in batch] == [
        [h.image_id for h in hits] for hits in faiss.search_batch(queries, 4, product_id=2)
    ]
    assert milvus.search(queries[0], 10, product_id=99) == []


def test_registration_replacement_and_deletion_are_visible_to_the_next_search(
    backend: VectorBackend,
) -> None:
    milvus, faiss, vectors = _pair(backend, "flat")
    new = _unit(np.random.default_rng(99), 1)
    for gallery in (milvus, faiss):
        gallery.add([500], new, [2], [None])
    assert milvus.search(new[0], 1)[0].image_id == 500
    assert 500 in milvus
    assert milvus.count == 61
    # Re-adding moves image 107 to product 3 with label 9: the old vector and metadata are gone.
    for gallery in (milvus, faiss):
        gallery.add([107], new, [3], [9])
    hit = milvus.search(new[0], 2, product_id=3)[0]
    assert (hit.image_id, hit.product_id, hit.label) == (107, 3, 9)
    assert all(h.image_id != 107 for h in milvus.search(vectors[7], 60, product_id=1 + 7 % 3))
    for gallery in (milvus, faiss):
        assert gallery.remove([500, 107, 12345]) == 2
    assert milvus.search(new[0], 3)[0].image_id not in (500, 107)
    assert 500 not in milvus
    assert milvus.count == faiss.count == 59
    assert milvus.count_by_product() == faiss.count_by_product()
    assert [(r.image_id, r.product_id, r.label) for r in milvus.rows(2)] == [
        (r.image_id, r.product_id, r.label) for r in faiss.rows(2)
    ]
    np.testing.assert_allclose(milvus.get_vectors([103, 101]), faiss.get_vectors([103, 101]), atol=1e-6)
    with pytest.raises(KeyError):
        milvus.get_vectors([500])
    query = _unit(np.random.default_rng(3), 1)[0]
    _same(milvus.search(query, 10), faiss.search(query, 10))


def test_save_load_attaches_to_the_collection_and_discards_replaced_ones(
    backend: VectorBackend, tmp_path: Path
) -> None:
    milvus, faiss, _ = _pair(backend, "hnsw")
    assert isinstance(milvus, MilvusGallery)
    milvus.set_preprocessing_key(1, "v1:none")
    milvus.save(tmp_path / "g1")
    meta = json.loads((tmp_path / "g1" / "gallery.json").read_text())
    assert meta["backend"] == "milvus"
    assert meta["collection"] == milvus.collection
    assert not list((tmp_path / "g1").glob("index-*"))  # no vectors on disk

    loaded = backend.load(tmp_path / "g1")
    assert isinstance(loaded, MilvusGallery)
    assert (loaded.count, loaded.index_type, loaded.preprocessing_keys) == (60, "hnsw", {1: "v1:none"})
    assert loaded.count_by_product() == faiss.count_by_product()
    query = _unit(np.random.default_rng(5), 1)[0]
    _same(loaded.search(query, 10, product_id=3), faiss.search(query, 10, product_id=3))
    assert loaded.staleness("test-embedder", {1: "v1:none"}) == []
    assert loaded.staleness("other", {1: "v2:clahe"}) != []

    # A newer build replaces it: the generation being deleted gives its collection back.
    newer = backend.empty("defect", "test-embedder", DIM)
    newer.discard_saved(tmp_path / "g1")
    client = client_for(milvus.config)
    assert not client.has_collection(milvus.collection)
    with pytest.raises(ArtifactError, match="gone"):
        backend.load(tmp_path / "g1")
    with pytest.raises(ArtifactError, match="MILVUS_URI"):
        FAISS.load(tmp_path / "g1")


def test_two_servers_on_one_collection_never_store_an_image_twice(
    backend: VectorBackend, tmp_path: Path
) -> None:
    """Server A builds and saves; server B loads the same collection; both then register image 900."""
    server_a, _, _ = _pair(backend, "flat")
    server_a.save(tmp_path / "g")
    server_b = backend.load(tmp_path / "g")
    new = _unit(np.random.default_rng(42), 1)
    server_a.add([900], new, [2], [1])
    server_b.add([900], new, [2], [1])  # B has not seen A's registration
    assert isinstance(server_a, MilvusGallery)
    stored = client_for(server_a.config).query(
        server_a.collection, filter="image_id == 900", output_fields=["image_id"], consistency_level="Strong"
    )
    assert len(stored) == 1
    # The Strong query waited for B's writes; A's Session searches alone would see them a time-tick later.
    for server in (server_a, server_b):
        for product_id in (2, None):
            hits = [h.image_id for h in server.search(new[0], 5, product_id=product_id)]
            assert hits.count(900) == 1
            assert hits[0] == 900


def test_a_cancelled_build_leaves_no_collection(backend: VectorBackend) -> None:
    class Embedder:
        embedder_id, dim = "test-embedder", DIM

        def embed(self, images: list[object], batch_size: int = 32) -> np.ndarray:
            return _unit(np.random.default_rng(len(images)), len(images))

    calls = iter([False, False, True])
    assert backend.milvus is not None
    client = client_for(backend.milvus)
    before = set(client.list_collections())
    with pytest.raises(JobCancelled):
        build_gallery(
            [(i, 1, None, object()) for i in range(8)],  # type: ignore[misc]
            Embedder(),  # type: ignore[arg-type]
            lambda _pid, image: image,
            batch_size=4,
            should_cancel=lambda: next(calls),
            factory=backend.empty,
        )
    assert set(client.list_collections()) == before


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_product_filtered_recall_at_10_against_exact_search(
    backend: VectorBackend, index_type: IndexType
) -> None:
    """Many products of very different sizes: the filter is inside the search, so recall stays ~1."""
    rng = np.random.default_rng(11)
    sizes = np.clip((rng.pareto(1.2, 300) * 20).astype(int) + 5, 5, 1500)  # 300 products, 5..1500 images
    sizes[:3] = (6000, 3000, 1500)  # and a few large ones, where the filtered graph walk itself is used
    products = np.repeat(np.arange(1, sizes.size + 1), sizes)
    n = products.size
    # Clustered vectors (as real embeddings are): each product near its own centre.
    centres = _unit(rng, sizes.size, 64)
    vectors = centres[products - 1] + 0.6 * _unit(rng, n, 64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gallery = backend.empty("defect", "synthetic", 64, index_type)
    gallery.add(list(range(n)), vectors, products.tolist(), [None] * n)
    assert isinstance(gallery, MilvusGallery)
    gallery.wait_indexed()

    recalls = []
    picked = np.concatenate([[1, 2, 3] * 10, rng.choice(np.arange(4, sizes.size + 1), 90, replace=False)])
    queries = _unit(rng, picked.size, 64) * 0.3 + centres[picked - 1]
    for product, query in zip(picked.tolist(), queries, strict=True):
        members = np.flatnonzero(products == product)
        scores = vectors[members] @ (query / np.linalg.norm(query))
        exact = set(members[np.argsort(-scores)[:10]].tolist())
        found = {h.image_id for h in gallery.search(query, 10, product_id=product)}
        recalls.append(len(found & exact) / len(exact))
    recall = float(np.mean(recalls))
    assert recall >= 0.99, f"filtered recall@10 {recall:.3f} ({index_type}, {n} vectors)"
