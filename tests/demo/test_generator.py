"""Demo dataset generator: determinism, layout, defect masks and the Korean PDF manuals."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader
from scipy import ndimage

from app.demo.catalog import PRODUCTS, SUBSECTIONS
from app.demo.generator import DemoManifest, generate_demo_dataset, main, render_defect, render_normal

SMALL = {"size": 96, "normals_per_product": 5, "defects_per_type": 3}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoManifest]:
    root = tmp_path_factory.mktemp("demo_a")
    return root, generate_demo_dataset(root, seed=0, **SMALL)


def test_same_seed_gives_byte_identical_files(dataset: tuple[Path, DemoManifest], tmp_path: Path) -> None:
    root, _ = dataset
    generate_demo_dataset(tmp_path, seed=0, **SMALL)
    first, second = _files(root), _files(tmp_path)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_different_seed_gives_different_images(dataset: tuple[Path, DemoManifest], tmp_path: Path) -> None:
    root, _ = dataset
    generate_demo_dataset(tmp_path, seed=1, **SMALL)
    first, second = _files(root), _files(tmp_path)
    pngs = [k for k in first if k.endswith(".png") and "/mask/" not in k]
    assert all(first[k] != second[k] for k in pngs)


def test_manifest_lists_every_file_with_expected_counts(dataset: tuple[Path, DemoManifest]) -> None:
    root, manifest = dataset
    assert DemoManifest.load(root / "manifest.json") == manifest
    assert len(manifest.products) >= 3
    assert manifest.size == SMALL["size"]
    for product in manifest.products:
        assert 4 <= len(product.defect_types) <= 5
        assert len({d.code for d in product.defect_types}) == len(product.defect_types)
        assert all(any("가" <= ch <= "힣" for ch in d.name) for d in product.defect_types)
        assert len(product.normal_images) == SMALL["normals_per_product"]
        assert [n.holdout for n in product.normal_images] == [False] * 4 + [True]
        assert len(product.defect_images) == len(product.defect_types) * SMALL["defects_per_type"]
        for d in product.defect_types:
            of_type = [img for img in product.defect_images if img.defect_code == d.code]
            assert [img.holdout for img in of_type] == [False, False, True]
        assert (root / product.manual_pdf).is_file()
        for n in product.normal_images:
            with Image.open(root / n.path) as im:
                assert (im.mode, im.size) == ("RGB", (96, 96))
        for img in product.defect_images:
            with Image.open(root / img.path) as im:
                assert (im.mode, im.size) == ("RGB", (96, 96))
            mask = np.asarray(Image.open(root / img.mask_path))
            assert mask.shape == (96, 96)
            assert set(np.unique(mask).tolist()) == {0, 255}
            ys, xs = np.nonzero(mask)
            assert img.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert img.mask_area == len(ys)


def test_normal_images_of_a_product_all_differ(dataset: tuple[Path, DemoManifest]) -> None:
    root, manifest = dataset
    for product in manifest.products:
        arrays = [np.asarray(Image.open(root / n.path), dtype=np.int16) for n in product.normal_images]
        for a, b in itertools.combinations(arrays, 2):
            assert np.abs(a - b).mean() > 2.0


@pytest.mark.parametrize(("product", "defect"), [(p.code, d.code) for p in PRODUCTS for d in p.defects])
def test_defect_changes_the_image_only_where_the_mask_is(product: str, defect: str) -> None:
    for index in range(3):
        sample = render_defect(product, defect, seed=3, index=index, size=128)
        mask = sample.mask
        assert 0.0008 * 128 * 128 <= mask.sum() <= 0.25 * 128 * 128
        # Masks stay off the image border, so the whole defect is in frame.
        border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        assert not border.any()
        diff = np.abs(sample.defective.astype(np.int16) - sample.normal.astype(np.int16)).mean(axis=2)
        assert diff[mask].mean() > 5.0
        outside = ~ndimage.binary_dilation(mask, iterations=2)
        assert diff[outside].mean() < 0.5


def test_defect_twin_is_a_normal_looking_image() -> None:
    sample = render_defect("fabric", "hole", seed=0, index=0, size=96)
    normal = render_normal("fabric", seed=0, index=0, size=96)
    # Same product texture statistics: the twin is a plausible normal frame, not an empty canvas.
    assert abs(float(sample.normal.mean()) - float(normal.mean())) < 25


def _pages(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def test_manual_has_a_chapter_per_defect_with_three_subsections(dataset: tuple[Path, DemoManifest]) -> None:
    root, manifest = dataset
    for product in manifest.products:
        pages = _pages((root / product.manual_pdf).read_bytes())
        assert len(pages) >= len(product.defect_types) + 2
        assert product.name in pages[0]
        assert "제품 개요" in pages[0]
        assert "검사 기준" in pages[0]
        for d in product.defect_types:
            text = pages[d.manual_page - 1]
            assert d.manual_heading in text
            number = d.manual_heading.split(".")[0]
            assert f"{d.name} (" in d.manual_heading
            positions = [text.index(d.manual_heading)]
            for sub, (ko, _) in enumerate(SUBSECTIONS, start=1):
                positions.append(text.index(f"{number}.{sub} {ko}"))
            assert positions == sorted(positions)
            # The defect's one-line definition sits in its own chapter.
            assert d.description in text.replace("\n", " ")
        assert "안전 및 보고 체계" in pages[-1]


def test_manual_chapters_share_vocabulary_but_not_content(dataset: tuple[Path, DemoManifest]) -> None:
    root, manifest = dataset
    product = manifest.product("metal_plate")
    pages = _pages((root / product.manual_pdf).read_bytes())
    chapters = [pages[d.manual_page - 1] for d in product.defect_types]
    assert sum("점검" in c for c in chapters) >= 3
    bodies = [set(c.split("\n")[2:]) for c in chapters]
    for a, b in itertools.combinations(bodies, 2):
        assert len(a & b) <= 3  # only repeated subsection titles may coincide


def test_cli_writes_manifest_and_contact_sheet(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.png"
    args = [
        str(tmp_path / "out"),
        "--seed",
        "2",
        "--size",
        "64",
        "--normals",
        "2",
        "--defects",
        "1",
        "--contact-sheet",
        str(sheet),
    ]
    assert main(args) == 0
    manifest = DemoManifest.load(tmp_path / "out" / "manifest.json")
    assert manifest.seed == 2
    assert all(not img.holdout for p in manifest.products for img in p.defect_images)
    with Image.open(sheet) as im:
        assert im.size[1] == 64 * len(manifest.products)


def test_rejects_unknown_product_and_defect() -> None:
    with pytest.raises(KeyError, match="unknown demo product"):
        render_normal("teapot", seed=0, index=0)
    with pytest.raises(KeyError, match="no defect"):
        render_defect("fabric", "crack", seed=0, index=0)
