"""PatchCore engine on synthetic textures with known defects (real EfficientNet-Lite0 weights, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from app.ml.anomaly_calibration import calibrate
from app.ml.anomaly_eval import image_auroc, pixel_auroc
from app.ml.anomaly_viz import regions
from app.ml.errors import ArtifactError, JobCancelled, ModelNotAvailableError
from app.ml.patchcore import (
    AnomalyOutput,
    FeatureExtractor,
    PatchCore,
    PatchCoreConfig,
    available_backbones,
    greedy_coreset,
)
from tests.ml.synthetic_textures import Sample, make_dataset

CONFIG = PatchCoreConfig(image_size=128, coreset_ratio=0.1, batch_size=4)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    torch.set_num_threads(1)
    return FeatureExtractor.load(device="cpu")


@pytest.fixture(scope="module")
def data() -> tuple[list[Sample], list[Sample]]:
    return make_dataset(seed=3, n_normal=12, n_defect=6)


@pytest.fixture(scope="module")
def model(extractor: FeatureExtractor, data: tuple[list[Sample], list[Sample]]) -> PatchCore:
    normals, _ = data
    return PatchCore.fit([s.image for s in normals[:8]], CONFIG, extractor=extractor)


@pytest.fixture(scope="module")
def outputs(model: PatchCore, data: tuple[list[Sample], list[Sample]]) -> list[AnomalyOutput]:
    normals, defects = data
    return model.detect_many([s.image for s in normals[8:] + defects])


def test_defect_images_score_above_normals(
    outputs: list[AnomalyOutput], data: tuple[list[Sample], list[Sample]]
) -> None:
    normals, defects = data
    labels = [False] * 4 + [True] * len(defects)
    assert image_auroc(labels, [o.score for o in outputs]) >= 0.95
    masks = [s.mask for s in normals[8:] + defects]
    assert pixel_auroc(masks, [o.anomaly_map for o in outputs]) >= 0.9


def test_anomaly_map_peaks_inside_defect(
    outputs: list[AnomalyOutput], data: tuple[list[Sample], list[Sample]]
) -> None:
    _, defects = data
    for sample, out in zip(defects, outputs[4:], strict=True):
        assert out.anomaly_map.shape == sample.mask.shape
        assert out.anomaly_map.dtype == np.float32
        near = ndimage.binary_dilation(sample.mask, iterations=6)  # thin scratches: allow blur offset
        peak = np.unravel_index(np.argmax(out.anomaly_map), out.anomaly_map.shape)
        assert near[peak], sample.kind


def test_regions_box_overlaps_defect(
    outputs: list[AnomalyOutput], data: tuple[list[Sample], list[Sample]]
) -> None:
    _, defects = data
    cal = calibrate(outputs[:4], outputs[4:], n_normal_train=8)
    for sample, out in zip(defects, outputs[4:], strict=True):
        found = regions(out.anomaly_map, cal.pixel_threshold, min_area=4)
        assert found, sample.kind
        top = found[0]
        box = np.zeros_like(sample.mask)
        box[top.y : top.y + top.height, top.x : top.x + top.width] = True
        assert (box & sample.mask).any(), sample.kind
    for out in outputs[:4]:
        assert out.score < cal.threshold


def test_save_load_round_trip_gives_identical_scores(
    model: PatchCore, extractor: FeatureExtractor, data: tuple[list[Sample], list[Sample]], tmp_path: Path
) -> None:
    normals, defects = data
    probe = [normals[9].image, defects[0].image]
    model.save(tmp_path / "m", preprocessing_key="rgb-resize-v1")
    loaded = PatchCore.load(tmp_path / "m", extractor=extractor, preprocessing_key="rgb-resize-v1")
    assert loaded.bank_size == model.bank_size
    assert loaded.config == model.config
    assert loaded.preprocessing_key == "rgb-resize-v1"
    before, after = model.detect_many(probe), loaded.detect_many(probe)
    for a, b in zip(before, after, strict=True):
        assert a.score == b.score
        np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
    # Loading without a shared extractor builds its own.
    own = PatchCore.load(tmp_path / "m", device="cpu")
    assert own.detect(probe[1]).score == pytest.approx(before[1].score, rel=1e-5)


def test_corrupt_or_mismatched_artifact_raises_artifact_error(model: PatchCore, tmp_path: Path) -> None:
    target = tmp_path / "m"
    model.save(target)
    bank = target / "memory_bank.safetensors"
    raw = bytearray(bank.read_bytes())
    raw[-5] ^= 0xFF
    bank.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum"):
        PatchCore.load(target, extractor=model.extractor)

    model.save(target)
    meta_path = target / "patchcore.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 999}))
    with pytest.raises(ArtifactError, match="format_version"):
        PatchCore.load(target, extractor=model.extractor)

    meta_path.write_text(json.dumps({**meta, "bank_shape": [5, 152]}))
    with pytest.raises(ArtifactError):
        PatchCore.load(target, extractor=model.extractor)

    meta_path.write_text("{not json")
    with pytest.raises(ArtifactError):
        PatchCore.load(target, extractor=model.extractor)

    model.save(target, preprocessing_key="v1")
    with pytest.raises(ArtifactError, match="preprocessing"):
        PatchCore.load(target, extractor=model.extractor, preprocessing_key="v2")
    with pytest.raises(ArtifactError):
        PatchCore.load(tmp_path / "missing", extractor=model.extractor)


def test_cancellation_raises_job_cancelled(
    extractor: FeatureExtractor, data: tuple[list[Sample], list[Sample]]
) -> None:
    images = [s.image for s in data[0][:4]]
    with pytest.raises(JobCancelled):
        PatchCore.fit(images, CONFIG, extractor=extractor, should_cancel=lambda: True)
    calls = {"n": 0}

    def cancel_during_coreset() -> bool:
        calls["n"] += 1
        return calls["n"] > 3  # feature batches pass, the coreset loop is interrupted

    with pytest.raises(JobCancelled):
        PatchCore.fit(images, CONFIG, extractor=extractor, should_cancel=cancel_during_coreset)
    assert calls["n"] > 3


def test_fit_reports_progress(extractor: FeatureExtractor, data: tuple[list[Sample], list[Sample]]) -> None:
    seen: list[float] = []
    PatchCore.fit(
        [s.image for s in data[0][:4]], CONFIG, extractor=extractor, progress=lambda f, _: seen.append(f)
    )
    assert seen == sorted(seen)
    assert seen[-1] == 1.0


def _brute_force_k_center(x: np.ndarray, k: int, start: int) -> list[int]:
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    chosen = [start]
    for _ in range(k - 1):
        chosen.append(int(dist[:, chosen].min(axis=1).argmax()))
    return chosen


def test_greedy_coreset_picks_farthest_points() -> None:
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    got = greedy_coreset(torch.from_numpy(x), 25, projection_dim=128, start=7).tolist()
    assert got == _brute_force_k_center(x, 25, 7)


def test_projected_coreset_covers_data_better_than_random() -> None:
    rng = np.random.default_rng(1)
    # Two dense clusters and 5 scattered far outliers: k-center must take them, random sampling misses them.
    x = np.concatenate(
        [rng.normal(0, 0.1, (500, 256)), rng.normal(3, 0.1, (500, 256)), rng.normal(0, 10, (5, 256))]
    )
    x = x.astype(np.float32)
    idx = greedy_coreset(torch.from_numpy(x), 20, projection_dim=64, seed=0).numpy()
    assert len(set(idx.tolist())) == 20
    assert set(range(1000, 1005)) <= set(idx.tolist())

    def radius(sel: np.ndarray) -> float:
        d = ((x[:, None, :] - x[None, sel, :]) ** 2).sum(-1)
        return float(np.sqrt(d.min(axis=1)).max())

    assert radius(idx) < radius(rng.choice(len(x), 20, replace=False))


def test_anomaly_map_is_the_patch_map_upsampled_blurred_and_resized_to_the_photo(
    model: PatchCore, data: tuple[list[Sample], list[Sample]]
) -> None:
    """The fast separable operator gives the same map as doing the three steps on images: patch scores
    filled into their stride cells (nearest, as anomalib), Gaussian blur sigma 4 with reflect padding,
    bilinear resize to the photo's own size."""
    _, defects = data
    photo = defects[0].image.resize((200, 90))
    out = model.detect(photo)
    with torch.inference_mode():
        feats = model.extractor.embed(
            model.extractor.preprocess([photo], CONFIG.image_size), CONFIG.feature_dim
        )
    _, patch_map = model._score_batch(feats)
    side = CONFIG.image_size
    x = torch.nn.functional.interpolate(torch.from_numpy(patch_map)[None], size=(side, side), mode="nearest")
    radius = int(4.0 * 4.0 + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(t**2) / 32.0)
    kernel = kernel / kernel.sum()
    pad = torch.nn.functional.pad
    x = torch.nn.functional.conv2d(pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    x = torch.nn.functional.interpolate(x, size=(90, 200), mode="bilinear", align_corners=False)
    expected = x[0, 0].numpy()
    np.testing.assert_allclose(out.anomaly_map, expected, rtol=0, atol=1e-5 * float(expected.max()))
    # the defect's cells stand out: the map is not flat
    assert float(expected.max()) > 1.5 * float(np.median(expected))


def test_grayscale_and_non_square_images(model: PatchCore) -> None:
    rng = np.random.default_rng(5)
    gray = Image.fromarray(rng.integers(0, 255, (96, 160), dtype=np.uint8), mode="L")
    rgba = Image.new("RGBA", (200, 90), (120, 100, 80, 255))
    outs = model.detect_many([gray, rgba])
    assert outs[0].anomaly_map.shape == (96, 160)
    assert outs[1].anomaly_map.shape == (90, 200)
    assert all(np.isfinite(o.score) and np.isfinite(o.anomaly_map).all() for o in outs)
    assert model.detect(gray).score == pytest.approx(outs[0].score, rel=1e-5)


def test_torchvision_backbone_from_models_dir(
    tmp_path: Path, data: tuple[list[Sample], list[Sample]]
) -> None:
    """A resnet18 state dict placed under models_dir/backbones is found and used (random weights here)."""
    import app.ml.torchvision_compat  # noqa: F401, I001 - before torchvision
    from torchvision.models import resnet18

    packaged = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert available_backbones(tmp_path) == packaged
    with pytest.raises(ModelNotAvailableError):
        FeatureExtractor.load("resnet18", tmp_path, "cpu")
    (tmp_path / "backbones").mkdir()
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "backbones" / "resnet18.pth")
    assert available_backbones(tmp_path) == [*packaged, "resnet18"]
    cfg = PatchCoreConfig(backbone="resnet18", image_size=64, feature_dim=256)
    m = PatchCore.fit([s.image for s in data[0][:2]], cfg, models_dir=tmp_path, device="cpu")
    assert m.memory_bank.shape[1] == 256
    out = m.detect(data[1][0].image)
    assert out.anomaly_map.shape == (128, 128)
    m.save(tmp_path / "r18")
    with pytest.raises(ArtifactError, match="backbone"):
        PatchCore.load(tmp_path / "r18", extractor=FeatureExtractor.load(device="cpu"))
