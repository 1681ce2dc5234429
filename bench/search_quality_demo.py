"""Search quality on the demo data: top-1 defect-type accuracy and recall@5 on the held-out defect images.

The gallery holds the demo's non-holdout defect images (what `defectlens demo` registers); the queries are
the holdout defect images (manifest flag). Everything goes through the application's own code path:
`app.ml.search_runtime.preprocess` (MAX_SIDE), `build_gallery`, per-product `calibrate_thresholds` and
`compute_verdict` over the top 10 hits, as `POST /inspections/{id}/search` does. Held-out *normal* images
are also searched against the defect gallery: a good verdict calls most of them "unknown".

Usage: python bench/search_quality_demo.py [--out docs/benchmarks/search.md] [--defects-per-type 8]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import faiss
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.demo.generator import DemoManifest, generate_demo_dataset
from app.inspection.search.service import VERDICT_K
from app.ml.embedders import EfficientNetEmbedder, ImageEmbedder
from app.ml.gallery import Gallery, build_gallery
from app.ml.preprocessing import PreprocessingOptions
from app.ml.search_runtime import MAX_SIDE, preprocess
from app.ml.verdict import (
    DEFAULT_MIN_MARGIN,
    DEFAULT_MIN_SCORE,
    Thresholds,
    calibrate_thresholds,
    compute_verdict,
)

Item = tuple[int, int, int | None, Image.Image]
SECTION = "## Retrieval quality on the demo data"


@dataclass(frozen=True)
class Quality:
    """One configuration's numbers."""

    label: str
    filtered: bool
    top1: float
    recall5: float
    verdict_accuracy: float
    known_rate: float
    verdict_accuracy_known: float
    normal_unknown_rate: float
    n_queries: int
    n_normals: int


def _items(manifest: DemoManifest, root: Path) -> tuple[list[Item], list[Item], list[Item]]:
    gallery: list[Item] = []
    queries: list[Item] = []
    normals: list[Item] = []
    next_id = 1
    for pid, product in enumerate(manifest.products, start=1):
        codes = {d.code: i for i, d in enumerate(product.defect_types, start=1)}
        for image in product.defect_images:
            item = (
                next_id,
                pid,
                pid * 100 + codes[image.defect_code],
                Image.open(root / image.path).convert("RGB"),
            )
            (queries if image.holdout else gallery).append(item)
            next_id += 1
        for normal in product.normal_images:
            if normal.holdout:
                normals.append((next_id, pid, None, Image.open(root / normal.path).convert("RGB")))
                next_id += 1
    return gallery, queries, normals


def _evaluate(
    label: str,
    embedder: ImageEmbedder,
    options: PreprocessingOptions,
    gallery_items: list[Item],
    queries: list[Item],
    normals: list[Item],
    *,
    filtered: bool,
) -> Quality:
    gallery: Gallery = build_gallery(
        gallery_items, embedder, lambda _pid, img: preprocess(img, options), batch_size=16
    )
    products = sorted({pid for _, pid, _, _ in gallery_items})
    thresholds = {pid: calibrate_thresholds(gallery, pid) for pid in products}
    fallback = Thresholds(DEFAULT_MIN_SCORE, DEFAULT_MIN_MARGIN)

    def verdict(vector: object, pid: int) -> tuple[int | None, int | None, bool]:
        hits = gallery.search(vector, max(5, VERDICT_K), product_id=pid if filtered else None)  # type: ignore[arg-type]
        raw = compute_verdict(hits[:VERDICT_K], min_score=-math.inf, min_margin=-math.inf)
        t = thresholds.get(raw.product_id or -1, fallback)
        unknown = raw.score < t.min_score or raw.margin < t.min_margin
        return raw.product_id, raw.defect_type_id, unknown

    vectors = embedder.embed([preprocess(img, options) for _, _, _, img in queries], batch_size=16)
    top1 = recall5 = correct = known = correct_known = 0
    for (_, pid, label_id, _), vector in zip(queries, vectors, strict=True):
        hits = gallery.search(vector, 5, product_id=pid if filtered else None)
        classes = [(h.product_id, h.label) for h in hits]
        top1 += bool(classes) and classes[0] == (pid, label_id)
        recall5 += (pid, label_id) in classes
        v_pid, v_label, unknown = verdict(vector, pid)
        is_right = (v_pid, v_label) == (pid, label_id)
        correct += is_right
        if not unknown:
            known += 1
            correct_known += is_right
    normal_vectors = embedder.embed([preprocess(img, options) for _, _, _, img in normals], batch_size=16)
    normal_unknown = sum(
        verdict(v, pid)[2] for (_, pid, _, _), v in zip(normals, normal_vectors, strict=True)
    )
    n = len(queries)
    return Quality(
        label,
        filtered,
        top1 / n,
        recall5 / n,
        correct / n,
        known / n,
        correct_known / known if known else 0.0,
        normal_unknown / max(1, len(normals)),
        n,
        len(normals),
    )


def _report(
    results: list[Quality],
    *,
    manifest: DemoManifest,
    gallery_n: int,
    elapsed: float,
    load: tuple[float, float],
) -> str:
    n_types = sum(len(p.defect_types) for p in manifest.products)
    lines = [
        SECTION,
        "",
        f"Date {date.today().isoformat()}, same 2-core CPU machine (1-minute load average "
        f"{load[0]:.1f} at start, {load[1]:.1f} at end; quality numbers do not depend on load). "
        f"Command: `python bench/search_quality_demo.py` (run took {elapsed:.0f} s).",
        "",
        f"Demo data (seed {manifest.seed}, {manifest.size} px): {len(manifest.products)} products, "
        f"{n_types} defect types; gallery = the {gallery_n} non-holdout defect images, queries = the "
        f"{results[0].n_queries} holdout defect images and {results[0].n_normals} holdout normal images. "
        f"Packaged EfficientNet-Lite0, max_side={MAX_SIDE}. A class is (product, defect type). "
        f'"Verdict" = the app\'s similarity-weighted vote over the top {VERDICT_K} hits with per-product '
        'calibrated thresholds; "answered" = share of defect queries not called unknown; '
        '"normal → unknown" = share of normal photos (no defect) the verdict calls unknown instead of '
        "naming a defect.",
        "",
        "| preprocessing | search scope | top-1 accuracy | recall@5 | verdict accuracy | answered | "
        "accuracy when answered | normal → unknown |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        scope = "worker picked the product" if r.filtered else "all products"
        lines.append(
            f"| {r.label} | {scope} | **{r.top1:.1%}** | **{r.recall5:.1%}** | {r.verdict_accuracy:.1%} | "
            f"{r.known_rate:.1%} | {r.verdict_accuracy_known:.1%} | {r.normal_unknown_rate:.1%} |"
        )
    lines.append("")
    return "\n".join(lines)


def _write(out: Path, section: str) -> None:
    text = out.read_text(encoding="utf-8") if out.exists() else "# Similar-image search benchmark\n"
    if SECTION in text:
        start = text.index(SECTION)
        rest = text[start + len(SECTION) :]
        end = rest.find("\n## ")
        text = text[:start] + section + (rest[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    out.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/search.md"))
    parser.add_argument("--defects-per-type", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = generate_demo_dataset(root, seed=args.seed, defects_per_type=args.defects_per_type)
        gallery, queries, normals = _items(manifest, root)
        embedder = EfficientNetEmbedder.load("cpu")
        configs = [
            ("none", PreprocessingOptions()),
            ("contrast + smooth", PreprocessingOptions(contrast=True, smooth=True)),
        ]
        results = []
        for label, options in configs:
            for filtered in (False, True):
                result = _evaluate(label, embedder, options, gallery, queries, normals, filtered=filtered)
                print(result)
                results.append(result)
    section = _report(
        results,
        manifest=manifest,
        gallery_n=len(gallery),
        elapsed=time.perf_counter() - started,
        load=(load_start, os.getloadavg()[0]),
    )
    _write(args.out, section)
    print(section)


if __name__ == "__main__":
    main()
