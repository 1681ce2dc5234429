"""The anomaly step's time against PatchCore's own time: pictures drawn eagerly (before) vs on view (now).

One run, one process, the same photos: for each held-out demo photo of one product the bench times
- `detect`: PatchCore alone on the prepared photo (the floor);
- `step`: the whole anomaly step as the API runs it now (score, regions, map stored, record written);
- `eager pictures`: what the step drew before this change for every request: heat map, mask, overlay and
  comparison, PNG-encoded at PIL's default level 6 (the old code path, drawn from the same map);
- `view pictures`: what a worker's page costs when it is looked at: overlay + comparison at level 1.
Run from the repository root:
    .venv/bin/python bench/anomaly_step_bench.py [--size 256] [--photos 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app.ml.torchvision_compat  # noqa: E402, F401, I001 - before anything imports torchvision

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from sqlalchemy import select  # noqa: E402

from app.ml.anomaly_runtime import current_models, prepare  # noqa: E402
from app.catalog import service as catalog_service  # noqa: E402
from app.cli import run_migrations  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.db.tables import Inspection, Product, User  # noqa: E402
from app.demo.generator import generate_demo_dataset  # noqa: E402
from app.demo.loader import register_dataset  # noqa: E402
from app.inspection import service as inspection_service  # noqa: E402
from app.inspection.anomaly import pictures  # noqa: E402
from app.inspection.anomaly import service as anomaly_service  # noqa: E402
from app.main import create_app  # noqa: E402
from app.ml import anomaly_viz  # noqa: E402

PRODUCT = "metal_plate"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="demo photo size in pixels")
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="dl-anomaly-step-"))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp / "data",
        models_dir=tmp / "models",
        manual_store_dir=tmp / "ms",
        log_level="WARNING",
        load_models=False,
    )
    run_migrations(settings)
    root = settings.data_path / "demo"
    generate_demo_dataset(root, seed=0, size=args.size, normals_per_product=12, defects_per_type=3)
    with TestClient(create_app(settings)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        services = state.services
        with state.session_factory() as session:
            register_dataset(session, storage=state.storage, settings=settings, root=root)
            product = session.scalar(select(Product).where(Product.code == PRODUCT))
            assert product is not None
            pid = product.id
            # A record owner only: "!" is no hash, so this user can never log in.
            user = User(username="bench", display_name="bench", role="admin", password_hash="!")  # noqa: S106
            session.add(user)
            session.commit()
            uid = user.id
        runner = state.runner
        with state.session_factory() as session:
            from app.db.tables import DeploymentJob

            job = DeploymentJob(kind="anomaly_model", product_id=pid, status="queued")
            session.add(job)
            session.commit()
            job_id = job.id
        runner.run_inline(job_id)
        model = current_models(services.models).get(pid)
        assert model is not None, "the anomaly model was not built"

        folder = root / PRODUCT
        photos = sorted((folder / "defect").rglob("*.png")) + sorted((folder / "normal").glob("*.png"))[-4:]
        photos = photos[: args.photos]
        detect_ms: list[float] = []
        step_ms: list[float] = []
        eager_ms: list[float] = []
        view_ms: list[float] = []
        for photo_path in photos:
            data = photo_path.read_bytes()
            with state.session_factory() as session:
                bench_user = session.get(User, uid)
                row = inspection_service.create_inspection(
                    session,
                    storage=state.storage,
                    settings=settings,
                    data=data,
                    file_name=photo_path.name,
                    product_id=pid,
                    user=bench_user,
                )
                inspection_id = row.id
            with state.session_factory() as session:
                options = catalog_service.preprocessing_options(session, product_ids=[pid])[pid]
            prepared = prepare(Image.open(io.BytesIO(data)).convert("RGB"), options)
            started = time.perf_counter()
            model.detect(prepared)
            detect_ms.append((time.perf_counter() - started) * 1000)

            with state.session_factory() as session:
                bench_user = session.get(User, uid)
                started = time.perf_counter()
                anomaly_service.check_inspection(
                    session,
                    services=services,
                    inspection_id=inspection_id,
                    product_id=pid,
                    reference_image_id=None,
                    user=bench_user,
                )
                step_ms.append((time.perf_counter() - started) * 1000)
                inspection = session.get(Inspection, inspection_id)
                assert inspection is not None
                render = inspection.anomaly_result["render"]  # type: ignore[index]

                original = anomaly_viz.to_png

                def level6(image: object) -> bytes:
                    buf = io.BytesIO()
                    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)  # type: ignore[arg-type]
                    picture.save(buf, format="PNG")
                    return buf.getvalue()

                anomaly_viz.to_png = level6  # type: ignore[assignment]
                try:
                    started = time.perf_counter()
                    for name in pictures.PICTURES:
                        pictures.draw(
                            session, services=services, inspection=inspection, name=name, render=render
                        )
                    eager_ms.append((time.perf_counter() - started) * 1000)
                finally:
                    anomaly_viz.to_png = original  # type: ignore[assignment]
                started = time.perf_counter()
                for name in ("overlay.png", "comparison.png"):
                    pictures.draw(session, services=services, inspection=inspection, name=name, render=render)
                view_ms.append((time.perf_counter() - started) * 1000)

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {statistics.median(values):.1f} | {pct(values, 0.95):.1f} |"

    before = [s + e for s, e in zip(step_ms, eager_ms, strict=True)]
    print(f"photos: {len(photos)} at {args.size} px, threads {args.threads}")
    print("| part | p50 ms | p95 ms |")
    print("|---|---|---|")
    print(row("PatchCore detect (floor)", detect_ms))
    print(row("anomaly step now (pictures on view)", step_ms))
    print(row("anomaly step before (4 pictures drawn, level 6)", before))
    print(row("pictures a page views later (overlay + comparison, level 1)", view_ms))
    print(
        f"step / detect: now x{statistics.median(step_ms) / statistics.median(detect_ms):.2f},"
        f" before x{statistics.median(before) / statistics.median(detect_ms):.2f};"
        f" step before / now x{statistics.median(before) / statistics.median(step_ms):.2f}"
    )


if __name__ == "__main__":
    main()
