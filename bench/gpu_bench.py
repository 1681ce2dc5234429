"""The runtime figures on a GPU (e.g. the T4 of the deployment): PyTorch CUDA vs ONNX Runtime CUDA / TensorRT.

Same steps as bench/runtime_bench.py (embed, PatchCore backbone, PatchCore detect; p50/p95 per photo, one
photo at a time, demo 256 px and 1280x960 camera-sized photos), without the web app, on the device the engines
would use. Each product model is built on the device and its runtimes checked for parity there (the build's
own check): fp16 (TensorRT's fp16 mode) is tried first and kept only when scores and maps equal fp32 PyTorch's
within 1e-4 relative; fp32 through TensorRT or the CUDA execution provider otherwise.

Needs on the GPU server: torch with CUDA, and onnxruntime-gpu instead of onnxruntime (same module name) for
the CUDA / TensorRT providers; TensorRT's libraries for the TensorRT provider. Without a CUDA device the bench
runs on the CPU and says so: the figures are then CPU figures (bench/runtime_bench.py is the CPU bench).

    .venv/bin/python bench/gpu_bench.py [--photos 30] [--json bench/out/gpu.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app.ml.torchvision_compat  # noqa: E402, F401, I001 - before anything imports torchvision

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from app.demo.generator import generate_demo_dataset  # noqa: E402
from app.ml.anomaly_runtime import prepare  # noqa: E402
from app.ml import inference_runtime as rt  # noqa: E402
from app.ml.anomaly_calibration import train_and_score  # noqa: E402
from app.ml.anomaly_select import product_config  # noqa: E402
from app.ml.embedders import EFFICIENTNET_NAME, load_embedder  # noqa: E402
from app.ml.patchcore import FeatureExtractor, PatchCoreConfig  # noqa: E402
from app.ml.preprocessing import PreprocessingOptions  # noqa: E402

from bench.runtime_bench import camera_sized, machine, pct  # noqa: E402

PRODUCT = "metal_plate"


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def gpu_name(device: str) -> str:
    if torch.device(device).type != "cuda":
        return "no CUDA device: CPU figures, not GPU ones"
    props = torch.cuda.get_device_properties(torch.device(device))
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"


def providers() -> list[str]:
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except ImportError:
        return []


def photos_for(
    size: tuple[int, int] | None,
) -> tuple[list[Image.Image], list[Image.Image], list[Image.Image]]:
    root = Path(tempfile.mkdtemp(prefix="dl-gpu-bench-"))
    side = 256 if size is None else min(size)
    generate_demo_dataset(root, seed=0, size=side, normals_per_product=12, defects_per_type=3)
    if size is not None:
        camera_sized(root, *size)
    options = PreprocessingOptions()

    def read(path: Path) -> Image.Image:
        with Image.open(path) as image:
            return prepare(image.convert("RGB"), options)

    normals = [read(p) for p in sorted((root / PRODUCT / "normal").glob("*.png"))]
    defects = [read(p) for p in sorted((root / PRODUCT / "defect").rglob("*.png"))]
    return normals[:9], defects[:3], [*defects[3:], *normals[9:]]


def run_size(args: argparse.Namespace, size: tuple[int, int] | None) -> dict[str, Any]:
    device = args.device
    normals, seen_defects, test = photos_for(size)
    test = (test * ((args.photos // max(1, len(test))) + 1))[: args.photos]
    extractor = FeatureExtractor.load(device=device)
    config = product_config(PatchCoreConfig(), normals)
    result = train_and_score(normals, seen_defects, config, extractor=extractor)
    model = result.model
    choice = model.select_runtime([*seen_defects, *normals[:4]], "auto")
    nets: dict[str, rt.CompiledNet | None] = {"torch": None}
    for check in choice.checks:
        if check.passed and model._onnx is not None:
            nets[f"{check.runtime} {check.precision}"] = rt.CompiledNet.load(
                model._onnx, check.runtime, device=device, precision=check.precision
            )
    embedders = {
        "torch": load_embedder(EFFICIENTNET_NAME, models_dir=Path(tempfile.mkdtemp()), device=device)
    }
    for name in ("onnx", "openvino"):
        embedder = load_embedder(
            EFFICIENTNET_NAME, models_dir=Path(tempfile.mkdtemp()), device=device, runtime=name
        )
        if embedder.runtime != "torch":  # type: ignore[attr-defined]
            embedders[embedder.runtime] = embedder  # type: ignore[attr-defined]
    timings: dict[str, dict[str, list[float]]] = {"embed": {}, "backbone": {}, "detect": {}}
    for i, photo in enumerate(test):
        tiles = extractor.tiles([photo], config)
        for name, net in nets.items():
            if i == 0:
                model._detect([photo], 1, net)
            sync(device)
            started = time.perf_counter()
            model._features(tiles, net)
            sync(device)
            timings["backbone"].setdefault(name, []).append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            model._detect([photo], 1, net)
            sync(device)
            timings["detect"].setdefault(name, []).append((time.perf_counter() - started) * 1000)
        for name, embedder in embedders.items():
            if i == 0:
                embedder.embed([photo])
            sync(device)
            started = time.perf_counter()
            embedder.embed([photo])
            sync(device)
            timings["embed"].setdefault(name, []).append((time.perf_counter() - started) * 1000)
    return {
        "photo": f"{size[0]}x{size[1]}" if size else "256x256",
        "tiling": config.tiling_summary(),
        "choice": choice.to_dict(),
        "embedder_checks": {
            name: [c.to_dict() for c in e.runtime_choice.checks]  # type: ignore[attr-defined]
            for name, e in embedders.items()
            if name != "torch"
        },
        "timings": timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--photos", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU fallback)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "gpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if torch.device(args.device).type != "cuda":
        print(
            "NOTE: no CUDA device here; running on the CPU. These are CPU figures, not GPU ones.", flush=True
        )
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "gpu": gpu_name(args.device),
        "providers": providers(),
        "sizes": [run_size(args, None), run_size(args, (1280, 960))],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(f"\n{report['date']}; {report['machine']}; {report['gpu']}; providers {report['providers']}")
    for result in report["sizes"]:
        tiling = result["tiling"]
        print(
            f"\n#### {result['photo']} photos (anomaly model at"
            f" {tiling['work_width']}x{tiling['work_height']},"
            f" {tiling['tile_cols'] * tiling['tile_rows']} tile(s))\n"
        )
        print("| step | variant | p50 ms | p95 ms | vs torch (p50) |")
        print("|---|---|---|---|---|")
        for step, by_variant in result["timings"].items():
            base = statistics.median(by_variant["torch"])
            for name, values in by_variant.items():
                p50 = statistics.median(values)
                print(f"| {step} | {name} | {p50:.2f} | {pct(values, 0.95):.2f} | x{base / p50:.2f} |")
        print("\nparity checks (PatchCore, on the build's check photos):")
        for check in result["choice"]["checks"]:
            score = check["max_score_rel"]
            shown = (
                f"score {score:.1e}, map {check['max_map_rel']:.1e}" if score is not None else check["params"]
            )
            print(
                f"  {check['runtime']} {check['precision']}:"
                f" {'passed' if check['passed'] else 'refused'} ({shown})"
            )
        print(f"  chosen: {result['choice']['runtime']} {result['choice']['precision']}")
        print(f"embedder checks: {json.dumps(result['embedder_checks'], default=str)[:600]}")


if __name__ == "__main__":
    main()
