"""Region-aware identification: matches the defect rather than the photo, calibrated confidence, O(1) adds.

Real parts: the packaged EfficientNet-Lite0 (search embedder and PatchCore backbone) and a real PatchCore
model fitted on synthetic normal parts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from app.ml.embedders import EfficientNetEmbedder
from app.ml.identification import (
    REGION,
    WHOLE,
    ProductIdentification,
    build_product_identification,
    describe_region,
    expected_calibration_error,
    fit_platt,
    model_fingerprint,
)
from app.ml.patchcore import FeatureExtractor, PatchCore, PatchCoreConfig

PIT, CRACK = 1, 2


def _background(kind: str, seed: int, size: int = 128) -> Image.Image:
    """Two fixtures a factory might photograph parts on: bright stripes or dark speckle."""
    rng = np.random.default_rng(seed)
    if kind == "stripes":
        y = np.arange(size)[:, None]
        base = 150 + 40 * np.sin(y / 3.0 + rng.uniform(0, 6)) + rng.normal(0, 5, (size, size))
        rgb = np.stack([base, base * 0.9, base * 0.7], -1)
    else:
        base = 90 + rng.normal(0, 25, (size, size))
        rgb = np.stack([base * 0.7, base * 0.9, base], -1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))


def _pit(image: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed + 1000)
    out = image.copy()
    x, y = (int(v) for v in rng.integers(30, 98, 2))
    ImageDraw.Draw(out).ellipse((x - 7, y - 7, x + 7, y + 7), fill=(15, 15, 15))
    return out


def _crack(image: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed + 2000)
    out = image.copy()
    x, y = (int(v) for v in rng.integers(30, 98, 2))
    ImageDraw.Draw(out).line((x - 14, y - 12, x + 14, y + 12), fill=(250, 250, 250), width=2)
    return out


@pytest.fixture(scope="module")
def embedder() -> EfficientNetEmbedder:
    return EfficientNetEmbedder.load("cpu")


@pytest.fixture(scope="module")
def model() -> PatchCore:
    extractor = FeatureExtractor.load("efficientnet_lite0", None, "cpu")
    normals = [_background(kind, seed) for kind in ("stripes", "speckle") for seed in range(6)]
    return PatchCore.fit(normals, PatchCoreConfig(image_size=128, coreset_ratio=0.5), extractor=extractor)


@pytest.fixture(scope="module")
def confounded(embedder: EfficientNetEmbedder, model: PatchCore) -> ProductIdentification:
    """Every registered pit was photographed on stripes, every crack on speckle."""
    photos = [_pit(_background("stripes", 100 + s), s) for s in range(4)]
    photos += [_crack(_background("speckle", 200 + s), s) for s in range(4)]
    labels: list[int | None] = [PIT] * 4 + [CRACK] * 4
    return build_product_identification(
        7,
        list(range(1, 9)),
        labels,
        embedder.embed(photos),
        np.stack([describe_region(model, p) for p in photos]),
        fingerprint=model_fingerprint(model),
        type_names={PIT: "pit", CRACK: "crack"},
    )


def test_a_pit_on_the_cracks_fixture_is_a_pit_by_region_and_a_crack_by_whole_image(
    embedder: EfficientNetEmbedder, model: PatchCore, confounded: ProductIdentification
) -> None:
    fingerprint = model_fingerprint(model)
    for seed in range(4):
        query = _pit(_background("speckle", 300 + seed), 50 + seed)
        whole = embedder.embed([query])[0]
        assert confounded.identify(whole).defect_type_id == CRACK  # today's whole-image answer
        found = confounded.identify(whole, describe_region(model, query), fingerprint=fingerprint)
        assert found.method == REGION
        assert found.defect_type_id == PIT


def test_descriptors_of_another_anomaly_model_fall_back_to_the_whole_image(
    embedder: EfficientNetEmbedder, model: PatchCore, confounded: ProductIdentification
) -> None:
    query = _pit(_background("speckle", 400), 60)
    found = confounded.identify(
        embedder.embed([query])[0], describe_region(model, query), fingerprint="other"
    )
    assert found.method == WHOLE
    assert found.alpha == 0.0


def test_an_uploaded_mask_decides_the_region_of_a_gallery_image(model: PatchCore) -> None:
    photo = _pit(_background("stripes", 500), 70)
    # the mask says the defect is in the top-left corner, where the photo has nothing unusual
    mask = np.zeros((128, 128), dtype=bool)
    mask[:20, :20] = True
    by_map, by_mask = describe_region(model, photo), describe_region(model, photo, mask)
    assert float(by_map @ by_mask) < 0.9
    assert np.isclose(float(np.linalg.norm(by_mask)), 1.0, atol=1e-5)


def test_leave_one_out_report_counts_every_registered_image(confounded: ProductIdentification) -> None:
    report = confounded.report
    assert report["images"] == 8
    assert report["method"] == REGION
    assert report["top1"] == 1.0
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 8
    assert set(report["confusion"]) == {"pit", "crack"}
    assert 0.0 <= report["unknown_rate"] <= 1.0


def test_registering_adds_one_image_and_it_answers_at_once(
    tmp_path: Path, embedder: EfficientNetEmbedder, model: PatchCore, confounded: ProductIdentification
) -> None:
    path = tmp_path / "product-7.npz"
    confounded.save(path)
    loaded = ProductIdentification.load(path)
    query = _crack(_background("stripes", 600), 80)
    whole, region = embedder.embed([query])[0], describe_region(model, query)
    fingerprint = model_fingerprint(model)
    assert loaded.identify(whole, region, fingerprint=fingerprint) == confounded.identify(
        whole, region, fingerprint=fingerprint
    )
    new_type = 3
    loaded.add(99, new_type, whole, region)
    assert loaded.count == 9
    assert loaded.identify(whole, region, fingerprint=fingerprint).defect_type_id == new_type
    assert loaded.remove([99]) == 1
    assert loaded.identify(whole, region, fingerprint=fingerprint).defect_type_id != new_type


def test_stated_confidence_matches_the_accuracy_on_held_out_answers() -> None:
    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        margins = rng.uniform(0.0, 0.3, n)
        truth = 1.0 / (1.0 + np.exp(-(20.0 * margins - 2.0)))
        return margins, rng.uniform(size=n) < truth

    platt = fit_platt(*sample(400))
    margins, right = sample(4000)
    confidences = [platt(float(m)) for m in margins]
    ece, table = expected_calibration_error(confidences, right.tolist())
    assert ece < 0.03
    high = [b for b in table if b["low"] >= 0.9]
    assert high
    assert all(abs(b["accuracy"] - b["confidence"]) < 0.05 for b in high)


def test_a_perfect_leave_one_out_never_claims_certainty() -> None:
    platt = fit_platt([0.1, 0.2, 0.3, 0.05], [True, True, True, True])
    assert 0.5 < platt(0.0) < 1.0
    assert platt(0.0) == pytest.approx(platt(0.3))
    assert fit_platt([], [])(0.2) == 0.5


def test_products_without_an_anomaly_model_are_identified_by_the_whole_image(
    embedder: EfficientNetEmbedder,
) -> None:
    photos = [_pit(_background("stripes", s), s) for s in range(3)]
    photos += [_crack(_background("stripes", 10 + s), s) for s in range(3)]
    found = build_product_identification(3, list(range(6)), [PIT] * 3 + [CRACK] * 3, embedder.embed(photos))
    assert found.region is None
    assert found.report["method"] == WHOLE
    assert set(found.calibrations) == {WHOLE}


def test_identification_survives_a_server_restart_with_the_search_generation(
    tmp_path: Path, embedder: EfficientNetEmbedder, model: PatchCore, confounded: ProductIdentification
) -> None:
    from app.ml.gallery import Gallery
    from app.ml.search_runtime import SearchEngine

    galleries = {
        kind: Gallery.empty(kind, embedder.embedder_id, embedder.dim) for kind in ("defect", "normal")
    }
    engine = SearchEngine(embedder, "efficientnet-lite0", galleries, identification={7: confounded})
    engine.save_new_generation(tmp_path)
    loaded = SearchEngine.load(tmp_path, embedder, "efficientnet-lite0")
    assert set(loaded.identification) == {7}
    query = _pit(_background("speckle", 700), 90)
    whole, region = embedder.embed([query])[0], describe_region(model, query)
    fingerprint = model_fingerprint(model)
    assert loaded.identification[7].identify(whole, region, fingerprint=fingerprint) == confounded.identify(
        whole, region, fingerprint=fingerprint
    )
    assert loaded.identification[7].report == confounded.report


def test_leave_one_out_holds_images_out_as_queries_are_described_not_by_their_masks() -> None:
    rng = np.random.default_rng(0)
    labels: list[int | None] = [PIT] * 10 + [CRACK] * 10

    def unit(rows: np.ndarray) -> np.ndarray:
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    whole = unit(rng.normal(size=(20, 16)))  # the whole photo says nothing about the type
    prototypes = unit(rng.normal(size=(2, 16)))
    by_mask = unit(prototypes[[0] * 10 + [1] * 10] + 0.05 * rng.normal(size=(20, 16)))
    by_map = unit(rng.normal(size=(20, 16)))  # queries' anomaly maps miss the defect on this product
    ids = list(range(20))
    optimistic = build_product_identification(1, ids, labels, whole, by_mask)
    honest = build_product_identification(1, ids, labels, whole, by_mask, region_query=by_map)
    assert optimistic.report["top1"] == 1.0
    assert honest.report["top1"] <= 0.75
    assert honest.calibrations[REGION].platt(0.1) < optimistic.calibrations[REGION].platt(0.1)
