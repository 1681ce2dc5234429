"""What a worker waits for on the demo data, through the real HTTP API: upload + search, register, rebuild.

Runs the whole application in-process (FastAPI TestClient, SQLite, local object storage, the packaged
EfficientNet-Lite0, one torch/faiss thread as on the request path) on the demo data set:
`defectlens demo` registration, the `search_index` deployment job, then for each holdout defect image
`POST /api/v1/inspections` + `POST /api/v1/inspections/{id}/search`, and `POST .../register` for a few of
them (one embedding each) compared with rebuilding every gallery in the same run.

Usage: python bench/search_api_bench.py [--queries 20] [--out docs/benchmarks/search.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import faiss
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.core.config import Settings
from app.demo.loader import demo_credentials, load_demo
from app.main import create_app

SECTION = "## Worker-facing API timings on the demo data"


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def _deploy(client: TestClient, headers: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    job_id = client.post("/api/v1/deployments", json={"kind": "search_index"}, headers=headers).json()["id"]
    while True:
        job = client.get(f"/api/v1/deployments/{job_id}", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return time.perf_counter() - started, job
        time.sleep(0.05)


def _write(out: Path, section: str) -> None:
    text = out.read_text(encoding="utf-8")
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
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--registers", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/search.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=base / "data",
            models_dir=base / "models",
            manual_store_dir=base / "manual_store",
            log_json=False,
            log_level="WARNING",
        )
        run_migrations(settings)
        load_demo(settings, build=False)
        creds = demo_credentials(settings)
        manifest = json.loads((settings.data_path / "demo" / "seed-0" / "manifest.json").read_text())
        root = settings.data_path / "demo" / "seed-0"
        holdouts = [
            root / d["path"] for p in manifest["products"] for d in p["defect_images"] if d["holdout"]
        ]
        with TestClient(create_app(settings)) as client:
            login = client.post("/api/v1/auth/login", json={"username": "admin", "password": creds["admin"]})
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            client.cookies.clear()
            build_s, job = _deploy(client, headers)
            assert job["status"] == "succeeded", job
            upload_ms: list[float] = []
            search_ms: list[float] = []
            server_ms: list[float] = []
            inspection_ids: list[int] = []
            for i in range(args.queries):
                path = holdouts[i % len(holdouts)]
                t0 = time.perf_counter()
                created = client.post(
                    "/api/v1/inspections",
                    files={"file": (path.name, path.read_bytes(), "image/png")},
                    headers=headers,
                )
                t1 = time.perf_counter()
                result = client.post(
                    f"/api/v1/inspections/{created.json()['id']}/search", json={}, headers=headers
                )
                t2 = time.perf_counter()
                assert result.status_code == 200, result.text
                upload_ms.append((t1 - t0) * 1000)
                search_ms.append((t2 - t1) * 1000)
                server_ms.append(result.json()["elapsed_ms"])
                inspection_ids.append(created.json()["id"])
            register_ms: list[float] = []
            for inspection_id in inspection_ids[: args.registers]:
                stored = client.get(f"/api/v1/inspections/{inspection_id}", headers=headers).json()["search"]
                verdict = stored["verdict"]
                t0 = time.perf_counter()
                registered = client.post(
                    f"/api/v1/inspections/{inspection_id}/register",
                    json={"product_id": verdict["product_id"], "defect_type_id": verdict["defect_type_id"]},
                    headers=headers,
                )
                register_ms.append((time.perf_counter() - t0) * 1000)
                assert registered.json()["is_searchable"] is True
            rebuild_s, job = _deploy(client, headers)
    images = job["result"]["defect_images"] + job["result"]["normal_images"]
    up, search, server, reg = _ms(upload_ms), _ms(search_ms), _ms(server_ms), _ms(register_ms)
    section = "\n".join(
        [
            SECTION,
            "",
            f"Date {date.today().isoformat()}, same 2-core CPU machine shared with other jobs (1-minute load "
            f"average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end). Command: "
            "`python bench/search_api_bench.py`. The whole app in-process (TestClient, SQLite, local "
            "storage),",
            "packaged EfficientNet-Lite0, torch and faiss on 1 thread; demo data (256 px PNGs) registered by",
            f"`defectlens demo`; galleries of {images} images; {len(search_ms)} holdout defect photos as "
            "queries.",
            "",
            "| step (HTTP round trip) | p50 ms | p95 ms |",
            "|---|---|---|",
            f"| `POST /inspections` (upload, full image check, store) | {up[0]:.1f} | {up[1]:.1f} |",
            f"| `POST /inspections/{{id}}/search` (load, preprocess, embed, search, verdict, store) | "
            f"**{search[0]:.1f}** | {search[1]:.1f} |",
            f"| of which measured inside the service (`elapsed_ms`) | {server[0]:.1f} | {server[1]:.1f} |",
            f"| `POST /inspections/{{id}}/register` (catalog add + one embedding + gallery save) | "
            f"**{reg[0]:.1f}** | {reg[1]:.1f} |",
            "",
            f"Rebuilding both galleries with the `search_index` job took {build_s:.1f} s the first time and "
            f"{rebuild_s:.1f} s after the registrations ({images} images), so registering one photo is about "
            f"{rebuild_s * 1000 / max(reg[0], 1e-6):.0f}x cheaper than a rebuild and is visible to the next "
            "search at once.",
            "",
        ]
    )
    _write(args.out, section)
    print(section)


if __name__ == "__main__":
    main()
