"""PatchCore's optional IVF nearest-neighbour search: exact where it probes every cell, never closer than the
exact neighbour, small banks kept exact, and the setting kept by a saved artifact."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from app.ml.patchcore import IVF_MIN_POINTS_PER_LIST, FeatureExtractor, PatchCore, PatchCoreConfig
from tests.ml.synthetic_textures import make_dataset

CONFIG = PatchCoreConfig(image_size=64, coreset_ratio=1.0, batch_size=8)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    torch.set_num_threads(1)
    return FeatureExtractor.load("efficientnet_lite0", device="cpu")


def _bank(n: int, seed: int = 0) -> np.ndarray:
    # Clustered like patch features (normal textures repeat), not uniform noise.
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((16, 152)).astype(np.float32) * 4
    return (centres[rng.integers(0, 16, n)] + rng.standard_normal((n, 152)).astype(np.float32)).astype(
        np.float32
    )


def test_ivf_probing_every_cell_finds_the_exact_neighbours(extractor: FeatureExtractor) -> None:
    bank = _bank(8 * IVF_MIN_POINTS_PER_LIST + 100)
    queries = _bank(500, seed=1)
    exact = PatchCore(extractor, CONFIG, bank)
    full = PatchCore(extractor, replace(CONFIG, ivf_lists=8, ivf_probe=8), bank)
    assert (exact.search_kind, full.search_kind) == ("flat", "ivf 8/8")
    d_exact, i_exact = exact._nearest(queries)
    d_full, i_full = full._nearest(queries)
    np.testing.assert_array_equal(i_full, i_exact)
    np.testing.assert_array_equal(d_full, d_exact)
    # Probing one cell of eight: some neighbours are missed, and a missed one is always farther.
    one = PatchCore(extractor, replace(CONFIG, ivf_lists=8, ivf_probe=1), bank)
    d_one, _ = one._nearest(queries)
    assert (d_one >= d_exact - 1e-6).all()


def test_a_bank_too_small_for_its_cells_stays_exact(extractor: FeatureExtractor) -> None:
    bank = _bank(8 * IVF_MIN_POINTS_PER_LIST - 1)
    assert PatchCore(extractor, replace(CONFIG, ivf_lists=8), bank).search_kind == "flat"


def test_a_saved_ivf_model_loads_with_the_same_search_and_scores(
    extractor: FeatureExtractor, tmp_path: Path
) -> None:
    normals, defects = make_dataset(seed=2, n_normal=8, n_defect=2, height=64, width=64)
    cfg = replace(CONFIG, ivf_lists=4, ivf_probe=2)
    model = PatchCore.fit([s.image for s in normals], cfg, extractor=extractor)
    assert model.search_kind == "ivf 4/2"
    model.save(tmp_path / "m")
    loaded = PatchCore.load(tmp_path / "m", extractor=extractor, runtime="torch")
    assert loaded.search_kind == "ivf 4/2"
    photos = [s.image for s in defects]
    assert [o.score for o in loaded.detect_many(photos)] == [o.score for o in model.detect_many(photos)]
