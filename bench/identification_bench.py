"""Region-aware identification vs today's whole-image verdict, measured through the fused outcome.

Three data sets, each side by side in one run:

* **demo** (`app.demo.generator`, holdout split as bench/search_quality_demo.py): per product a PatchCore
  model from the non-holdout normal images (calibrated as the anomaly_model job does), the non-holdout
  defect images registered (their masks given, as a demo load does), queries = holdout defect and normal
  images;
* **DeepPCB** (`--deeppcb DIR`, else /work/datasets/DeepPCB, else cloned into bench/out/): one "product"
  PCB; normals = crops of the `*_temp.jpg` templates, one-type defect photos = crops around single boxed
  defects of `*_test.jpg` (no other box in the crop); gallery = boards of 8 groups (their box is the
  uploaded mask), queries = boards of the 3 other groups (unseen);
* **ELPV** (`pip install elpv-dataset`): mono / poly solar cells as two products, normal (p=0) vs
  defective (p=1) only.

Every answer goes through `app.ml.outcome.fuse_outcome` with the product's anomaly evidence, so what is
measured is what the worker sees. Reference = the app's whole-image verdict (`compute_verdict` over the top
10 hits with `calibrate_thresholds`); new = `app.ml.identification` (region descriptor + whole image,
alpha and Platt confidence fitted per product by leave-one-out). The product is the true one on both sides
(the worker picked it, or the verdict found it: it does almost always). On the demo data the guidance a
worker would get for each answer is run too (retrieval + extractive generator, see `demo_guidance`).

Usage: python bench/identification_bench.py [--out docs/benchmarks/identification.md] [--skip-deeppcb]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.demo.generator import DemoDefectType, DemoManifest
from app.ml.anomaly_calibration import train_and_score
from app.ml.chunking import SECTION_KINDS, chunk_pages
from app.ml.embedders import EfficientNetEmbedder, ImageEmbedder
from app.ml.gallery import Gallery
from app.ml.guidance.extractive import ExtractiveGenerator
from app.ml.guidance.types import GuidanceRequest
from app.ml.identification import (
    ProductIdentification,
    build_product_identification,
    describe_region,
    expected_calibration_error,
    model_fingerprint,
)
from app.ml.outcome import AnomalyEvidence, IdentificationEvidence, Outcome, fuse_outcome
from app.ml.patchcore import FeatureExtractor, PatchCore, PatchCoreConfig
from app.ml.pdf_text import parse_pdf
from app.ml.preprocessing import PreprocessingOptions
from app.ml.retriever import IndexedChunk, KoreanTokenizer, ManualIndex, RetrievalQuery, sections_to_passages
from app.ml.search_runtime import preprocess
from app.ml.text_embedder import UseTextEmbedder
from app.ml.verdict import calibrate_thresholds, compute_verdict

VERDICT_K = 10
DEEPPCB_URL = "https://github.com/tangsanli5201/DeepPCB"
Box = tuple[int, int, int, int]
DEEPPCB_TYPES = {1: "open", 2: "short", 3: "mousebite", 4: "spur", 5: "copper", 6: "pin-hole"}


@dataclass
class Photo:
    """One labelled photo: product, defect type (None = defect-free), image, optional mask."""

    product_id: int
    defect_type: int | None
    image: Image.Image
    mask: np.ndarray | None = None


@dataclass
class Side:
    """Counts of one method on one data set."""

    outcomes: list[tuple[Outcome, Photo]] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    right: list[bool] = field(default_factory=list)
    guidance_right: list[bool] = field(default_factory=list)

    def defect_top1(self) -> float:
        rows = [(o, p) for o, p in self.outcomes if p.defect_type is not None]
        good = sum(o.label == "defect" and o.defect_type_id == p.defect_type for o, p in rows)
        return good / max(1, len(rows))

    def rate(self, label: str, defects: bool) -> float:
        rows = [o for o, p in self.outcomes if (p.defect_type is not None) == defects]
        return sum(o.label == label for o in rows) / max(1, len(rows))

    def named_defect_on_normals(self) -> float:
        return self.rate("defect", defects=False)


@dataclass
class Result:
    """One data set's figures."""

    name: str
    notes: str
    sides: dict[str, Side]
    n_gallery: int
    n_defect_queries: int
    n_normal_queries: int
    latency_ms: list[float]
    latency_cpu_ms: list[float]
    detect_ms: list[float]
    detect_cpu_ms: list[float]
    loo: dict[int, dict[str, object]]


def _setup_threads() -> None:
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


def _evaluate(
    name: str,
    notes: str,
    embedder: ImageEmbedder,
    models: dict[int, PatchCore],
    gallery: Sequence[Photo],
    queries: Sequence[Photo],
    options: PreprocessingOptions,
    guidance: Callable[[int, int | None], bool] | None = None,
) -> Result:
    """Register `gallery`, answer `queries` with the reference and the new identification.

    `guidance(true type, answered type or None)` says whether the guidance a worker gets for that answer
    quotes the right defect's manual sections (demo data only).
    """
    prep: Callable[[Image.Image], Image.Image] = lambda im: preprocess(im, options)  # noqa: E731
    whole_g = embedder.embed([prep(p.image) for p in gallery], batch_size=16)
    ref = Gallery.empty("defect", embedder.embedder_id, embedder.dim)
    ref.add(
        list(range(len(gallery))), whole_g, [p.product_id for p in gallery], [p.defect_type for p in gallery]
    )
    thresholds = {pid: calibrate_thresholds(ref, pid) for pid in models}
    idents: dict[int, ProductIdentification] = {}
    for pid, model in models.items():
        rows = [i for i, p in enumerate(gallery) if p.product_id == pid]
        as_query = [describe_region(model, gallery[i].image) for i in rows]
        region = np.stack(
            [
                describe_region(model, gallery[i].image, gallery[i].mask)
                if gallery[i].mask is not None
                else q
                for i, q in zip(rows, as_query, strict=True)
            ]
        )
        idents[pid] = build_product_identification(
            pid,
            rows,
            [gallery[i].defect_type for i in rows],
            whole_g[rows],
            region,
            region_query=np.stack(as_query),
            fingerprint=model_fingerprint(model),
        )
        print(name, pid, idents[pid].report, flush=True)
    sides = {"today": Side(), "whole+fusion": Side(), "region+fusion": Side()}
    latency: list[float] = []
    latency_cpu: list[float] = []
    detect_ms: list[float] = []
    detect_cpu: list[float] = []
    whole_q = embedder.embed([prep(p.image) for p in queries], batch_size=16)
    for photo, vector in zip(queries, whole_q, strict=True):
        pid = photo.product_id
        model = models[pid]
        assert model.calibration is not None
        t0, c0 = time.perf_counter(), time.thread_time()
        detected = model.detect(photo.image)
        detect_ms.append((time.perf_counter() - t0) * 1000)
        detect_cpu.append((time.thread_time() - c0) * 1000)
        anomaly = AnomalyEvidence(pid, detected.score, model.calibration.threshold)
        hits = ref.search(vector, VERDICT_K, product_id=pid)
        raw = compute_verdict(hits, min_score=-math.inf, min_margin=-math.inf)
        t = thresholds[pid]
        ref_unknown = raw.product_id is None or raw.score < t.min_score or raw.margin < t.min_margin
        ref_ev = IdentificationEvidence(
            raw.product_id, raw.defect_type_id, raw.score, raw.margin, ref_unknown
        )
        # today: the verdict is the answer (no anomaly step in it)
        sides["today"].outcomes.append((fuse_outcome(anomaly=None, identification=ref_ev), photo))
        sides["whole+fusion"].outcomes.append((fuse_outcome(anomaly=anomaly, identification=ref_ev), photo))
        t0, c0 = time.perf_counter(), time.thread_time()
        region = describe_region(model, photo.image)
        found = idents[pid].identify(vector, region, fingerprint=model_fingerprint(model))
        latency.append((time.perf_counter() - t0) * 1000)
        latency_cpu.append((time.thread_time() - c0) * 1000)
        new_ev = IdentificationEvidence(
            pid, found.defect_type_id, found.score, found.margin, found.is_unknown, found.confidence
        )
        side = sides["region+fusion"]
        side.outcomes.append((fuse_outcome(anomaly=anomaly, identification=new_ev), photo))
        if photo.defect_type is not None:
            side.confidences.append(found.confidence)
            side.right.append(found.defect_type_id == photo.defect_type)
            if guidance is not None:
                truth = photo.defect_type
                for answer in sides.values():
                    outcome = answer.outcomes[-1][0]
                    named = outcome.defect_type_id if outcome.label == "defect" else None
                    answer.guidance_right.append(guidance(truth, named))
    return Result(
        name,
        notes,
        sides,
        len(gallery),
        sum(p.defect_type is not None for p in queries),
        sum(p.defect_type is None for p in queries),
        latency,
        latency_cpu,
        detect_ms,
        detect_cpu,
        {pid: ident.report for pid, ident in idents.items()},
    )


def _train(
    extractor: FeatureExtractor,
    normals: Sequence[Image.Image],
    defects: Sequence[Image.Image],
    config: PatchCoreConfig,
) -> PatchCore:
    result = train_and_score(normals, defects, config, extractor=extractor, criterion="youden")
    return result.model


# --- data sets -----------------------------------------------------------------------------------------


def demo_guidance(root: Path, manifest: DemoManifest) -> Callable[[int, int | None], bool]:
    """Whether the extractive guidance for an answered type quotes the true type's manual sections.

    As `POST /inspections/{id}/guidance` with the outcome's defect type: hybrid retrieval with defect
    headings over the demo's Korean PDF manuals, then the extractive generator on those passages. Right =
    the passage the answer quotes first for each of cause / action / prevention is under the true defect's
    heading (bench/retrieval_bench.py's criterion). No defect type (normal, unknown) quotes no section.
    """
    from bench.retrieval_bench import Defect, same_defect

    types: dict[int, tuple[str, DemoDefectType]] = {}
    chunks: list[IndexedChunk] = []
    for pid, product in enumerate(manifest.products, start=1):
        for i, d in enumerate(product.defect_types, start=1):
            types[pid * 100 + i] = (product.code, d)
        parsed = parse_pdf(
            (root / product.manual_pdf).read_bytes(), max_pages=500, max_bytes=100 * 1024 * 1024
        )
        chunks += [
            IndexedChunk(f"{product.code}-{c.ordinal}", product.code, product.code, c.page, c.section, c.text)
            for c in chunk_pages(parsed.pages)
        ]
    index = ManualIndex.build(chunks, UseTextEmbedder.load(), tokenizer=KoreanTokenizer())
    generator = ExtractiveGenerator()
    cache: dict[tuple[int, int], bool] = {}

    def right(truth: int, named: int | None) -> bool:
        if named is None:
            return False
        if (truth, named) not in cache:
            code, d = types[named]
            query = RetrievalQuery(
                code, defect_code=d.code, defect_name=d.name, defect_description=d.description
            )
            sections = index.retrieve_sections(query)
            generator.generate(
                GuidanceRequest(
                    product_code=code,
                    product_name=code,
                    defect_code=d.code,
                    defect_name=d.name,
                    defect_description=d.description,
                    is_anomaly=True,
                    passages=sections_to_passages(sections),
                )
            )
            t = types[truth][1]
            expected = Defect(t.code, t.name, t.description, t.manual_heading)
            cache[(truth, named)] = all(
                bool(sections[kind]) and same_defect(sections[kind][0], expected) for kind in SECTION_KINDS
            )
        return cache[(truth, named)]

    return right


def demo_set(
    root: Path, extractor: FeatureExtractor, seed: int, defects_per_type: int
) -> tuple[dict[int, PatchCore], list[Photo], list[Photo], str, Callable[[int, int | None], bool]]:
    from app.demo.generator import generate_demo_dataset

    manifest = generate_demo_dataset(root, seed=seed, defects_per_type=defects_per_type)
    models: dict[int, PatchCore] = {}
    gallery: list[Photo] = []
    queries: list[Photo] = []
    for pid, product in enumerate(manifest.products, start=1):
        codes = {d.code: pid * 100 + i for i, d in enumerate(product.defect_types, start=1)}
        normals = [Image.open(root / n.path).convert("RGB") for n in product.normal_images if not n.holdout]
        queries += [
            Photo(pid, None, Image.open(root / n.path).convert("RGB"))
            for n in product.normal_images
            if n.holdout
        ]
        for d in product.defect_images:
            mask = np.asarray(Image.open(root / d.mask_path).convert("L")) > 127
            photo = Photo(pid, codes[d.defect_code], Image.open(root / d.path).convert("RGB"), mask)
            if d.holdout:
                photo.mask = None
                queries.append(photo)
            else:
                gallery.append(photo)
        registered = [p.image for p in gallery if p.product_id == pid]
        models[pid] = _train(extractor, normals, registered, PatchCoreConfig())
    notes = (
        f"seed {seed}, {manifest.size} px, {len(manifest.products)} products, "
        f"{sum(len(p.defect_types) for p in manifest.products)} defect types, {defects_per_type} per type "
        "(25 % holdout)"
    )
    return models, gallery, queries, notes, demo_guidance(root, manifest)


def _deeppcb_root(given: Path | None) -> Path:
    if given is not None and (given / "PCBData").is_dir():
        return given
    default = Path("/work/datasets/DeepPCB")
    if given is None and (default / "PCBData").is_dir():
        return default
    target = Path(__file__).resolve().parent / "out" / "DeepPCB"
    if not (target / "PCBData").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "--depth", "1", DEEPPCB_URL, str(target)], check=True)
    return target


def _boxes(path: Path) -> list[tuple[int, int, int, int, int]]:
    out = []
    for line in path.read_text().split("\n"):
        parts = line.replace(",", " ").split()
        if len(parts) == 5:
            x1, y1, x2, y2, t = (int(v) for v in parts)
            out.append((x1, y1, x2, y2, t))
    return out


def deeppcb_set(
    root: Path,
    extractor: FeatureExtractor,
    *,
    crop: int,
    per_type_gallery: int,
    per_type_query: int,
    normals: int,
    seed: int,
) -> tuple[dict[int, PatchCore], list[Photo], list[Photo], str]:
    rng = random.Random(seed)
    pairs: list[tuple[str, Path, Path]] = []  # (group, test image, annotation)
    for group in sorted((root / "PCBData").glob("group*")):
        for test in sorted(group.glob("*/*_test.jpg")):
            stem = test.name[: -len("_test.jpg")]
            ann = group / f"{test.parent.name}_not" / f"{stem}.txt"
            if ann.is_file():
                pairs.append((group.name, test, ann))
    groups = sorted({g for g, _, _ in pairs})
    rng.shuffle(groups)
    test_groups = set(groups[: max(1, len(groups) // 3)])
    half = crop // 2
    candidates: dict[bool, dict[int, list[tuple[Path, Box, Box]]]] = {True: {}, False: {}}
    for group, test, ann in pairs:
        boxes = _boxes(ann)
        for x1, y1, x2, y2, t in boxes:
            cx = (x1 + x2) // 2 + rng.randint(-crop // 8, crop // 8)
            cy = (y1 + y2) // 2 + rng.randint(-crop // 8, crop // 8)
            cx, cy = min(max(cx, half), 640 - half), min(max(cy, half), 640 - half)
            window = (cx - half, cy - half, cx + half, cy + half)
            others = [
                b
                for b in boxes
                if b != (x1, y1, x2, y2, t)
                and b[0] < window[2]
                and b[2] > window[0]
                and b[1] < window[3]
                and b[3] > window[1]
            ]
            inside = x1 >= window[0] and y1 >= window[1] and x2 <= window[2] and y2 <= window[3]
            if not others and inside:
                candidates[group in test_groups].setdefault(t, []).append((test, window, (x1, y1, x2, y2)))
    gallery: list[Photo] = []
    queries: list[Photo] = []

    def load(path: Path, window: tuple[int, int, int, int]) -> Image.Image:
        with Image.open(path) as im:
            return im.convert("RGB").crop(window)

    for is_test, per_type, target in ((False, per_type_gallery, gallery), (True, per_type_query, queries)):
        for t in sorted(candidates[is_test]):
            picked = rng.sample(candidates[is_test][t], min(per_type, len(candidates[is_test][t])))
            for path, window, box in picked:
                # registered images come with their annotation as the uploaded mask; queries never do
                mask = None
                if not is_test:
                    mask = np.zeros((crop, crop), dtype=bool)
                    mask[box[1] - window[1] : box[3] - window[1], box[0] - window[0] : box[2] - window[0]] = (
                        True
                    )
                target.append(Photo(1, t, load(path, window), mask))
    templates = sorted({test.with_name(test.name.replace("_test", "_temp")) for _, test, _ in pairs})
    rng.shuffle(templates)
    normal_crops: list[Image.Image] = []
    for path in templates[: normals * 2]:
        x, y = rng.randint(0, 640 - crop), rng.randint(0, 640 - crop)
        normal_crops.append(load(path, (x, y, x + crop, y + crop)))
    bank, held = normal_crops[:normals], normal_crops[normals:]
    queries += [Photo(1, None, im) for im in held[: per_type_query * 2]]
    config = PatchCoreConfig(max_bank=4000)
    model = _train(extractor, bank, [p.image for p in gallery], config)
    notes = (
        f"{len(groups)} board groups, {len(test_groups)} held out for queries "
        f"({', '.join(sorted(test_groups))}); "
        f"{crop} px crops (jittered around the box); registered crops carry their box as the uploaded mask; "
        f"{normals} random template crops in the bank, other template crops are the defect-free queries"
    )
    return {1: model}, gallery, queries, notes


def elpv_set(
    extractor: FeatureExtractor, *, normals: int, registered: int, per_class: int, seed: int
) -> tuple[dict[int, PatchCore], list[Photo], list[Photo], str]:
    from elpv_dataset.utils import load_dataset

    images, proba, types = load_dataset()
    rng = np.random.default_rng(seed)
    models: dict[int, PatchCore] = {}
    gallery: list[Photo] = []
    queries: list[Photo] = []
    for pid, kind in enumerate(sorted(set(types.tolist())), start=1):
        good = rng.permutation(np.flatnonzero((types == kind) & (proba == 0)))
        bad = rng.permutation(np.flatnonzero((types == kind) & (proba == 1)))
        as_rgb = lambda i: Image.fromarray(images[i]).convert("RGB")  # noqa: E731
        bank = [as_rgb(i) for i in good[:normals]]
        reg = [Photo(pid, pid * 100 + 1, as_rgb(i)) for i in bad[:registered]]
        gallery += reg
        queries += [Photo(pid, None, as_rgb(i)) for i in good[normals : normals + per_class]]
        queries += [Photo(pid, pid * 100 + 1, as_rgb(i)) for i in bad[registered : registered + per_class]]
        models[pid] = _train(extractor, bank, [p.image for p in reg], PatchCoreConfig(max_bank=4000))
    notes = (
        f"types {sorted(set(types.tolist()))}; per type {normals} normals in the bank, "
        f"{registered} defective registered"
    )
    return models, gallery, queries, notes


# --- report --------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{float(np.median(values)):.1f} (p90 {float(np.percentile(values, 90)):.1f})"


def report(results: Sequence[Result], *, command: str, elapsed: float, load: tuple[float, float]) -> str:
    lines = [
        "# Region-aware defect identification benchmark",
        "",
        f"Date {date.today().isoformat()}, machine: 2-core CPU, python-svc kind (shared with other jobs; "
        f"1-minute load {load[0]:.1f} at start, {load[1]:.1f} at end), torch and FAISS on one thread. "
        f"Command: `{command}` (run took {elapsed / 60:.1f} min).",
        "",
        "Columns: **today** = the whole-image verdict alone (what the search step shows now); "
        "**whole+fusion** = the same verdict fused with the anomaly model by `fuse_outcome`; "
        "**region+fusion** = region-aware identification (`app.ml.identification`) fused the same way. "
        "Outcome top-1 = share of defect photos whose outcome is `defect` with the right type "
        "(unknown and normal count as wrong).",
        "",
    ]
    for r in results:
        today, whole, region = r.sides["today"], r.sides["whole+fusion"], r.sides["region+fusion"]
        ece, table = expected_calibration_error(region.confidences, region.right)
        lines += [
            f"## {r.name}",
            "",
            f"{r.notes}. Registered defect images {r.n_gallery}; queries {r.n_defect_queries} defect photos, "
            f"{r.n_normal_queries} defect-free photos.",
            "",
            "| figure | today | whole+fusion | region+fusion | region / whole+fusion |",
            "|---|---|---|---|---|",
        ]

        def row(
            label: str,
            f: Callable[[Side], float],
            today: Side = today,
            whole: Side = whole,
            region: Side = region,
        ) -> str:
            a, b, c = f(today), f(whole), f(region)
            ratio = f"x{c / b:.2f}" if b > 0 else "-"
            return f"| {label} | {_pct(a)} | {_pct(b)} | **{_pct(c)}** | {ratio} |"

        lines += [
            row("outcome defect-type top-1", Side.defect_top1),
            row("defect photos → unknown", lambda s: s.rate("unknown", True)),
            row("defect photos → normal", lambda s: s.rate("normal", True)),
            row("defect-free photos → normal", lambda s: s.rate("normal", False)),
            row("defect-free photos → a defect named", Side.named_defect_on_normals),
            *(
                [
                    row(
                        "guidance quotes the right defect's sections",
                        lambda s: sum(s.guidance_right) / max(1, len(s.guidance_right)),
                    )
                ]
                if region.guidance_right
                else []
            ),
            "",
            f"Identification confidence on the {len(region.right)} held-out defect photos: ECE {ece:.3f}; "
            "reliability (bin: n, mean confidence → accuracy): "
            + "; ".join(
                f"{b['low']:.1f}-{b['high']:.1f}: {b['n']}, {b['confidence']:.2f} → {b['accuracy']:.2f}"
                for b in table
            )
            + ".",
            "",
            "Latency added (region descriptor + identification, 256 px, one thread), median (p90): "
            f"CPU time {_ms(r.latency_cpu_ms)} ms, wall {_ms(r.latency_ms)} ms; "
            "the anomaly step's own `detect` "
            f"for comparison: CPU {_ms(r.detect_cpu_ms)} ms, wall {_ms(r.detect_ms)} ms (wall times include "
            "waiting for the shared cores).",
            "",
            "Leave-one-out on the registered images (what the admin sees): "
            + "; ".join(
                f"product {pid}: top-1 {rep.get('top1')}, unknown {rep.get('unknown_rate')}, "
                f"alpha {rep.get('alpha')}"
                for pid, rep in r.loo.items()
            )
            + ".",
            "",
        ]
    return "\n".join(lines)


def _progress(out: Path | None, results: list[Result], load_start: float, started: float) -> None:
    """Print the newest data set's figures; rewrite --out with all so far (a cut-off run keeps them)."""
    command = "python " + " ".join(["bench/identification_bench.py", *sys.argv[1:]])
    print(report(results[-1:], command=command, elapsed=0, load=(0, 0)), flush=True)
    if out is not None:
        text = report(
            results,
            command=command,
            elapsed=time.perf_counter() - started,
            load=(load_start, os.getloadavg()[0]),
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--defects-per-type", type=int, default=8)
    parser.add_argument("--deeppcb", type=Path, default=None)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-deeppcb", action="store_true")
    parser.add_argument("--skip-elpv", action="store_true")
    parser.add_argument("--pcb-gallery", type=int, default=25, help="registered crops per DeepPCB type")
    parser.add_argument("--pcb-queries", type=int, default=20, help="query crops per DeepPCB type")
    parser.add_argument(
        "--pcb-crops", type=int, nargs="+", default=[128], help="crop sides (px), one run each"
    )
    parser.add_argument("--elpv-per-class", type=int, default=60)
    args = parser.parse_args()
    _setup_threads()
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    embedder = EfficientNetEmbedder.load("cpu")
    extractor = FeatureExtractor.load("efficientnet_lite0", None, "cpu")
    options = PreprocessingOptions()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_demo:
            models, gallery, queries, notes, guidance = demo_set(
                Path(tmp), extractor, args.seed, args.defects_per_type
            )
            results.append(
                _evaluate(
                    "Demo data (holdout split)", notes, embedder, models, gallery, queries, options, guidance
                )
            )
            _progress(args.out, results, load_start, started)
    if not args.skip_deeppcb:
        root = _deeppcb_root(args.deeppcb)
        for crop in args.pcb_crops:
            models, gallery, queries, notes = deeppcb_set(
                root,
                extractor,
                crop=crop,
                per_type_gallery=args.pcb_gallery,
                per_type_query=args.pcb_queries,
                normals=60,
                seed=args.seed,
            )
            name = f"DeepPCB (defect types, unseen boards, {crop} px crops)"
            results.append(_evaluate(name, notes, embedder, models, gallery, queries, options))
            _progress(args.out, results, load_start, started)
    if not args.skip_elpv:
        models, gallery, queries, notes = elpv_set(
            extractor, normals=60, registered=20, per_class=args.elpv_per_class, seed=args.seed
        )
        results.append(
            _evaluate(
                "ELPV solar cells (normal vs defective)", notes, embedder, models, gallery, queries, options
            )
        )
        _progress(args.out, results, load_start, started)
    command = "python " + " ".join(["bench/identification_bench.py", *sys.argv[1:]])
    text = report(
        results, command=command, elapsed=time.perf_counter() - started, load=(load_start, os.getloadavg()[0])
    )
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
