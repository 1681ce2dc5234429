"""Identification searched in Milvus answers as the numpy arrays do (VECTOR_BACKEND=milvus).

Real parts: the packaged EfficientNet-Lite0, a real PatchCore model and the real Milvus engine
(`milvus_uri`, as tests/ml/test_milvus_gallery.py). Each query is asked of the same product twice, once
from the arrays and once from the collection: the type, score, margin, confidence, method and the ten
images voted over must agree, also after a registration and a deletion.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.ml.embedders import EfficientNetEmbedder
from app.ml.identification import (
    REGION,
    WHOLE,
    ProductIdentification,
    build_product_identification,
    describe_region,
    model_fingerprint,
)
from app.ml.milvus_gallery import MilvusConfig, client_for
from app.ml.milvus_regions import MilvusRegionStore
from app.ml.patchcore import FeatureExtractor, PatchCore, PatchCoreConfig
from tests.ml.test_identification import CRACK, PIT, _background, _crack, _pit


@pytest.fixture(scope="module")
def embedder() -> EfficientNetEmbedder:
    return EfficientNetEmbedder.load("cpu")


@pytest.fixture(scope="module")
def model() -> PatchCore:
    extractor = FeatureExtractor.load("efficientnet_lite0", None, "cpu")
    normals = [_background(kind, seed) for kind in ("stripes", "speckle") for seed in range(6)]
    return PatchCore.fit(normals, PatchCoreConfig(image_size=128, coreset_ratio=0.5), extractor=extractor)


@pytest.fixture
def config(milvus_uri: str) -> Iterator[MilvusConfig]:
    config = MilvusConfig(uri=milvus_uri, prefix="t_identification")
    yield config
    client = client_for(config)
    for name in client.list_collections():
        if name.startswith(config.prefix + "_"):
            client.drop_collection(name)


def _same(arrays: ProductIdentification, milvus: ProductIdentification, whole, region, fingerprint) -> None:
    found, expected = (
        milvus.identify(whole, region, fingerprint=fingerprint),
        arrays.identify(whole, region, fingerprint=fingerprint),
    )
    assert (found.defect_type_id, found.method, found.alpha, found.is_unknown) == (
        expected.defect_type_id,
        expected.method,
        expected.alpha,
        expected.is_unknown,
    )
    assert (found.score, found.margin, found.confidence) == pytest.approx(
        (expected.score, expected.margin, expected.confidence), abs=1e-5
    )
    alpha = expected.alpha if expected.method == REGION else 0.0
    top, want = milvus.top(whole, region, alpha), arrays.top(whole, region, alpha)
    assert len(want) == min(10, arrays.count)
    assert [h.image_id for h in top] == [h.image_id for h in want]
    assert [h.label for h in top] == [h.label for h in want]
    assert [h.score for h in top] == pytest.approx([h.score for h in want], abs=1e-5)


def test_identification_in_milvus_answers_as_the_arrays_also_after_registering_and_deleting(
    tmp_path: Path, config: MilvusConfig, embedder: EfficientNetEmbedder, model: PatchCore
) -> None:
    fingerprint = model_fingerprint(model)
    photos = [_pit(_background("stripes", 100 + s), s) for s in range(6)]
    photos += [_crack(_background("speckle", 200 + s), s) for s in range(6)]
    photos += [_pit(_background("speckle", 250 + s), 30 + s) for s in range(2)]
    labels: list[int | None] = [PIT] * 6 + [CRACK] * 6 + [PIT, None]
    regions = np.stack([describe_region(model, p) for p in photos])
    arrays = build_product_identification(
        7, list(range(1, 15)), labels, embedder.embed(photos), regions, fingerprint=fingerprint
    )
    assert REGION in arrays.calibrations
    # A second product without an anomaly model (whole image only) and a third with narrower descriptors
    # share the collection: the product filter keeps them apart, zero padding keeps the scores.
    whole_only = build_product_identification(
        8, [101, 102, 103], [PIT, CRACK, CRACK], embedder.embed(photos[4:7])
    )
    rng = np.random.default_rng(0)
    narrow = rng.standard_normal((4, 16)).astype(np.float32)
    narrow /= np.linalg.norm(narrow, axis=1, keepdims=True)
    third = build_product_identification(
        9, [201, 202, 203, 204], [PIT, PIT, CRACK, CRACK], embedder.embed(photos[:4]), narrow, fingerprint="n"
    )
    store = MilvusRegionStore.create(config, arrays.whole.shape[1], regions.shape[1])
    products = {}
    for found in (arrays, whole_only, third):
        path = tmp_path / f"product-{found.product_id}.npz"
        found.save(path)
        products[found.product_id] = ProductIdentification.load(path)
        products[found.product_id].attach(store)
        products[found.product_id].release_arrays()  # as a server does: the rows are in Milvus alone
    milvus = products[7]
    assert milvus.whole.size == 0
    assert milvus.region is not None
    assert milvus.region.size == 0

    queries = [_pit(_background("speckle", 300 + s), 50 + s) for s in range(2)]
    queries += [_crack(_background("stripes", 400 + s), 60 + s) for s in range(2)]
    wholes = embedder.embed(queries)
    described = [describe_region(model, q) for q in queries]
    for whole, region in zip(wholes, described, strict=True):
        _same(arrays, milvus, whole, region, fingerprint)
        _same(arrays, milvus, whole, None, None)
        _same(arrays, milvus, whole, region, "another model")
        _same(whole_only, products[8], whole, None, None)
        _same(third, products[9], whole, narrow[0], "n")
    assert milvus.identify(wholes[0], described[0], fingerprint=fingerprint).method == REGION
    assert products[8].identify(wholes[0]).method == WHOLE

    # Attaching to the collection by name (another server, a restart) finds the same rows.
    attached = MilvusRegionStore.attach(config, store.collection)
    assert (attached.whole_dim, attached.region_dim) == (store.whole_dim, store.region_dim)
    again = ProductIdentification.load(tmp_path / "product-7.npz")
    again.attach(attached, fill=False)
    again.release_arrays()
    _same(arrays, again, wholes[0], described[0], fingerprint)

    # A registration answers at once, a deletion is gone at once, in both.
    new_type = 3
    for found in (arrays, milvus):
        found.add(99, new_type, wholes[2], described[2])
    for whole, region in zip(wholes, described, strict=True):
        _same(arrays, milvus, whole, region, fingerprint)
    assert milvus.identify(wholes[2], described[2], fingerprint=fingerprint).defect_type_id == new_type
    assert 99 in [h.image_id for h in milvus.top(wholes[2], described[2], 0.5)]
    for found in (arrays, milvus):
        assert found.remove([99, 3]) == 2
    for whole, region in zip(wholes, described, strict=True):
        _same(arrays, milvus, whole, region, fingerprint)
        _same(arrays, milvus, whole, None, None)
    assert {99, 3}.isdisjoint(h.image_id for h in milvus.top(wholes[2], described[2], 0.5, k=50))
    assert set(store.vectors(7)) == set(arrays.image_ids)
    # A released product saves the rows it has now (read back from Milvus), equal to the arrays' ...
    milvus.save(tmp_path / "saved-7.npz")
    saved = ProductIdentification.load(tmp_path / "saved-7.npz")
    assert (saved.image_ids, saved.labels) == (arrays.image_ids, arrays.labels)
    np.testing.assert_allclose(saved.whole, arrays.whole, atol=1e-6)
    assert saved.region is not None
    assert arrays.region is not None
    np.testing.assert_allclose(saved.region, arrays.region, atol=1e-6)
    # ... and a rebuild moves it into a new collection from Milvus (no arrays in memory needed).
    moved = milvus.copy()
    rebuilt = MilvusRegionStore.create(config, store.whole_dim, store.region_dim)
    moved.attach(rebuilt)
    assert milvus.store is store  # the serving copy stays on its collection
    for whole, region in zip(wholes, described, strict=True):
        _same(arrays, moved, whole, region, fingerprint)
    # A released product whose images were all deleted saves empty arrays of the right width.
    emptied = products[8]
    assert emptied.remove([101, 102, 103]) == 3
    emptied.save(tmp_path / "emptied.npz")
    assert ProductIdentification.load(tmp_path / "emptied.npz").whole.shape == (0, whole_only.whole.shape[1])
    stored = store.vectors(9)[201]
    np.testing.assert_allclose(stored[:16], narrow[0], atol=1e-6)
    assert not stored[16 : store.region_dim].any()
