"""The "auto" backbone search: validation AUROC per candidate, the keep-the-default rule, real loading of a
local weight file, and the bank kept at one tile's size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.ml.anomaly_eval import image_auroc, paired_auroc_z
from app.ml.anomaly_select import keep_default_unless_better, product_config, select_backbone
from app.ml.patchcore import FeatureExtractor, PatchCore, PatchCoreConfig
from tests.ml.synthetic_textures import make_dataset

CONFIG = PatchCoreConfig(image_size=64, coreset_ratio=0.5, batch_size=8)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with a randomly initialised ResNet-18 state dict (the file format sites deploy)."""
    import app.ml.torchvision_compat  # noqa: F401, I001 - before torchvision
    from torchvision.models import resnet18

    folder = tmp_path_factory.mktemp("models")
    (folder / "backbones").mkdir()
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), folder / "backbones" / "resnet18.pth")
    return folder


def test_auto_picks_the_candidate_with_the_best_validation_auroc(models_dir: Path) -> None:
    torch.set_num_threads(1)
    normals, defects = make_dataset(seed=4, n_normal=10, n_defect=4, height=64, width=64)
    extractors: dict[str, FeatureExtractor] = {}
    choice = select_backbone(
        [s.image for s in normals],
        [s.image for s in defects],
        CONFIG,
        candidates=["efficientnet_lite0", "resnet18", "wide_resnet50_2"],
        models_dir=models_dir,
        device="cpu",
        extractors=extractors,
        margin=0.0,  # the best validation AUROC wins (ties: the default)
        min_z=0.0,
        min_validation=3,
    )
    assert choice.reason in ("validation_margin", "default_within_margin")
    assert choice.scores["wide_resnet50_2"] is None  # no weight file: skipped, not fatal
    scored = {k: v for k, v in choice.scores.items() if v is not None}
    assert set(scored) == {"efficientnet_lite0", "resnet18"}
    # The best validation AUROC wins; a tie goes to the earlier (listed first, cheaper) candidate.
    best = max(scored.values())
    assert choice.backbone == next(k for k, v in scored.items() if v == best)
    assert (choice.n_fit, choice.n_val_normal, choice.n_val_defect) == (7, 3, 4)
    assert set(extractors) == {"efficientnet_lite0", "resnet18"}  # loaded once, kept for the build
    assert choice.to_dict()["scores"] == choice.scores


def test_auto_without_defect_images_keeps_the_default_backbone() -> None:
    normals, _ = make_dataset(seed=5, n_normal=6, n_defect=0, height=64, width=64)
    choice = select_backbone(
        [s.image for s in normals], [], CONFIG, candidates=["efficientnet_lite2", "efficientnet_lite0"]
    )
    assert (choice.backbone, choice.reason, choice.scores) == ("efficientnet_lite0", "no_defects", {})


def test_another_backbone_replaces_the_default_only_when_clearly_better() -> None:
    lite0, lite1, lite2 = "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"
    # The ELPV coin toss: Lite2 ahead by 0.047 on 8 + 8 validation cells, then worse on the test cells.
    assert keep_default_unless_better({lite0: 0.719, lite2: 0.766}) == (lite0, "default_within_margin")
    assert keep_default_unless_better({lite0: 0.859, lite2: 0.828}) == (lite0, "default_within_margin")
    # Clearly ahead (the margin itself counts): the other backbone.
    assert keep_default_unless_better({lite0: 0.858, lite2: 0.916}) == (lite2, "validation_margin")
    assert keep_default_unless_better({lite0: 0.80, lite2: 0.85}) == (lite2, "validation_margin")
    # Several ahead: the best of them; equally good: the earlier, cheaper one.
    assert keep_default_unless_better({lite0: 0.6, lite1: 0.8, lite2: 0.9}) == (lite2, "validation_margin")
    assert keep_default_unless_better({lite0: 0.6, lite1: 0.9, lite2: 0.9}) == (lite1, "validation_margin")
    # A bigger margin keeps the default; margin 0 is the plain best-of-search (ties keep the default).
    assert keep_default_unless_better({lite0: 0.80, lite2: 0.85}, margin=0.1)[0] == lite0
    assert keep_default_unless_better({lite0: 0.80, lite2: 0.80}, margin=0.0)[0] == lite0
    # Ahead by the margin but not by enough evidence (paired DeLong z below 1.645): the default stays.
    scores = {lite0: 0.861, lite2: 0.917}
    assert keep_default_unless_better(scores, evidence={lite2: 1.2}) == (lite0, "default_within_margin")
    assert keep_default_unless_better(scores, evidence={lite2: 2.1}) == (lite2, "validation_margin")
    assert keep_default_unless_better(scores, evidence={lite2: float("nan")})[0] == lite0
    # The default could not be scored (undefined AUROC or not available): the best scored candidate.
    assert keep_default_unless_better({lite0: None, lite2: 0.7}) == (lite2, "validation_margin")
    assert keep_default_unless_better({lite0: None, lite2: None}) == (lite0, "default_within_margin")


def test_too_few_validation_images_keep_the_default_without_fitting_the_candidates() -> None:
    normals, defects = make_dataset(seed=4, n_normal=10, n_defect=4, height=64, width=64)
    extractors: dict[str, FeatureExtractor] = {}
    choice = select_backbone(
        [s.image for s in normals],
        [s.image for s in defects],
        CONFIG,
        candidates=["efficientnet_lite0", "efficientnet_lite2"],
        extractors=extractors,
    )
    assert (choice.backbone, choice.reason, choice.scores) == (
        "efficientnet_lite0",
        "default_small_validation",
        {},
    )
    assert choice.params == {"normals": 3, "defects": 4, "minimum": 10}
    assert extractors == {}  # no candidate was loaded or fitted: the build does not pay for a coin toss


def test_a_tiled_bank_keeps_the_size_of_a_one_tile_bank() -> None:
    torch.set_num_threads(1)
    normals, _ = make_dataset(seed=6, n_normal=4, n_defect=0, height=128, width=128)
    images = [s.image for s in normals]
    tiled = product_config(CONFIG, images)
    assert tiled.tile_grid == (2, 2)
    assert tiled.coreset_ratio == CONFIG.coreset_ratio / 4
    extractor = FeatureExtractor.load("efficientnet_lite0", device="cpu")
    one_tile = PatchCore.fit(images, CONFIG, extractor=extractor)
    assert PatchCore.fit(images, tiled, extractor=extractor).bank_size == one_tile.bank_size
    # The previous behaviour on request: four tiles' patches at the full ratio.
    full = product_config(CONFIG, images, bank_per_tile=False)
    assert full.coreset_ratio == CONFIG.coreset_ratio
    assert PatchCore.fit(images, full, extractor=extractor).bank_size == 4 * one_tile.bank_size
    # A photo that keeps one tile keeps the ratio.
    small = [im.resize((64, 64), Image.Resampling.BILINEAR) for im in images]
    assert product_config(CONFIG, small).coreset_ratio == CONFIG.coreset_ratio


def test_the_paired_z_grows_with_a_real_lead_and_stays_small_for_a_lucky_one() -> None:
    rng = np.random.default_rng(0)
    labels = [False] * 12 + [True] * 12
    base = np.r_[rng.normal(0, 1, 12), rng.normal(1.5, 1, 12)]
    # The same ranking: no evidence either way; the z of b over a is minus that of a over b.
    assert paired_auroc_z(labels, base, base * 2 + 1) == 0.0
    noisy = base + rng.normal(0, 0.6, 24)
    assert paired_auroc_z(labels, base, noisy) == pytest.approx(-paired_auroc_z(labels, noisy, base))
    # A lead of a few swapped pairs on 12 + 12 images is not evidence; a separating backbone on 60 + 60 is.
    swapped = base.copy()
    lo = int(np.argmin(base[12:])) + 12
    swapped[lo] = base[:12].max() + 0.1
    assert image_auroc(labels, swapped) - image_auroc(labels, base) >= 0.05
    assert paired_auroc_z(labels, base, swapped) < 1.645
    big = [False] * 60 + [True] * 60
    weak = np.r_[rng.normal(0, 1, 60), rng.normal(0.5, 1, 60)]
    strong = weak + np.r_[np.zeros(60), np.full(60, 2.0)]
    assert paired_auroc_z(big, weak, strong) > 3
    assert np.isnan(paired_auroc_z([False, True, True], [0, 1, 2], [0, 2, 1]))
