"""Anomaly detection on real photographs: today's pipeline vs the shape-aware one vs anomalib's PatchCore.

Data (never committed; fetched or installed at run time):

* ELPV solar cells (``pip install elpv-dataset``, the ``bench`` extra): 300x300 grayscale; probability 0 is
  normal, anything above is defective.
* DeepPCB (``--deeppcb DIR``; git-cloned into bench/out/DeepPCB when absent): 640x640 grayscale boards.
  Defect-free ``*_temp.jpg`` templates are the normals, ``*_test.jpg`` the defect images with their boxes.
  Pairs are split, so a test defect image's own template is never in the bank: the model sees new regions
  of the boards, as a factory would.

Per seed a fresh random split (train normals / validation normals + defects / test normals + defects).
Pipelines, all scored on the same test images:

* ``today``: ``PatchCoreConfig()`` (EfficientNet-Lite0, square 256 resize), as deployed before this change;
* ``new``: ``product_config`` (aspect kept, tiles, grayscale, coreset ratio divided by the tile count so the
  bank keeps a one-tile bank's size) and the backbone ``select_backbone`` keeps or chooses on the validation
  images only (never on the test images): the default unless validation is large enough and another
  backbone beats it by the margin;
* ``new_fullbank`` (``--ablate-bank``, tiled sets only): ``new`` with the coreset ratio not divided (the bank
  of the previous run), same backbone, to measure what the smaller bank costs or gains;
* ``anomalib``: anomalib 2.7.0 ``PatchcoreModel`` on the same EfficientNet-Lite0 weights and the same
  square 256 input (see bench/patchcore_bench.py for the backbone equality check).

Latency is timed with the runtime each pipeline runs on when deployed: ``today`` on PyTorch (as deployed
before the inference runtimes), ``new`` on what the build's parity check chooses with INFERENCE_RUNTIME=auto
(ONNX Runtime / OpenVINO where it passes, else PyTorch), and ``today_rt``, today's model on that same
choice, so the runtime's share of the gain is visible. anomalib runs as it is (PyTorch).

Figures: image AUROC (mean, min-max over seeds), DeepPCB box hit rate (share of defect images whose anomaly
map peaks inside an annotated box), build time, latency per photo, per megapixel of the photo and per
megapixel of the working image the backbone sees (median, one thread, measured in a fresh process with the
default allocator).

    nice -n 10 .venv/bin/python bench/anomaly_real_bench.py --seeds 2

anomalib is not in the app's environment: run from a venv that has it (``pip install .[bench]`` with the
torch constraints of docs/benchmarks, or a venv layered on the app's), or pass ``--skip-anomalib``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(ROOT))

import app.ml.torchvision_compat  # noqa: E402, F401, I001 - before timm/anomalib

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from app.ml.anomaly_eval import image_auroc  # noqa: E402
from app.ml.anomaly_select import (  # noqa: E402
    BACKBONE_MARGIN,
    MIN_EVIDENCE_Z,
    MIN_VALIDATION_IMAGES,
    product_config,
    select_backbone,
)
from app.ml.inference_runtime import AUTO, TORCH  # noqa: E402
from app.ml.patchcore import FeatureExtractor, PatchCore, PatchCoreConfig  # noqa: E402

from bench import patchcore_bench as pcb  # noqa: E402

DEEPPCB_URL = "https://github.com/tangsanli5201/DeepPCB"


@dataclass
class Split:
    train: list[Image.Image]
    val: list[Image.Image]
    val_labels: list[bool]
    test: list[Image.Image]
    test_labels: list[bool]
    boxes: list[list[tuple[int, int, int, int]]]  # per test image (empty for normals / no boxes)


def elpv_split(seed: int, n_train: int, n_val: int, n_test: int) -> Split:
    from elpv_dataset.utils import load_dataset

    images, probs, _ = load_dataset()
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(probs == 0)).tolist()
    defect = rng.permutation(np.flatnonzero(probs > 0)).tolist()

    def pil(i: int) -> Image.Image:
        return Image.fromarray(images[i])

    train = [pil(i) for i in normal[:n_train]]
    vn, vd = normal[n_train : n_train + n_val], defect[:n_val]
    tn = normal[n_train + n_val : n_train + n_val + n_test]
    td = defect[n_val : n_val + n_test]
    return Split(
        train,
        [pil(i) for i in vn + vd],
        [False] * len(vn) + [True] * len(vd),
        [pil(i) for i in tn + td],
        [False] * len(tn) + [True] * len(td),
        [[] for _ in tn + td],
    )


def deeppcb_root(arg: Path | None) -> Path:
    if arg is not None and arg.exists():
        return arg
    target = ROOT / "bench" / "out" / "DeepPCB"
    if not target.exists():
        subprocess.run(["git", "clone", "--depth", "1", DEEPPCB_URL, str(target)], check=True)
    return target


def deeppcb_split(root: Path, seed: int, n_train: int, n_val: int, n_test: int, group: str) -> Split:
    pairs = sorted(root.glob(f"PCBData/{group or '*'}/*/*_temp.jpg"))
    order = np.random.default_rng(seed).permutation(len(pairs)).tolist()
    picked = [pairs[i] for i in order[: n_train + n_val + n_test]]
    train_p, val_p, test_p = picked[:n_train], picked[n_train : n_train + n_val], picked[n_train + n_val :]

    def load(p: Path) -> Image.Image:
        with Image.open(p) as im:
            return im.convert("L")

    def tested(p: Path) -> Path:
        return p.with_name(p.name.replace("_temp.jpg", "_test.jpg"))

    def boxes(p: Path) -> list[tuple[int, int, int, int]]:
        stem = p.name.replace("_temp.jpg", "")
        ann = p.parent.parent / f"{p.parent.name}_not" / f"{stem}.txt"
        out = []
        for line in ann.read_text().splitlines():
            parts = line.replace(",", " ").split()
            if len(parts) >= 4:
                x1, y1, x2, y2 = (int(v) for v in parts[:4])
                out.append((x1, y1, x2, y2))
        return out

    # Validation and test: half of the pairs give their template (normal), the other half their tested
    # image (defect), so no board region appears twice in one set.
    def half(ps: list[Path]) -> tuple[list[Path], list[Path]]:
        return ps[: len(ps) // 2], ps[len(ps) // 2 :]

    vn, vd = half(val_p)
    tn, td = half(test_p)
    return Split(
        [load(p) for p in train_p],
        [load(p) for p in vn] + [load(tested(p)) for p in vd],
        [False] * len(vn) + [True] * len(vd),
        [load(p) for p in tn] + [load(tested(p)) for p in td],
        [False] * len(tn) + [True] * len(td),
        [[] for _ in tn] + [boxes(p) for p in td],
    )


def box_hit_rate(
    maps: list[np.ndarray], labels: list[bool], boxes: list[list[tuple[int, int, int, int]]]
) -> float:
    hits, total = 0, 0
    for amap, label, bxs in zip(maps, labels, boxes, strict=True):
        if not label or not bxs:
            continue
        total += 1
        y, x = np.unravel_index(int(np.argmax(amap)), amap.shape)
        hits += any(x1 <= x <= x2 and y1 <= y <= y2 for x1, y1, x2, y2 in bxs)
    return hits / total if total else float("nan")


def run_engine(
    split: Split, cfg: PatchCoreConfig, extractor: FeatureExtractor
) -> tuple[dict[str, float], PatchCore]:
    t0 = time.perf_counter()
    model = PatchCore.fit(split.train, cfg, extractor=extractor)
    build = time.perf_counter() - t0
    outs = model.detect_many(split.test)
    return {
        "build_s": build,
        "bank": model.bank_size,
        "image_auroc": image_auroc(split.test_labels, [o.score for o in outs]),
        "box_hit": box_hit_rate([o.anomaly_map for o in outs], split.test_labels, split.boxes),
    }, model


def run_anomalib(
    split: Split, cfg: PatchCoreConfig, extractor: FeatureExtractor, model: torch.nn.Module
) -> tuple[dict[str, float], np.ndarray]:
    torch.manual_seed(cfg.seed)
    model.embedding_store.clear()
    model.memory_bank = torch.empty(0)
    rgb = [im.convert("RGB") for im in split.train]
    t0 = time.perf_counter()
    model.train()
    with torch.no_grad():
        for i in range(0, len(rgb), cfg.batch_size):
            model(extractor.preprocess(rgb[i : i + cfg.batch_size], cfg.image_size))
        model.subsample_embedding(cfg.coreset_ratio)
    build = time.perf_counter() - t0
    model.eval()
    detect = pcb.anomalib_detector(model, extractor, cfg)
    scores, maps = [], []
    for im in split.test:
        s, m = detect(im)
        scores.append(s)
        maps.append(m)
    return {
        "build_s": build,
        "bank": int(model.memory_bank.shape[0]),
        "image_auroc": image_auroc(split.test_labels, scores),
        "box_hit": box_hit_rate(maps, split.test_labels, split.boxes),
    }, model.memory_bank.numpy().copy()


def latency_worker(
    jobs: list[dict[str, Any]], images: list[Image.Image], parity_images: list[Image.Image]
) -> dict[str, Any]:
    """Median ms per image of each pipeline, alternating image by image, in this fresh process.

    A job with ``runtime`` ``auto`` first runs the build's parity check on ``parity_images`` (as a deployed
    build does on the product's photos) and is timed on whatever it chose.
    """
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    fns = {}
    runtimes: dict[str, str] = {}
    extractors: dict[str, FeatureExtractor] = {}
    for job in jobs:
        cfg = PatchCoreConfig.from_dict(job["config"])
        if cfg.backbone not in extractors:
            extractors[cfg.backbone] = FeatureExtractor.load(cfg.backbone, device="cpu")
        extractor = extractors[cfg.backbone]
        if job["name"] == "anomalib":
            model = pcb.build_anomalib(extractor, cfg.num_neighbors, verbose=False)
            model.memory_bank = torch.from_numpy(job["bank"])
            model.eval()
            fns["anomalib"] = pcb.anomalib_detector(model, extractor, cfg)
            runtimes["anomalib"] = "torch (anomalib)"
        else:
            ours = PatchCore(extractor, cfg, job["bank"])
            if job.get("runtime", TORCH) != TORCH:
                ours.select_runtime(parity_images, job["runtime"])
            fns[job["name"]] = ours.detect
            runtimes[job["name"]] = ours.runtime
    for im in images[:2]:
        for fn in fns.values():
            fn(im)
    return {"ms": pcb.interleaved_latency(images, fns), "runtime": runtimes}


def fresh_latency(
    jobs: list[dict[str, Any]], images: list[Image.Image], parity_images: list[Image.Image]
) -> dict[str, Any]:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, Any] = pool.apply(latency_worker, (jobs, images, parity_images))
    return result


def summarise(values: list[float]) -> dict[str, Any]:
    clean = [v for v in values if np.isfinite(v)]
    if not clean:
        return {"mean": None, "range": None}
    return {"mean": statistics.fmean(clean), "range": [min(clean), max(clean)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deeppcb", type=Path, default=Path("/work/datasets/DeepPCB"))
    parser.add_argument("--sets", nargs="*", default=["elpv", "deeppcb"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--elpv-train", type=int, default=100)
    parser.add_argument("--elpv-val", type=int, default=20, help="per class")
    parser.add_argument("--elpv-test", type=int, default=60, help="per class")
    parser.add_argument(
        "--pcb-group",
        default="group20085",
        help="one DeepPCB group as the product (its boards share a layout); '' pools every group",
    )
    parser.add_argument("--pcb-train", type=int, default=50)
    parser.add_argument("--pcb-val", type=int, default=20, help="pairs (half normal, half defect)")
    parser.add_argument("--pcb-test", type=int, default=60, help="pairs (half normal, half defect)")
    parser.add_argument(
        "--backbones", nargs="*", default=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    )
    parser.add_argument("--coreset", type=float, default=0.1)
    parser.add_argument(
        "--margin", type=float, default=BACKBONE_MARGIN, help="backbone rule (see anomaly_select)"
    )
    parser.add_argument("--min-validation", type=int, default=MIN_VALIDATION_IMAGES)
    parser.add_argument(
        "--min-z", type=float, default=MIN_EVIDENCE_Z, help="paired DeLong z (0: margin only)"
    )
    parser.add_argument(
        "--ablate-bank",
        action="store_true",
        help="also run new_fullbank (coreset ratio not / tiles)",
    )
    parser.add_argument("--parity-images", type=int, default=8, help="photos of the runtime parity check")
    parser.add_argument("--latency-images", type=int, default=8)
    parser.add_argument("--skip-anomalib", action="store_true")
    parser.add_argument("--max-rss-gb", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "anomaly_real.json")
    args = parser.parse_args()

    pcb.fixed_mmap_threshold()  # anomalib's coreset fragments the heap otherwise (see patchcore_bench)
    pcb.rss_guard(args.max_rss_gb)
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    today_cfg = PatchCoreConfig(coreset_ratio=args.coreset)
    extractors = {b: FeatureExtractor.load(b, device="cpu") for b in args.backbones}
    lite0 = extractors["efficientnet_lite0"]
    anomalib_model = None if args.skip_anomalib else pcb.build_anomalib(lite0, today_cfg.num_neighbors)

    results: dict[str, Any] = {}
    for name in args.sets:
        runs: dict[str, list[dict[str, Any]]] = {"today": [], "new": [], "new_fullbank": [], "anomalib": []}
        latency_jobs: list[dict[str, Any]] = []
        sizes: dict[str, int] = {}
        for seed in range(args.seeds):
            if name == "elpv":
                split = elpv_split(seed, args.elpv_train, args.elpv_val, args.elpv_test)
            else:
                root = deeppcb_root(args.deeppcb)
                split = deeppcb_split(root, seed, args.pcb_train, args.pcb_val, args.pcb_test, args.pcb_group)
            sizes = {
                "train_normal": len(split.train),
                "val": len(split.val),
                "test_normal": split.test_labels.count(False),
                "test_defect": split.test_labels.count(True),
            }
            cfg_today = replace(today_cfg, seed=seed)
            today, today_model = run_engine(split, cfg_today, lite0)
            runs["today"].append(today)
            print(name, seed, "today", json.dumps(today), flush=True)

            t0 = time.perf_counter()
            shaped = product_config(cfg_today, split.train)
            val_normals = [im for im, lab in zip(split.val, split.val_labels, strict=True) if not lab]
            val_defects = [im for im, lab in zip(split.val, split.val_labels, strict=True) if lab]
            # The search fits on the train normals and validates on the separate validation images.
            choice = select_backbone(
                split.train + val_normals,
                val_defects,
                shaped,
                candidates=args.backbones,
                extractors=extractors,
                val_fraction=len(val_normals) / (len(split.train) + len(val_normals)),
                margin=args.margin,
                min_validation=args.min_validation,
                min_z=args.min_z,
            )
            search_s = time.perf_counter() - t0
            cfg_new = replace(shaped, backbone=choice.backbone)
            new, new_model = run_engine(split, cfg_new, extractors[choice.backbone])
            new.update(
                search_s=search_s,
                backbone=choice.backbone,
                reason=choice.reason,
                val_scores=choice.scores,
                tiling=cfg_new.tiling_summary(),
            )
            runs["new"].append(new)
            print(name, seed, "new", json.dumps(new), flush=True)
            full_model = None
            tiles = cfg_new.tile_grid[0] * cfg_new.tile_grid[1]
            if args.ablate_bank and tiles > 1:
                cfg_full = replace(cfg_new, coreset_ratio=cfg_today.coreset_ratio)
                full, full_model = run_engine(split, cfg_full, extractors[choice.backbone])
                runs["new_fullbank"].append(full)
                print(name, seed, "new_fullbank", json.dumps(full), flush=True)

            anomalib_bank = None
            if anomalib_model is not None:
                theirs, anomalib_bank = run_anomalib(split, cfg_today, lite0, anomalib_model)
                runs["anomalib"].append(theirs)
                print(name, seed, "anomalib", json.dumps(theirs), flush=True)
            if seed == 0:
                today_job = {"config": cfg_today.to_dict(), "bank": today_model.memory_bank}
                latency_jobs = [
                    {"name": "today", "runtime": TORCH, **today_job},
                    {"name": "today_rt", "runtime": AUTO, **today_job},
                    {
                        "name": "new",
                        "runtime": AUTO,
                        "config": cfg_new.to_dict(),
                        "bank": new_model.memory_bank,
                    },
                ]
                if full_model is not None:
                    latency_jobs.append(
                        {
                            "name": "new_fullbank",
                            "runtime": AUTO,
                            "config": cfg_full.to_dict(),
                            "bank": full_model.memory_bank,
                        }
                    )
                work_mp = {
                    job["name"]: math.prod(PatchCoreConfig.from_dict(job["config"]).work_size) / 1e6
                    for job in latency_jobs
                }
                work_mp["anomalib"] = cfg_today.image_size**2 / 1e6
                # The parity check runs on the product's own photos as in a build: validation defects first.
                parity = sorted(zip(split.val_labels, split.val, strict=True), key=lambda p: not p[0])
                parity_images = [im for _, im in parity][: args.parity_images]
                if anomalib_bank is not None:
                    latency_jobs.append(
                        {"name": "anomalib", "config": cfg_today.to_dict(), "bank": anomalib_bank}
                    )
                lat_images = split.test[: args.latency_images]
        load_before = os.getloadavg()
        lat_out = fresh_latency(latency_jobs, lat_images, parity_images)
        lat, lat_runtime = lat_out["ms"], lat_out["runtime"]
        mp = statistics.fmean(im.width * im.height for im in lat_images) / 1e6
        row: dict[str, Any] = {
            "sizes": sizes,
            "seeds": args.seeds,
            "photo_mp": mp,
            "loadavg_before_latency": load_before,
            "loadavg_after_latency": os.getloadavg(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for impl, impl_runs in runs.items():
            if not impl_runs:
                continue
            row[impl] = {
                "image_auroc": summarise([r["image_auroc"] for r in impl_runs]),
                "box_hit": summarise([r["box_hit"] for r in impl_runs]),
                "build_s": statistics.median(r["build_s"] for r in impl_runs),
                "bank": impl_runs[0]["bank"],
                "latency_ms": lat[impl],
                "latency_ms_per_mp": lat[impl] / mp,
                "latency_ms_per_work_mp": lat[impl] / work_mp[impl],
                "work_mp": work_mp[impl],
                "runtime": lat_runtime[impl],
                "runs": impl_runs,
            }
        # Today's model on the runtime the new pipeline gets: no AUROC of its own (same scores within 1e-4).
        row["today_rt"] = {
            "latency_ms": lat["today_rt"],
            "latency_ms_per_mp": lat["today_rt"] / mp,
            "latency_ms_per_work_mp": lat["today_rt"] / work_mp["today_rt"],
            "work_mp": work_mp["today_rt"],
            "runtime": lat_runtime["today_rt"],
        }
        results[name] = row
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float))

    print(
        "\n| set | pipeline | runtime | image AUROC mean (range) | box hit | build s | bank | ms/photo"
        " | ms/input MP | ms/working MP | vs today per input MP |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in results.items():
        base = row["today"]["latency_ms_per_mp"]
        for impl in ("today", "today_rt", "new", "new_fullbank", "anomalib"):
            if impl not in row:
                continue
            r = row[impl]
            if "image_auroc" not in r:
                print(
                    f"| {name} | {impl} | {r['runtime']} | (= today) | | | | {r['latency_ms']:.0f} |"
                    f" {r['latency_ms_per_mp']:.0f} | {r['latency_ms_per_work_mp']:.0f} |"
                    f" {r['latency_ms_per_mp'] / base:.2f}x |"
                )
                continue
            au, bh = r["image_auroc"], r["box_hit"]
            au_s = (
                f"{au['mean']:.3f} ({au['range'][0]:.3f}-{au['range'][1]:.3f})"
                if au["mean"] is not None
                else "-"
            )
            bh_s = f"{bh['mean']:.2f}" if bh["mean"] is not None else "-"
            print(
                f"| {name} | {impl} | {r['runtime']} | {au_s} | {bh_s} | {r['build_s']:.1f} | {r['bank']} |"
                f" {r['latency_ms']:.0f} | {r['latency_ms_per_mp']:.0f} | {r['latency_ms_per_work_mp']:.0f} |"
                f" {r['latency_ms_per_mp'] / base:.2f}x |"
            )
        print(f"sizes {name}: {json.dumps(row['sizes'])}, seeds {row['seeds']}")
        loads = f"{row['loadavg_before_latency']} -> {row['loadavg_after_latency']}"
        print(f"load average around the latency runs: {loads}")


if __name__ == "__main__":
    main()
