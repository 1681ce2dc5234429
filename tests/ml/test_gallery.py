"""Gallery: incremental add/remove, exact product filter, persistence with corruption detection, staleness."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.ml.embedders import EfficientNetEmbedder
from app.ml.errors import ArtifactError, JobCancelled
from app.ml.gallery import Gallery, IndexType, build_gallery
from app.ml.preprocessing import PreprocessingOptions, apply_preprocessing
from tests.ml.search_images import perturbed, texture, with_hole, with_scratch

DIM = 32
INDEX_TYPES: list[IndexType] = ["flat", "hnsw"]


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _filled(index_type: IndexType, n: int = 60, seed: int = 0) -> tuple[Gallery, np.ndarray]:
    """Gallery of n random vectors: image ids 100.., products 1/2/3 round robin, label = id % 4."""
    vectors = _unit(np.random.default_rng(seed), n)
    gallery = Gallery.empty("defect", "test-embedder", DIM, index_type=index_type)
    ids = list(range(100, 100 + n))
    gallery.add(ids, vectors, [1 + i % 3 for i in range(n)], [i % 4 for i in ids])
    return gallery, vectors


@pytest.fixture(scope="module")
def efficientnet() -> EfficientNetEmbedder:
    torch.set_num_threads(1)
    return EfficientNetEmbedder.load("cpu")


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_an_image_finds_itself_first_with_metadata(index_type: IndexType) -> None:
    gallery, vectors = _filled(index_type)
    hits = gallery.search(vectors[7], k=5)
    assert len(hits) == 5
    assert hits[0].image_id == 107
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].product_id == 1 + 7 % 3
    assert hits[0].label == 107 % 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_incremental_add_and_remove_are_visible_immediately(index_type: IndexType) -> None:
    gallery, _ = _filled(index_type)
    new = _unit(np.random.default_rng(99), 1)
    gallery.add([500], new, [2], [None])
    assert gallery.search(new[0], k=1)[0].image_id == 500
    assert gallery.search(new[0], k=1)[0].label is None
    assert 500 in gallery
    assert gallery.count == 61

    assert gallery.remove([500, 123456]) == 1
    assert all(h.image_id != 500 for h in gallery.search(new[0], k=10))
    assert gallery.count == 60
    assert 500 not in gallery


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_re_adding_an_image_replaces_its_vector_and_metadata(index_type: IndexType) -> None:
    gallery, vectors = _filled(index_type)
    replacement = _unit(np.random.default_rng(7), 1)
    gallery.add([100], replacement, [3], [9])
    assert gallery.count == 60
    hit = gallery.search(replacement[0], k=1)[0]
    assert (hit.image_id, hit.product_id, hit.label) == (100, 3, 9)
    old_hits = gallery.search(vectors[0], k=3)
    assert all(not (h.image_id == 100 and h.score > 0.99) for h in old_hits)


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_product_filter_returns_k_hits_of_that_product(index_type: IndexType) -> None:
    rng = np.random.default_rng(3)
    query = _unit(rng, 1)[0]
    # Product 1: 200 near-duplicates of the query. Product 2: 12 unrelated images (all worse).
    near = query + 0.05 * rng.standard_normal((200, DIM)).astype(np.float32)
    far = _unit(rng, 12)
    gallery = Gallery.empty("defect", "test-embedder", DIM, index_type=index_type)
    gallery.add(range(200), near, [1] * 200, [1] * 200)
    gallery.add(range(1000, 1012), far, [2] * 12, [2] * 12)

    hits = gallery.search(query, k=10, product_id=2)
    assert len(hits) == 10
    assert {h.product_id for h in hits} == {2}
    expected = np.argsort(-(far @ query))[:10] + 1000
    assert [h.image_id for h in hits] == expected.tolist()
    assert len(gallery.search(query, k=50, product_id=2)) == 12
    assert gallery.search(query, k=5, product_id=77) == []
    assert gallery.count_by_product() == {1: 200, 2: 12}


def test_hnsw_rebuilds_after_many_removals_and_stays_correct() -> None:
    gallery, vectors = _filled("hnsw", n=100)
    gallery.remove(range(100, 170))
    assert gallery.count == 30
    hits = gallery.search(vectors[80], k=30)
    assert len(hits) == 30
    assert hits[0].image_id == 180
    assert {h.image_id for h in hits} == set(range(170, 200))


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_save_load_round_trip(tmp_path: Path, index_type: IndexType) -> None:
    gallery, vectors = _filled(index_type)
    gallery.remove([101, 102])
    gallery.set_preprocessing_key(1, "g0c1e0s0n0")
    gallery.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g")

    assert (loaded.kind, loaded.embedder_id, loaded.dim, loaded.index_type) == (
        "defect",
        "test-embedder",
        DIM,
        index_type,
    )
    assert loaded.count == 58
    assert loaded.count_by_product() == gallery.count_by_product()
    assert loaded.preprocessing_keys == {1: "g0c1e0s0n0"}
    assert loaded.built_at == gallery.built_at
    for i in (0, 5, 40):
        assert loaded.search(vectors[i], k=5) == gallery.search(vectors[i], k=5)
    assert all(h.image_id != 101 for h in loaded.search(vectors[1], k=5))
    # Adding after load continues without clashing with stored entries.
    loaded.add([900], vectors[1:2], [1], [None])
    assert loaded.search(vectors[1], k=1)[0].image_id == 900
    meta = json.loads((tmp_path / "g" / "gallery.json").read_text())
    assert meta["count"] == 58
    assert meta["preprocessing_keys"] == {"1": "g0c1e0s0n0"}


def test_saving_again_replaces_files_and_keeps_only_recent_generations(tmp_path: Path) -> None:
    gallery, _ = _filled("flat")
    for _ in range(4):
        gallery.save(tmp_path)
    assert len(list(tmp_path.glob("index-*.faiss"))) == 2
    assert Gallery.load(tmp_path).count == 60


def test_load_detects_corruption_and_missing_files(tmp_path: Path) -> None:
    gallery, _ = _filled("flat")
    gallery.save(tmp_path)
    meta = json.loads((tmp_path / "gallery.json").read_text())
    index_path = tmp_path / meta["index_file"]
    data = bytearray(index_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        Gallery.load(tmp_path)

    (tmp_path / meta["rows_file"]).unlink()
    gallery.save(tmp_path)  # a fresh save is loadable again
    assert Gallery.load(tmp_path).count == 60
    (tmp_path / "gallery.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable"):
        Gallery.load(tmp_path)
    with pytest.raises(ArtifactError, match="missing"):
        Gallery.load(tmp_path / "nowhere")


def test_staleness_lists_every_reason() -> None:
    gallery, _ = _filled("flat")
    gallery.set_preprocessing_key(1, "g0c0e0s0n0")
    gallery.set_preprocessing_key(2, "g0c1e0s0n0")
    current = {1: "g0c0e0s0n0", 2: "g0c1e0s0n0"}
    assert gallery.staleness("test-embedder", current, dim=DIM) == []

    reasons = gallery.staleness(
        "clip-ViT-B-32-abc", {1: "g0c0e0s0n0", 2: "g1c0e0s0n0", 3: "g0c0e0s0n0"}, dim=512
    )
    assert len(reasons) == 4
    assert "clip-ViT-B-32-abc" in reasons[0]
    assert "512" in reasons[1]
    assert "product 2" in reasons[2]
    assert "product 3" in reasons[3]  # has images but no recorded key
    assert gallery.staleness("test-embedder", {4: "g0c0e0s0n0"}) == []  # product without images


def test_concurrent_adds_and_searches() -> None:
    gallery, vectors = _filled("flat")
    errors: list[BaseException] = []

    def writer(start: int) -> None:
        rng = np.random.default_rng(start)
        try:
            for j in range(20):
                gallery.add([start + j], _unit(rng, 1), [1], [None])
        except BaseException as exc:  # pragma: no cover - only reached on failure
            errors.append(exc)

    def reader() -> None:
        try:
            for i in range(40):
                assert gallery.search(vectors[i % 60], k=3)[0].image_id == 100 + i % 60
        except BaseException as exc:  # pragma: no cover - only reached on failure
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1000, 2000)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert gallery.count == 100


def _items() -> list[tuple[int, int, int | None, Image.Image]]:
    items: list[tuple[int, int, int | None, Image.Image]] = []
    for i in range(3):
        base = texture(20 + i, size=96)
        items.append((10 + i, 1, 1, with_hole(base, centre=(40, 50), radius=12)))
        items.append((20 + i, 1, 2, with_scratch(base)))
    return items


def test_build_gallery_embeds_reports_progress_and_searches(efficientnet: EfficientNetEmbedder) -> None:
    calls: list[tuple[int, int]] = []
    seen_products: list[int] = []
    options = PreprocessingOptions(contrast=True)

    def preprocess(product_id: int, image: Image.Image) -> Image.Image:
        seen_products.append(product_id)
        return apply_preprocessing(image, options)

    gallery = build_gallery(
        _items(),
        efficientnet,
        preprocess,
        batch_size=4,
        progress=lambda done, total: calls.append((done, total)),
        preprocessing_keys={1: options.key()},
    )
    assert calls == [(4, 6), (6, 6)]
    assert seen_products == [1] * 6
    assert gallery.count == 6
    assert gallery.embedder_id == "efficientnet-lite0"
    assert gallery.staleness("efficientnet-lite0", {1: options.key()}) == []

    query_image = perturbed(with_hole(texture(21, size=96), centre=(40, 50), radius=12))
    query = efficientnet.embed([apply_preprocessing(query_image, options)])[0]
    assert gallery.search(query, k=1)[0].image_id == 11


def test_build_gallery_can_be_cancelled(efficientnet: EfficientNetEmbedder) -> None:
    batches = 0

    def should_cancel() -> bool:
        return batches >= 1

    def progress(done: int, total: int) -> None:
        nonlocal batches
        batches += 1

    with pytest.raises(JobCancelled):
        build_gallery(
            iter(_items()),
            efficientnet,
            lambda _product, image: image,
            batch_size=2,
            progress=progress,
            should_cancel=should_cancel,
            total=6,
        )
    assert batches == 1


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_batch_search_rows_and_stored_vectors_agree_with_single_search(index_type: IndexType) -> None:
    gallery, vectors = _filled(index_type)
    batched = gallery.search_batch(vectors[:4], k=3, product_id=2)
    assert batched == [gallery.search(v, k=3, product_id=2) for v in vectors[:4]]
    rows = gallery.rows(product_id=2)
    assert [r.image_id for r in rows] == [i for i in range(100, 160) if 1 + (i - 100) % 3 == 2]
    assert len(gallery.rows()) == 60
    np.testing.assert_allclose(gallery.get_vectors([105, 100]), vectors[[5, 0]], atol=1e-6)
    with pytest.raises(KeyError):
        gallery.get_vectors([4242])
