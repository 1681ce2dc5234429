"""PyTorch vs ONNX Runtime vs OpenVINO, side by side in one run: per-step latency and score parity.

For each photo size (the demo's 256 px and a 1280x960 camera-sized photo) the bench builds one demo product's
anomaly model and the search index in a real app (SQLite, local storage), then, photo by photo, times each
runtime in turn (interleaved, so machine noise hits all alike):

- ``embed``: the search embedder (EfficientNet-Lite0) on the prepared photo;
- ``backbone``: PatchCore's feature network (trunk + local features) on the photo's tiles; PyTorch both
  eager and as the engine runs it (a frozen TorchScript trace);
- ``detect``: PatchCore as a whole (backbone + nearest-bank search + map), the anomaly step's floor;
- ``anomaly step``: ``check_inspection`` as the API runs it (photo, nearest normal image by the
  embedder, prepare, score, regions, map stored, record written);
- ``search step``: ``search_inspection`` as the API runs it (photo, embed, gallery search, verdict).
Each runtime's steps run on a fresh upload of the photo in the worker's order (search, then anomaly, which
reuses the search's vector); ``--anomaly-first`` keeps the earlier runs' order.

Parity: every photo's score and anomaly map, and every embedding, compared with PyTorch's (relative
difference as the build's check computes it), plus a real set: ELPV solar cells (``elpv-dataset``, the
``bench`` extra) with their own PatchCore model, and DeepPCB boards when ``--deeppcb DIR`` is given.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/runtime_bench.py [--photos 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app.ml.torchvision_compat  # noqa: E402, F401, I001 - before anything imports torchvision

import numpy as np  # noqa: E402
import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from sqlalchemy import select  # noqa: E402

from app.catalog import service as catalog_service  # noqa: E402
from app.cli import run_migrations  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.db.tables import DeploymentJob, Product, User  # noqa: E402
from app.demo.generator import generate_demo_dataset  # noqa: E402
from app.demo.loader import register_dataset  # noqa: E402
from app.deployments import anomaly_model  # noqa: E402
from app.inspection import service as inspection_service  # noqa: E402
from app.inspection.anomaly import service as anomaly_service  # noqa: E402
from app.inspection.search import service as search_service  # noqa: E402
from app.ml.anomaly_calibration import train_and_score  # noqa: E402
from app.ml.embedders import EFFICIENTNET_NAME, load_embedder  # noqa: E402
from app.ml.patchcore import FeatureExtractor, PatchCore, PatchCoreConfig  # noqa: E402
from app.main import create_app  # noqa: E402
from app.ml.anomaly_runtime import prepare  # noqa: E402
from app.ml.batching import RecentResults  # noqa: E402
from app.ml.search_runtime import SEARCH  # noqa: E402
from app.core.artifacts import current_artifacts  # noqa: E402

PRODUCT = "metal_plate"
RUNTIMES = ("torch", "onnx", "openvino")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed_ms(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - started) * 1000


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def versions() -> dict[str, str]:
    import onnxruntime
    import openvino

    return {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


def camera_sized(root: Path, width: int, height: int) -> None:
    """Resize every demo photo and mask to a camera's frame (the product model then tiles it)."""
    for path in root.rglob("*.png"):
        with Image.open(path) as image:
            method = Image.Resampling.NEAREST if path.parts[-3] == "mask" else Image.Resampling.BICUBIC
            image.resize((width, height), method).save(path, compress_level=1)


def run_size(args: argparse.Namespace, label: str, size: tuple[int, int] | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="dl-runtime-bench-"))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp / "data",
        models_dir=tmp / "models",
        manual_store_dir=tmp / "ms",
        log_level="WARNING",
        load_models=False,
        inference_runtime="auto",
        max_decode_side=2048,
    )
    run_migrations(settings)
    root = settings.data_path / "demo"
    side = 256 if size is None else min(size)
    generate_demo_dataset(root, seed=0, size=side, normals_per_product=12, defects_per_type=3)
    if size is not None:
        camera_sized(root, *size)
    timings: dict[str, dict[str, list[float]]] = {}
    parity: dict[str, dict[str, float]] = {}

    def add(step: str, runtime: str, ms: float) -> None:
        timings.setdefault(step, {}).setdefault(runtime, []).append(ms)

    with TestClient(create_app(settings)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        services = state.services
        with state.session_factory() as session:
            register_dataset(session, storage=state.storage, settings=settings, root=root)
            product = session.scalar(select(Product).where(Product.code == PRODUCT))
            assert product is not None
            pid = product.id
            user = User(username="bench", display_name="bench", role="admin", password_hash="!")  # noqa: S106
            session.add(user)
            session.commit()
            uid = user.id
        for kind, product_id in (("anomaly_model", pid), ("search_index", None)):
            with state.session_factory() as session:
                job = DeploymentJob(kind=kind, product_id=product_id, status="queued")
                session.add(job)
                session.commit()
                job_id = job.id
            state.runner.run_inline(job_id)
        with state.session_factory() as session:
            artifact = current_artifacts(session, anomaly_model.KIND)[pid]
            build_choice = (artifact.meta or {})["runtime"]
            tiling = (artifact.meta or {})["tiling"]
            options = catalog_service.preprocessing_options(session, product_ids=[pid])[pid]
        folder = anomaly_model.artifact_dir(services, artifact)
        extractor = FeatureExtractor.load(device="cpu")
        models = {name: PatchCore.load(folder, extractor=extractor, runtime=name) for name in RUNTIMES}
        embedders = {
            name: load_embedder(EFFICIENTNET_NAME, models_dir=settings.models_path, runtime=name)
            for name in RUNTIMES
        }
        for name in RUNTIMES:
            assert models[name].runtime.split()[0] == name, models[name].runtime
            assert embedders[name].runtime.split()[0] == name  # type: ignore[attr-defined]
        live = services.models.get(SEARCH)
        assert live is not None
        assert live.is_built
        engines = {}
        for name in RUNTIMES:  # the built galleries with this runtime's embedder (read-only here)
            engines[name] = copy.copy(live)
            engines[name].embedder = embedders[name]
        threshold = models["torch"].calibration.threshold  # type: ignore[union-attr]

        photos = (
            sorted((root / PRODUCT / "defect").rglob("*.png"))
            + sorted((root / PRODUCT / "normal").glob("*.png"))[-6:]
        )
        photos = photos[: args.photos]
        eager = _EagerFeatures(extractor)

        def upload(data: bytes, file_name: str) -> int:
            """A new inspection as the upload route makes it (its decoded photo kept for the steps)."""
            with state.session_factory() as session:
                row = inspection_service.create_inspection(
                    session,
                    storage=state.storage,
                    settings=settings,
                    data=data,
                    file_name=file_name,
                    product_id=pid,
                    user=session.get(User, uid),
                    photos=services.photos,
                )
                return row.id

        def search_step(session: Any, **kwargs: Any) -> Any:
            kwargs.pop("reference_image_id")
            return search_service.search_inspection(session, top_k=10, **kwargs)

        for i, photo_path in enumerate(photos):
            data = photo_path.read_bytes()
            prepared = prepare(Image.open(io.BytesIO(data)).convert("RGB"), options)
            model_torch = models["torch"]
            tiles = extractor.tiles([prepared], model_torch.config)
            reference = model_torch.detect(prepared)
            ref_vec = embedders["torch"].embed([prepared])
            order = RUNTIMES if i % 2 == 0 else tuple(reversed(RUNTIMES))
            if i == 0:  # warm-up: first calls trace, allocate and tune
                for name in RUNTIMES:
                    models[name].detect(prepared)
                    embedders[name].embed([prepared])
                eager(tiles)
            _, ms = timed_ms(lambda tiles=tiles: eager(tiles))
            add("backbone", "torch eager", ms)
            for name in order:
                model = models[name]
                _, ms = timed_ms(lambda model=model, tiles=tiles: model._features(tiles, model._net))  # type: ignore[misc]
                add("backbone", name, ms)
                out, ms = timed_ms(lambda model=model, prepared=prepared: model.detect(prepared))  # type: ignore[misc]
                add("detect", name, ms)
                vec, ms = timed_ms(lambda name=name, prepared=prepared: embedders[name].embed([prepared]))  # type: ignore[misc]
                add("embed", name, ms)
                if name != "torch":
                    p = parity.setdefault(name, {"score": 0.0, "map": 0.0, "embed": 0.0, "flips": 0})
                    scale = max(abs(reference.score), threshold)
                    p["score"] = max(p["score"], abs(out.score - reference.score) / scale)
                    peak = max(float(np.abs(reference.anomaly_map).max()), threshold)
                    p["map"] = max(
                        p["map"], float(np.abs(out.anomaly_map - reference.anomaly_map).max()) / peak
                    )
                    p["embed"] = max(p["embed"], float(np.abs(vec - ref_vec).max()))
                    p["flips"] += int((out.score > threshold) != (reference.score > threshold))
                # The anomaly step embeds the photo too (nearest normal image): both engines on this runtime.
                anomaly_model.install(services, pid, model)
                services.models.swap(SEARCH, engines[name])
                # Each runtime's steps on a fresh upload of the photo, with no vector remembered from another
                # runtime's steps (the embedder id does not name the runtime).
                services.batching.recent = RecentResults(services.batching.recent.size)
                inspection_id = upload(data, photo_path.name)
                # The worker's flow: upload, search, then anomaly (its reference lookup reuses the search's
                # vector). --anomaly-first: the earlier runs' order, the anomaly step embedding the photo.
                steps = ("search step", "anomaly step")
                for step in reversed(steps) if args.anomaly_first else steps:
                    with state.session_factory() as session:
                        bench_user = session.get(User, uid)
                        call = anomaly_service.check_inspection if step == "anomaly step" else search_step
                        started = time.perf_counter()
                        call(
                            session,
                            services=services,
                            inspection_id=inspection_id,
                            product_id=pid,
                            reference_image_id=None,
                            user=bench_user,
                        )
                        add(step, name, (time.perf_counter() - started) * 1000)
            print(f"  {label}: photo {i + 1}/{len(photos)}", flush=True)
    return {
        "label": label,
        "photo": f"{size[0]}x{size[1]}" if size else "256x256",
        "tiling": tiling,
        "n_photos": len(photos),
        "build_choice": build_choice,
        "timings": timings,
        "parity": parity,
    }


class _EagerFeatures:
    """PatchCore's feature network in plain eager PyTorch (no TorchScript freeze): the 'eager torch' line."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        from app.ml.patchcore import local_features

        self.extractor = extractor
        self.local = local_features

    @torch.inference_mode()
    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        batch = tiles.contiguous(memory_format=torch.channels_last)
        return self.local(*self.extractor.trunk(batch))


def real_set_parity(args: argparse.Namespace) -> list[dict[str, Any]]:
    """ELPV (and DeepPCB when given): a PatchCore model per set, every runtime vs PyTorch on unseen photos."""
    sets: list[tuple[str, list[Image.Image], list[Image.Image], list[bool]]] = []
    try:
        from elpv_dataset.utils import load_dataset

        images, probs, _ = load_dataset()
        rng = np.random.default_rng(0)
        normal = rng.permutation(np.flatnonzero(probs == 0)).tolist()
        defect = rng.permutation(np.flatnonzero(probs > 0)).tolist()
        train = [Image.fromarray(images[i]) for i in normal[: args.real_train]]
        calib_defects = [Image.fromarray(images[i]) for i in defect[:8]]
        test_idx = normal[args.real_train : args.real_train + args.real_test] + defect[8 : 8 + args.real_test]
        test = [Image.fromarray(images[i]) for i in test_idx]
        labels = [False] * args.real_test + [True] * args.real_test
        sets.append(("ELPV solar cells (300x300 grayscale)", [*train, *calib_defects], test, labels))
    except ImportError:
        print("elpv-dataset is not installed (pip install -e '.[bench]'): ELPV parity skipped", flush=True)
    if args.deeppcb is not None and args.deeppcb.exists():
        temps = sorted(args.deeppcb.glob("PCBData/*/*/*_temp.jpg"))
        rng = np.random.default_rng(0)
        order = rng.permutation(len(temps)).tolist()
        train_paths = [temps[i] for i in order[: args.real_train]]
        test_paths = [temps[i] for i in order[args.real_train : args.real_train + args.real_test]]

        def read(p: Path) -> Image.Image:
            with Image.open(p) as im:
                return im.convert("L")

        test = [read(p) for p in test_paths] + [
            read(p.with_name(p.name.replace("_temp", "_test"))) for p in test_paths
        ]
        labels = [False] * len(test_paths) + [True] * len(test_paths)
        sets.append(("DeepPCB boards (640x640)", [read(p) for p in train_paths], test, labels))
    out = []
    extractor = FeatureExtractor.load(device="cpu")
    for name, train_and_defects, test, labels in sets:
        normals = list(train_and_defects[: args.real_train])
        defects = train_and_defects[args.real_train :]
        from app.ml.anomaly_select import product_config

        config = product_config(PatchCoreConfig(), normals)
        result = train_and_score(normals, defects, config, extractor=extractor, criterion="youden")
        model = result.model
        check_images = [*defects, *normals[:8]][:16]
        choice = model.select_runtime(check_images, "auto")
        folder = Path(tempfile.mkdtemp(prefix="dl-runtime-real-"))
        model.save(folder)
        threshold = result.calibration.threshold
        want = PatchCore.load(folder, extractor=extractor, runtime="torch").detect_many(test, batch_size=1)
        row: dict[str, Any] = {
            "set": name,
            "n_test": len(test),
            "tiling": config.tiling_summary(),
            "build_check": {c.runtime: c.passed for c in choice.checks},
        }
        for runtime in ("onnx", "openvino"):
            got = PatchCore.load(folder, extractor=extractor, runtime=runtime).detect_many(test, batch_size=1)
            score = max(
                abs(g.score - w.score) / max(abs(w.score), threshold) for g, w in zip(got, want, strict=True)
            )
            maps = max(
                float(np.abs(g.anomaly_map - w.anomaly_map).max())
                / max(float(np.abs(w.anomaly_map).max()), threshold)
                for g, w in zip(got, want, strict=True)
            )
            flips = sum(
                (g.score > threshold) != (w.score > threshold) for g, w in zip(got, want, strict=True)
            )
            row[runtime] = {"score_rel": score, "map_rel": maps, "flips": int(flips)}
        from app.ml.anomaly_eval import image_auroc

        row["image_auroc_torch"] = image_auroc(labels, [w.score for w in want])
        embed_torch = load_embedder(EFFICIENTNET_NAME, models_dir=folder)
        vectors = embed_torch.embed(test[:16])
        for runtime in ("onnx", "openvino"):
            other = load_embedder(EFFICIENTNET_NAME, models_dir=folder, runtime=runtime)
            row[runtime]["embed_abs"] = float(np.abs(other.embed(test[:16]) - vectors).max())
        out.append(row)
        print(f"  {name}: {json.dumps(row, default=str)}", flush=True)
    return out


def table(result: dict[str, Any]) -> list[str]:
    tiles = result["tiling"]["tile_cols"] * result["tiling"]["tile_rows"]
    lines = [
        f"#### {result['photo']} photos ({result['n_photos']} photos; anomaly model works at "
        f"{result['tiling']['work_width']}x{result['tiling']['work_height']} in "
        f"{tiles} tile(s) of {result['tiling']['tile_size']} px)",
        "",
        "| step | " + " | ".join(f"{n} p50 / p95 ms" for n in RUNTIMES) + " | best speed-up (p50) |",
        "|---|" + "---|" * (len(RUNTIMES) + 1),
    ]
    timings = result["timings"]
    for step in ("embed", "backbone", "detect", "anomaly step", "search step"):
        cells = []
        for name in RUNTIMES:
            values = timings[step][name]
            cells.append(f"{statistics.median(values):.1f} / {pct(values, 0.95):.1f}")
        base = statistics.median(timings[step]["torch"])
        best = min(statistics.median(timings[step][n]) for n in RUNTIMES[1:])
        lines.append(f"| {step} | " + " | ".join(cells) + f" | x{base / best:.2f} |")
    eager = timings["backbone"]["torch eager"]
    best = min(statistics.median(timings["backbone"][n]) for n in RUNTIMES[1:])
    lines.append(
        f"| backbone, eager torch | {statistics.median(eager):.1f} / {pct(eager, 0.95):.1f} | | |"
        f" x{statistics.median(eager) / best:.2f} vs eager |"
    )
    for name in RUNTIMES[1:]:
        step = statistics.median(timings["anomaly step"][name])
        detect = statistics.median(timings["detect"][name])
        lines.append(f"\n{name}: anomaly step / its own detect x{step / detect:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--real-train", type=int, default=40)
    parser.add_argument("--real-test", type=int, default=30)
    parser.add_argument("--deeppcb", type=Path, default=None, help="DeepPCB clone (optional)")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument(
        "--anomaly-first",
        action="store_true",
        help="anomaly step before the search step (the earlier runs' order) instead of the worker's flow",
    )
    parser.add_argument("--sizes", default="256,1280x960", help="comma-separated: 256 (demo) and/or WxH")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "runtime.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = datetime.now(UTC)
    results = []
    for size in args.sizes.split(","):
        if size == "256":
            results.append(run_size(args, "demo 256", None))
        else:
            width, height = (int(v) for v in size.split("x"))
            results.append(run_size(args, f"camera {size}", (width, height)))
    real = [] if args.skip_real else real_set_parity(args)
    report = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "threads": args.threads,
        "versions": versions(),
        "sizes": results,
        "real": real,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(f"\n{report['date']}, {report['machine']}, {args.threads} thread(s), {report['versions']}")
    for result in results:
        print("\n".join(["", *table(result)]))
        print(f"build-time choice: {result['build_choice']['runtime']}; parity on the timed photos:")
        for name, p in result["parity"].items():
            print(
                f"  {name}: score {p['score']:.1e}, map {p['map']:.1e},"
                f" embedding {p['embed']:.1e}, flips {p['flips']}"
            )
    for row in real:
        print(f"\n{row['set']}: {json.dumps(row, default=str)}")


if __name__ == "__main__":
    main()
