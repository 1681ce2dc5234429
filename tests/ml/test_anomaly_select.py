"""The "auto" backbone search: validation AUROC per candidate, real loading of a local weight file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.ml.anomaly_select import select_backbone
from app.ml.patchcore import FeatureExtractor, PatchCoreConfig
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
    )
    assert choice.reason == "validation_auroc"
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
