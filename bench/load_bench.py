"""Load benchmark: 16 and 32 concurrent line workers doing upload + search + anomaly against a real server.

Generates and registers the demo data (`defectlens demo`: 3 products, search index, PatchCore memory
banks, manual indexes) in a temporary directory, starts `defectlens serve` in its own process (SQLite,
local storage, packaged models, the default bounded inference queue), then runs each concurrency level for
`--duration` seconds: every worker loops over the demo's holdout defect photos doing
`POST /api/v1/inspections` (upload), `POST .../search` and `POST .../anomaly`. A caller refused with 503
waits its `Retry-After` and tries again, as a line client should. Reported per level: completed flows,
errors (anything but 2xx and a 503 with Retry-After), p50/p95 per step, and what callers beyond capacity
received (how many 503s, their Retry-After and how fast the refusal came).

Usage: nice -n 10 python bench/load_bench.py [--levels 16 32] [--duration 30] [--out docs/benchmarks/load.md]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli import run_migrations
from app.core.config import Settings
from app.demo.loader import demo_credentials, load_demo

SECTION = "## Load: concurrent workers (upload + search + anomaly)"
STEPS = ("upload", "search", "anomaly")


@dataclass
class LevelResult:
    """What one concurrency level measured."""

    workers: int
    duration_s: float
    flows: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    refusals: list[tuple[str, int, float]] = field(default_factory=list)  # step, Retry-After, ms
    inspection_ids: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def _step(
    client: httpx.Client, result: LevelResult, step: str, method: str, url: str, **kwargs: object
) -> httpx.Response | None:
    """One step, retried after a 503's Retry-After (at most 10 times, as a line client would); None when it
    failed."""
    for _attempt in range(11):
        started = time.perf_counter()
        try:
            response = client.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            with result.lock:
                result.errors[f"{step}: {type(exc).__name__}"] += 1
            return None
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code == 503 and response.headers.get("retry-after", "").isdigit():
            wait = int(response.headers["retry-after"])
            with result.lock:
                result.refusals.append((step, wait, elapsed_ms))
            time.sleep(min(wait, 30))
            continue
        if response.is_success:
            with result.lock:
                result.latencies[step].append(elapsed_ms)
            return response
        with result.lock:
            result.errors[f"{step}: {response.status_code}"] += 1
        return None
    with result.lock:
        result.errors[f"{step}: still 503 after 10 retries"] += 1
    return None


def _worker(
    base: str,
    headers: dict[str, str],
    photos: list[tuple[Path, int]],
    offset: int,
    deadline: float,
    result: LevelResult,
) -> None:
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        i = offset
        while time.monotonic() < deadline:
            path, product_id = photos[i % len(photos)]
            i += 1
            created = _step(
                client,
                result,
                "upload",
                "POST",
                "/api/v1/inspections",
                files={"file": (path.name, path.read_bytes(), "image/png")},
                data={"product_id": str(product_id)},
            )
            if created is None:
                continue
            inspection_id = created.json()["id"]
            with result.lock:
                result.inspection_ids.append(inspection_id)
            if (
                _step(
                    client, result, "search", "POST", f"/api/v1/inspections/{inspection_id}/search", json={}
                )
                is None
            ):
                continue
            anomaly = _step(
                client, result, "anomaly", "POST", f"/api/v1/inspections/{inspection_id}/anomaly", json={}
            )
            if anomaly is not None:
                with result.lock:
                    result.flows += 1


def _run_level(
    base: str, headers: dict[str, str], photos: list[tuple[Path, int]], workers: int, duration: float
) -> LevelResult:
    result = LevelResult(workers=workers, duration_s=duration)
    deadline = time.monotonic() + duration
    threads = [
        threading.Thread(target=_worker, args=(base, headers, photos, n * 7, deadline, result))
        for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


@dataclass
class Burst:
    """A burst of simultaneous searches, none retried: what callers beyond capacity receive."""

    size: int
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: Counter[str] = field(default_factory=Counter)
    ok_ms: list[float] = field(default_factory=list)
    refused_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _burst(base: str, headers: dict[str, str], inspection_ids: list[int], size: int) -> Burst:
    burst = Burst(size=size)
    barrier = threading.Barrier(size)

    def one(n: int) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            barrier.wait()
            started = time.perf_counter()
            response = client.post(
                f"/api/v1/inspections/{inspection_ids[n % len(inspection_ids)]}/search", json={}
            )
            elapsed = (time.perf_counter() - started) * 1000
        with burst.lock:
            burst.statuses[response.status_code] += 1
            if response.status_code == 503:
                burst.retry_after[response.headers.get("retry-after", "none")] += 1
                burst.refused_ms.append(elapsed)
            elif response.is_success:
                burst.ok_ms.append(elapsed)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return burst


def _build(settings: Settings) -> None:
    """The search index and PatchCore memory banks (the manual index is not on this path)."""
    from app.core.observability import Metrics
    from app.core.services import Services
    from app.core.storage import make_storage
    from app.db.session import make_engine, make_session_factory
    from app.deployments.jobs import build_now
    from app.ml.registry import ModelRegistry, resolve_device

    engine = make_engine(settings.database_url)
    try:
        services = Services(
            settings=settings,
            storage=make_storage(settings),
            models=ModelRegistry(settings.models_path, resolve_device(settings.device)),
            session_factory=make_session_factory(engine),
            metrics=Metrics(),
        )
        built = build_now(services, ["search_index", "anomaly_model"])
        if set(built.values()) != {"succeeded"}:
            raise SystemExit(f"demo build failed: {built}")
    finally:
        engine.dispose()


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def _table(results: list[LevelResult]) -> list[str]:
    lines = [
        "| workers | flows done | flows/s | errors | 503 (then retried) | upload p50 / p95 ms "
        "| search p50 / p95 ms | anomaly p50 / p95 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [f"{_pct(r.latencies[s], 0.5):.0f} / {_pct(r.latencies[s], 0.95):.0f}" for s in STEPS]
        lines.append(
            f"| {r.workers} | {r.flows} | {r.flows / r.duration_s:.2f} | {sum(r.errors.values())} "
            f"| {len(r.refusals)} | " + " | ".join(cells) + " |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per level")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/load.md"))
    parser.add_argument("--burst", type=int, default=54, help="simultaneous searches in the burst probe")
    parser.add_argument("--work", type=Path, default=None, help="keep (and reuse) the demo install here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = args.work or Path(tmp)
        env_settings = {
            "DATA_DIR": str(base_dir / "data"),
            "MODELS_DIR": str(base_dir / "models"),
            "MANUAL_STORE_DIR": str(base_dir / "manual_store"),
            "LOG_JSON": "false",
            "LOG_LEVEL": "WARNING",
        }
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=base_dir / "data",
            models_dir=base_dir / "models",
            manual_store_dir=base_dir / "manual_store",
            log_json=False,
            log_level="WARNING",
        )
        run_migrations(settings)
        started = time.perf_counter()
        setup_s: float | None = None
        if not (settings.data_path / "demo-credentials.json").exists():
            load_demo(settings, build=False)
            _build(settings)
            setup_s = time.perf_counter() - started
        creds = demo_credentials(settings)
        root = settings.data_path / "demo" / "seed-0"
        manifest = json.loads((root / "manifest.json").read_text())
        photos_by_code = [
            (root / d["path"], p["code"])
            for p in manifest["products"]
            for d in p["defect_images"]
            if d["holdout"]
        ]
        load_before = os.getloadavg()[0]
        runs = {
            name: _serve_and_run(args, {**env_settings, **extra}, creds["worker"], photos_by_code)
            for name, extra in CONFIGS
        }
    _report(args, runs, len(photos_by_code), setup_s, load_before)


CONFIGS = (
    ("bounded queue (ours)", {}),
    # Before: every request ran its inference at once and everyone slowed down together.
    ("no queue (reference, before)", {"INFERENCE_CONCURRENCY": "100000", "INFERENCE_QUEUE_SIZE": "0"}),
)


@dataclass
class Run:
    """One server configuration's levels, burst probe and final metrics."""

    results: list[LevelResult]
    burst: Burst
    metrics: str


def _serve_and_run(
    args: argparse.Namespace,
    env_settings: dict[str, str],
    password: str,
    photos_by_code: list[tuple[Path, str]],
) -> Run:
    port = _free_port()
    env = {**os.environ, **env_settings, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not become ready")
            time.sleep(0.5)
        login = httpx.post(f"{base}/api/v1/auth/login", json={"username": "worker", "password": password})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        products = {p["code"]: p["id"] for p in httpx.get(f"{base}/api/v1/products", headers=headers).json()}
        photos = [(path, products[code]) for path, code in photos_by_code]
        results = [_run_level(base, headers, photos, n, args.duration) for n in args.levels]
        ids = [i for r in results for i in r.inspection_ids]
        burst = _burst(base, headers, ids, args.burst)
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        server.terminate()
        server.wait(30)
    return Run(results=results, burst=burst, metrics=metrics)


def _report(
    args: argparse.Namespace,
    runs: dict[str, Run],
    photo_count: int,
    setup_s: float | None,
    load_before: float,
) -> None:
    setup = f"{setup_s:.0f} s" if setup_s is not None else f"reused from {args.work}"
    ours, reference = (runs[name] for name, _extra in CONFIGS)
    lines = [
        "# Load benchmark: concurrent line workers",
        "",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: 2-core CPU, python-svc kind (shared with "
        f"other sessions; load average {load_before:.1f} before the run). Command: "
        f"`nice -n 10 python bench/load_bench.py --levels {' '.join(map(str, args.levels))} "
        f"--duration {args.duration:.0f}`.",
        "",
        f"Subset: the demo data set (`defectlens demo`, seed 0: 3 products; setup incl. search index and "
        f"PatchCore memory banks {setup}), {photo_count} holdout defect photos cycled by every "
        f"worker; {args.duration:.0f} s per level. Server: `defectlens serve` in its own process, SQLite, "
        "local storage, packaged EfficientNet-Lite0, OMP_NUM_THREADS=1. Each worker: upload, then search, "
        "then anomaly; a 503 is retried after waiting its Retry-After (at most 10 times). Both "
        "configurations run in the same invocation, one after the other, on the same data.",
        "",
    ]
    for name, run in runs.items():
        lines += [f"### {name}", "", *_table(run.results), ""]
    lines += [
        "### Ratios (ours / reference)",
        "",
        "| workers | flows/s | upload p95 | search p95 | anomaly p95 |",
        "|---|---|---|---|---|",
    ]
    for mine, theirs in zip(ours.results, reference.results, strict=True):
        ratios = [
            _pct(mine.latencies[s], 0.95) / _pct(theirs.latencies[s], 0.95)
            if theirs.latencies[s]
            else float("nan")
            for s in STEPS
        ]
        lines.append(
            f"| {mine.workers} | {mine.flows / max(1, theirs.flows):.2f}x | "
            + " | ".join(f"{r:.2f}x" for r in ratios)
            + " |"
        )
    lines += [
        "",
        "Latencies are per successful attempt, measured at the client (they include the time waiting in the "
        "inference queue). An error is any answer other than 2xx or a 503 with Retry-After.",
        "",
        "## Beyond capacity (ours: INFERENCE_CONCURRENCY=2, INFERENCE_QUEUE_SIZE=16)",
        "",
    ]
    refusals = [r for res in ours.results for r in res.refusals]
    waits = Counter(wait for _step, wait, _ms in refusals)
    refusal_ms = [ms for _step, _wait, ms in refusals]
    if refusals:
        lines.append(
            f"- During the levels: {len(refusals)} refusals, HTTP 503 with `Retry-After` "
            + ", ".join(f"{w} s ({n}x)" for w, n in sorted(waits.items()))
            + f"; answered in p50 {_pct(refusal_ms, 0.5):.0f} ms / p95 {_pct(refusal_ms, 0.95):.0f} ms "
            '(no queueing, nothing stored), body `{"detail": "지금 분석 요청이 많아 처리할 수 없습니다. '
            'N초 후 다시 시도하세요.", "code": "errors.inference_busy"}`; each refused step succeeded when '
            "retried (errors: 0 unless shown above)."
        )
    else:
        lines.append("- During the levels: no caller was refused (the queue held every waiting step).")
    for name, run in runs.items():
        burst = run.burst
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(burst.statuses.items()))
        lines.append(
            f"- Burst probe, {name}: {burst.size} searches sent at the same instant, none retried. Answers: "
            f"{codes}. Refused: `Retry-After` "
            + (", ".join(f"{w} s ({n}x)" for w, n in sorted(burst.retry_after.items())) or "-")
            + f" within p50 {_pct(burst.refused_ms, 0.5):.0f} ms; served: p50 "
            f"{_pct(burst.ok_ms, 0.5):.0f} ms / p95 {_pct(burst.ok_ms, 0.95):.0f} ms."
        )
    lines += [
        f"- /metrics (ours) after the run: {_metric(ours.metrics, 'defectlens_inference_refused_total'):.0f} "
        f"refusals, {_metric(ours.metrics, 'defectlens_inference_queue_wait_seconds_count'):.0f} queued "
        f"steps, total queue wait "
        f"{_metric(ours.metrics, 'defectlens_inference_queue_wait_seconds_sum'):.1f} s.",
        "",
        "Errors by kind: "
        + (
            ", ".join(
                f"{name} {r.workers} workers {k} x{v}"
                for name, run in runs.items()
                for r in run.results
                for k, v in r.errors.items()
            )
            or "none"
        )
        + ".",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
