"""Micro-batching (issue 17, item 3): concurrent calls of one model run as one batch and every caller gets
exactly the result it would have got alone (real EfficientNet-Lite0 and PatchCore on demo photos)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import pytest
import torch
from PIL import Image

from app.demo.generator import render_defect, render_normal
from app.ml.batching import BatchPolicy, MicroBatcher, ModelBatching
from app.ml.embedders import EfficientNetEmbedder
from app.ml.patchcore import FeatureExtractor, PatchCore, PatchCoreConfig
from app.ml.preprocessing import PreprocessingOptions
from app.ml.search_runtime import SearchEngine

T = TypeVar("T")

# Long enough that every caller joins before the first gives up waiting, on a loaded machine too; a full
# batch closes at once, so the tests do not wait this long.
WAIT_S = 10.0


def at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released together; their results in order."""
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(calls))

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def test_concurrent_calls_share_one_batch_and_get_their_own_results() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(BatchPolicy(wait_s=WAIT_S, max_batch=4))
    sizes: list[int] = []

    def square_all(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return [i * i for i in items]

    results = at_once([lambda i=i: batcher.run("model", i, square_all) for i in range(4)])
    assert results == [0, 1, 4, 9]
    assert sizes == [4]
    stats = batcher.stats()
    assert (stats.batches, stats.calls, stats.largest) == (1, 4, 4)


def test_different_models_are_never_mixed() -> None:
    batcher: MicroBatcher[int, str] = MicroBatcher(BatchPolicy(wait_s=0.05, max_batch=8))
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def tagged(tag: str) -> Callable[[Sequence[int]], list[str]]:
        def run(items: Sequence[int]) -> list[str]:
            seen[tag].extend(items)
            return [f"{tag}{i}" for i in items]

        return run

    tags = ["a" if i % 2 else "b" for i in range(6)]
    calls = [lambda i=i, t=t: batcher.run(t, i, tagged(t)) for i, t in enumerate(tags)]
    assert at_once(calls) == ["b0", "a1", "b2", "a3", "b4", "a5"]
    assert sorted(seen["a"]) == [1, 3, 5]
    assert sorted(seen["b"]) == [0, 2, 4]


def test_a_bad_input_fails_only_its_own_caller() -> None:
    batcher: MicroBatcher[int, float] = MicroBatcher(BatchPolicy(wait_s=WAIT_S, max_batch=3))

    def invert_all(items: Sequence[int]) -> list[float]:
        return [1 / i for i in items]

    outcomes: list[str] = []

    def call(i: int) -> float:
        try:
            return batcher.run("model", i, invert_all)
        except ZeroDivisionError:
            outcomes.append(f"caller {i} failed")
            return -1.0

    assert at_once([lambda i=i: call(i) for i in (1, 0, 4)]) == [1.0, -1.0, 0.25]
    assert outcomes == ["caller 0 failed"]


def test_batch_size_one_runs_each_call_alone() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(BatchPolicy(wait_s=WAIT_S, max_batch=1))
    sizes: list[int] = []

    def identity(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return list(items)

    assert at_once([lambda i=i: batcher.run("model", i, identity) for i in range(3)]) == [0, 1, 2]
    assert sizes == [1, 1, 1]


@pytest.fixture(scope="module")
def demo_photos() -> list[Image.Image]:
    """Held-out style demo photos of one product: normals and defects, 256 px as the demo serves them."""
    normals = [Image.fromarray(render_normal("metal_plate", seed=0, index=i)) for i in range(20, 23)]
    defects = [
        Image.fromarray(render_defect("metal_plate", kind, seed=0, index=5).defective)
        for kind in ("scratch", "dent", "hole")
    ]
    return normals + defects


@pytest.fixture(scope="module")
def metal_plate_model() -> PatchCore:
    torch.set_num_threads(1)
    extractor = FeatureExtractor.load(device="cpu")
    normals = [Image.fromarray(render_normal("metal_plate", seed=0, index=i)) for i in range(8)]
    return PatchCore.fit(normals, PatchCoreConfig(coreset_ratio=0.1), extractor=extractor)


def test_batched_anomaly_scores_and_maps_equal_one_at_a_time(
    metal_plate_model: PatchCore, demo_photos: list[Image.Image]
) -> None:
    alone = [metal_plate_model.detect(photo) for photo in demo_photos]
    batching = ModelBatching(BatchPolicy(wait_s=WAIT_S, max_batch=len(demo_photos)))
    batched = at_once([lambda p=p: batching.detect(metal_plate_model, p) for p in demo_photos])
    assert batching.anomaly.stats().largest == len(demo_photos)  # they really ran as one batch
    for one, many in zip(alone, batched, strict=True):
        # Scores are float32 distances of ~10-60 whose ulp is up to 4e-6; a batched convolution sums in
        # another order (seen: 1.1e-5 apart at 57.27, 2e-7 of it); 1e-5 relative is 50x that.
        assert many.score == pytest.approx(one.score, rel=1e-5)
        assert many.anomaly_map.shape == one.anomaly_map.shape
        # Map values are distances around 10-20: float32 sums in another order differ by ~2e-6 of them.
        np.testing.assert_allclose(many.anomaly_map, one.anomaly_map, rtol=1e-5, atol=1e-6)


def test_batched_search_vectors_equal_one_at_a_time_and_are_reused_by_checksum(
    demo_photos: list[Image.Image],
) -> None:
    engine = SearchEngine(EfficientNetEmbedder.load("cpu"), "efficientnet-lite0")
    options = PreprocessingOptions()
    alone = [engine.embed([photo], [options])[0] for photo in demo_photos]
    batching = ModelBatching(BatchPolicy(wait_s=WAIT_S, max_batch=len(demo_photos)))
    batched = at_once(
        [
            lambda i=i, p=p: batching.embed(engine, p, options, image_key=f"photo-{i}")
            for i, p in enumerate(demo_photos)
        ]
    )
    assert batching.embedder.stats().largest == len(demo_photos)
    for one, many in zip(alone, batched, strict=True):
        np.testing.assert_allclose(many, one, atol=1e-5)
    # The anomaly step asks again for the same photo and preprocessing: no second embedding.
    again = batching.embed(engine, demo_photos[0], options, image_key="photo-0")
    assert again is batched[0]
    assert batching.embedder.stats().calls == len(demo_photos)
