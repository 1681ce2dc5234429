"""Embedders: packaged EfficientNet-Lite0 and CLIP loaded from a local weights file (never downloaded)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from app.core.i18n import translate_reason
from app.ml.embedders import (
    ClipEmbedder,
    EfficientNetEmbedder,
    ImageEmbedder,
    available_embedders,
    load_embedder,
)
from app.ml.errors import ModelNotAvailableError
from tests.ml.search_images import perturbed, texture, with_hole, with_scratch


@pytest.fixture(scope="module")
def efficientnet() -> EfficientNetEmbedder:
    torch.set_num_threads(1)
    return EfficientNetEmbedder.load("cpu")


@pytest.fixture(scope="module")
def clip_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding a randomly initialised ViT-B-32 (no CLIP weights ship in any package)."""
    import open_clip  # app.ml.embedders (imported above) already ran the torchvision shim

    torch.manual_seed(0)
    models_dir = tmp_path_factory.mktemp("models")
    (models_dir / "clip").mkdir()
    model = open_clip.create_model("ViT-B-32")
    torch.save(model.state_dict(), models_dir / "clip" / "ViT-B-32.pt")
    return models_dir


def _check_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_efficientnet_gives_normalised_1280_d_vectors(efficientnet: EfficientNetEmbedder) -> None:
    images = [texture(0), with_hole(texture(0)).convert("L"), texture(1).resize((300, 90))]
    vectors = efficientnet.embed(images, batch_size=2)
    assert isinstance(efficientnet, ImageEmbedder)
    assert efficientnet.embedder_id == "efficientnet-lite0"
    _check_rows(vectors, 3, 1280)
    np.testing.assert_allclose(efficientnet.embed(images[:1])[0], vectors[0], atol=1e-5)
    assert efficientnet.embed([]).shape == (0, 1280)


def test_efficientnet_finds_the_same_defect_before_a_different_one(
    efficientnet: EfficientNetEmbedder,
) -> None:
    base = texture(7)
    hole, scratch = with_hole(base), with_scratch(base)
    gallery = efficientnet.embed([hole, scratch])
    query = efficientnet.embed([perturbed(hole)])[0]
    scores = gallery @ query
    assert scores[0] > scores[1]
    query_scratch = efficientnet.embed([perturbed(scratch, seed=5)])[0]
    assert (gallery @ query_scratch)[1] > (gallery @ query_scratch)[0]


def test_available_embedders_reports_missing_clip_with_expected_path(tmp_path: Path) -> None:
    infos = {info.name: info for info in available_embedders(tmp_path)}
    assert infos["efficientnet-lite0"].is_available
    assert not infos["clip"].is_available
    assert str(tmp_path / "clip" / "ViT-B-32.pt") in translate_reason(infos["clip"].reason, "en")
    with pytest.raises(ModelNotAvailableError, match="ViT-B-32"):
        load_embedder("clip", models_dir=tmp_path)
    with pytest.raises(ModelNotAvailableError, match="unknown embedder"):
        load_embedder("resnet", models_dir=tmp_path)
    with pytest.raises(ModelNotAvailableError, match="not found"):
        ClipEmbedder.load("ViT-B-32", tmp_path / "missing.pt")


def test_clip_loads_local_weights_and_embeds(clip_models_dir: Path) -> None:
    infos = {info.name: info for info in available_embedders(clip_models_dir)}
    assert infos["clip"].is_available
    embedder = load_embedder("clip", models_dir=clip_models_dir, device="cpu")
    weights = clip_models_dir / "clip" / "ViT-B-32.pt"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert embedder.embedder_id == f"clip-ViT-B-32-{sha[:12]}"
    assert embedder.dim == 512
    hole, scratch = with_hole(texture(2)), with_scratch(texture(2))
    vectors = embedder.embed([hole, scratch])
    _check_rows(vectors, 2, 512)
    np.testing.assert_allclose(embedder.embed([hole])[0], vectors[0], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_clip_rejects_weights_of_another_architecture(clip_models_dir: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="ViT-B-16"):
        ClipEmbedder.load("ViT-B-16", clip_models_dir / "clip" / "ViT-B-32.pt")
