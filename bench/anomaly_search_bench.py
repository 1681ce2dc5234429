"""Nearest-neighbour search of PatchCore on a large bank: exact (flat) vs FAISS IVF, on real ELPV cells.

One bank from ``--cells`` normal ELPV cells (coreset ``--coreset``), scored on held-out normal and defective
cells by the same model with each search: patch recall@1 against the exact neighbour, image score and map
differences, image AUROC, and the time of the nearest-neighbour step for one photo's patches (``--tiles``
photos' worth of queries: 4 is a 2x2-tiled photo), median of 9, one thread.

    nice -n 10 .venv/bin/python bench/anomaly_search_bench.py --cells 100 --json bench/out/anomaly_search.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from app.ml.anomaly_eval import image_auroc  # noqa: E402
from app.ml.patchcore import FeatureExtractor, PatchCore, PatchCoreConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=100, help="normal cells in the bank")
    parser.add_argument("--test", type=int, default=40, help="per class")
    parser.add_argument("--coreset", type=float, default=0.1)
    parser.add_argument("--lists", nargs="*", type=int, default=[64])
    parser.add_argument("--probes", nargs="*", type=int, default=[2, 4, 8, 16])
    parser.add_argument("--tiles", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "anomaly_search.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)

    from elpv_dataset.utils import load_dataset

    images, probs, _ = load_dataset()
    rng = np.random.default_rng(args.seed)
    normal = rng.permutation(np.flatnonzero(probs == 0)).tolist()
    defect = rng.permutation(np.flatnonzero(probs > 0)).tolist()
    train = [Image.fromarray(images[i]) for i in normal[: args.cells]]
    test_idx = normal[args.cells : args.cells + args.test] + defect[: args.test]
    test = [Image.fromarray(images[i]) for i in test_idx]
    labels = [False] * args.test + [True] * args.test

    extractor = FeatureExtractor.load("efficientnet_lite0", device="cpu")
    cfg = PatchCoreConfig(coreset_ratio=args.coreset, grayscale=True, seed=args.seed)
    t0 = time.perf_counter()
    exact = PatchCore.fit(train, cfg, extractor=extractor)
    build_s = time.perf_counter() - t0
    feats = torch.cat(
        [exact._features(extractor.tiles(test[i : i + 8], cfg), None) for i in range(0, len(test), 8)]
    )
    queries = feats.reshape(-1, feats.shape[-1]).numpy()
    one_photo = np.ascontiguousarray(np.concatenate([queries[: queries.shape[0] // len(test)]] * args.tiles))

    def timed_nearest(model: PatchCore) -> float:
        model._nearest(one_photo)
        ts = []
        for _ in range(9):
            t = time.perf_counter()
            model._nearest(one_photo)
            ts.append(time.perf_counter() - t)
        return 1000 * statistics.median(ts)

    ref_d, ref_i = exact._nearest(queries)
    ref_out = exact.detect_many(test)
    ref_scores = np.array([o.score for o in ref_out])
    rows = [
        {
            "search": exact.search_kind,
            "recall_at_1": 1.0,
            "image_auroc": image_auroc(labels, list(ref_scores)),
            "nearest_ms": timed_nearest(exact),
        }
    ]
    for lists in args.lists:
        for probe in args.probes:
            t = time.perf_counter()
            model = PatchCore(extractor, replace(cfg, ivf_lists=lists, ivf_probe=probe), exact.memory_bank)
            index_s = time.perf_counter() - t
            d, i = model._nearest(queries)
            outs = model.detect_many(test)
            scores = np.array([o.score for o in outs])
            map_rel = max(
                float(
                    np.abs(o.anomaly_map - r.anomaly_map).max()
                    / max(float(np.abs(r.anomaly_map).max()), 1e-12)
                )
                for o, r in zip(outs, ref_out, strict=True)
            )
            rows.append(
                {
                    "search": model.search_kind,
                    "index_build_s": index_s,
                    "recall_at_1": float((i == ref_i).mean()),
                    "patch_distance_max_rel_over": float(((d - ref_d) / np.maximum(ref_d, 1e-6)).max()),
                    "image_score_max_rel_diff": float((np.abs(scores - ref_scores) / ref_scores).max()),
                    "image_score_mean_rel_diff": float((np.abs(scores - ref_scores) / ref_scores).mean()),
                    "map_max_rel_diff": map_rel,
                    "image_auroc": image_auroc(labels, list(scores)),
                    "nearest_ms": timed_nearest(model),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "cells": args.cells,
        "bank": exact.bank_size,
        "build_s": build_s,
        "queries_per_timed_call": int(one_photo.shape[0]),
        "loadavg": os.getloadavg(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"bank {exact.bank_size} from {args.cells} cells, {one_photo.shape[0]} queries per timed call")
    print("| search | recall@1 | image score max rel diff | image AUROC | nearest ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['search']} | {r['recall_at_1']:.4f} | {r.get('image_score_max_rel_diff', 0.0):.2e} |"
            f" {r['image_auroc']:.4f} | {r['nearest_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
