"""Throughput benchmark: 1, 4, 16 and 32 concurrent line workers (upload + search + anomaly), main vs branch.

Generates and registers the demo data (`defectlens demo`, seed 0: 3 products, search index, PatchCore memory
banks) once, then starts two real servers (`defectlens serve`, uvicorn, each in its own process) on the
same data: this checkout, and a reference commit (default `main`) checked out in a temporary
`git worktree`. Each level runs for `--duration` seconds against one server, then the other (the order
alternates per level so a change in the shared machine's load does not favour one side). Every worker loops
over the demo's holdout defect photos: `POST /api/v1/inspections`, `POST .../search`, `POST .../anomaly`; a
503 is retried after its Retry-After, as a line client does. Reported per level and server: inspections/s,
p50/p95 of the whole inspection and of each step, errors (anything but 2xx and a 503 with Retry-After), the
load average, and the ratios branch / reference.

Usage: .venv/bin/python bench/throughput_bench.py [--levels 1 4 16 32] [--duration 30] [--reference main]
       [--work bench/out/throughput-demo] [--out docs/benchmarks/throughput.md]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import shutil
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
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli import run_migrations  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.demo.loader import demo_credentials, load_demo  # noqa: E402
from bench.load_bench import _build  # noqa: E402

STEPS = ("upload", "search", "anomaly")
# Every upload is a photo never seen before, as on a line: a counter is written into two pixels' low bits.
_UPLOADS = itertools.count()
_UPLOADS_LOCK = threading.Lock()


def _unique_png(pixels: np.ndarray) -> bytes:
    """The photo with two pixels changed by one upload counter, as PNG (level 1; ~1 ms of client CPU)."""
    with _UPLOADS_LOCK:
        n = next(_UPLOADS)
    changed = pixels.copy()
    changed[0, 0, 0] = n % 256
    changed[0, 1, 0] = (n // 256) % 256
    buffer = io.BytesIO()
    Image.fromarray(changed).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@dataclass
class LevelResult:
    """What one concurrency level measured against one server."""

    workers: int
    duration_s: float
    load_before: float
    flows: int = 0
    flow_ms: list[float] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    refusals: int = 0
    cpu_s: float = 0.0  # the server process's CPU time (all threads) during the level
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def rate(self) -> float:
        """Completed inspections per second."""
        return self.flows / self.duration_s

    @property
    def cpu_ms_per_inspection(self) -> float:
        """Server CPU per completed inspection: what the work costs, whatever else shares the machine."""
        return self.cpu_s * 1000 / self.flows if self.flows else float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    """One step, retried after a 503's Retry-After (at most 10 times); None when it failed."""
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
            with result.lock:
                result.refusals += 1
            time.sleep(min(int(response.headers["retry-after"]), 30))
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
    photos: list[tuple[np.ndarray, str, int]],
    offset: int,
    deadline: float,
    result: LevelResult,
) -> None:
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        i = offset
        while time.monotonic() < deadline:
            pixels, name, product_id = photos[i % len(photos)]
            i += 1
            data = _unique_png(pixels)
            started = time.perf_counter()
            created = _step(
                client,
                result,
                "upload",
                "POST",
                "/api/v1/inspections",
                files={"file": (name, data, "image/png")},
                data={"product_id": str(product_id)},
            )
            if created is None:
                continue
            url = f"/api/v1/inspections/{created.json()['id']}"
            if _step(client, result, "search", "POST", f"{url}/search", json={}) is None:
                continue
            if _step(client, result, "anomaly", "POST", f"{url}/anomaly", json={}) is None:
                continue
            # A flow that ends after the deadline still counts: the rate divides by the level's duration,
            # and every level of both servers is cut the same way.
            with result.lock:
                result.flows += 1
                result.flow_ms.append((time.perf_counter() - started) * 1000)


def _run_level(server: Server, workers: int, duration: float) -> LevelResult:
    result = LevelResult(workers=workers, duration_s=duration, load_before=os.getloadavg()[0])
    cpu_before = _cpu_s(server.process.pid)
    deadline = time.monotonic() + duration
    threads = [
        threading.Thread(
            target=_worker, args=(server.base, server.headers, server.photos, n * 7, deadline, result)
        )
        for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.cpu_s = _cpu_s(server.process.pid) - cpu_before
    return result


@dataclass
class Server:
    """One running `defectlens serve` and what its workers need."""

    name: str
    process: subprocess.Popen[bytes]
    base: str
    headers: dict[str, str] = field(default_factory=dict)
    photos: list[tuple[np.ndarray, str, int]] = field(default_factory=list)
    results: list[LevelResult] = field(default_factory=list)


def _start(name: str, code_dir: Path, env: dict[str, str], nice: int = 0) -> Server:
    port = _free_port()
    niced = ["nice", "-n", str(nice)] if nice else []
    process = subprocess.Popen(
        [*niced, sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env, "PYTHONPATH": str(code_dir)},
        cwd=code_dir,
    )
    return Server(name=name, process=process, base=f"http://127.0.0.1:{port}")


def _ready(server: Server, password: str, photos_by_code: list[tuple[Path, str]]) -> None:
    deadline = time.monotonic() + 240
    while True:
        try:
            if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise SystemExit(f"server {server.name} did not become ready")
        time.sleep(0.5)
    login = httpx.post(
        f"{server.base}/api/v1/auth/login", json={"username": "worker", "password": password}, timeout=30
    )
    server.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    products = {
        p["code"]: p["id"]
        for p in httpx.get(f"{server.base}/api/v1/products", headers=server.headers, timeout=30).json()
    }
    server.photos = [
        (np.asarray(Image.open(path).convert("RGB")), path.name, products[code])
        for path, code in photos_by_code
    ]


def _stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()


def _prepare_demo(base_dir: Path) -> tuple[dict[str, str], str, list[tuple[Path, str]], float | None]:
    """The demo install under `base_dir` (built once, reused): server env, worker password, photos."""
    env = {
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
    setup_s: float | None = None
    if not (settings.data_path / "demo-credentials.json").exists():
        started = time.perf_counter()
        load_demo(settings, build=False)
        _build(settings)
        setup_s = time.perf_counter() - started
    root = settings.data_path / "demo" / "seed-0"
    manifest = json.loads((root / "manifest.json").read_text())
    photos = [
        (root / d["path"], p["code"])
        for p in manifest["products"]
        for d in p["defect_images"]
        if d["holdout"]
    ]
    return env, demo_credentials(settings)["worker"], photos, setup_s


def _prepare_reference(code_dir: Path, base_dir: Path, ours: Path, common: dict[str, str]) -> dict[str, str]:
    """The reference's own demo install, built by its own `defectlens demo`.

    Artifacts are laid out by the code that built them, so two versions cannot share one install; the same
    seed gives the same photos, and our demo passwords let one login work on both.
    """
    env = {
        **common,
        "DATA_DIR": str(base_dir / "data"),
        "MODELS_DIR": str(base_dir / "models"),
        "MANUAL_STORE_DIR": str(base_dir / "manual_store"),
    }
    (base_dir / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(ours / "data" / "demo-credentials.json", base_dir / "data" / "demo-credentials.json")
    for command in (["migrate"], ["demo", "--seed", "0"]):
        subprocess.run(
            [sys.executable, "-m", "app.cli", *command],
            cwd=code_dir,
            env={**os.environ, **env, "PYTHONPATH": str(code_dir)},
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return env


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per level and server")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of 4 workers before measuring")
    parser.add_argument("--reference", default="main", help="git ref of the reference server ('' for none)")
    parser.add_argument("--work", type=Path, default=None, help="keep (and reuse) the demo install here")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/throughput.md"))
    parser.add_argument(
        "--env", nargs="*", default=[], help="extra KEY=VALUE settings for this checkout's server"
    )
    parser.add_argument(
        "--server-nice",
        type=int,
        default=0,
        help="run the servers at this niceness (negative, as root: ahead of other work on a shared machine)",
    )
    parser.add_argument(
        "--variant",
        nargs="*",
        default=[],
        help="more servers of this checkout, each NAME:KEY=VALUE[,KEY=VALUE] (e.g. batch4:BATCH_MAX=4)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = (args.work or Path(tmp) / "demo").resolve()  # the reference server runs elsewhere
        env, password, photos_by_code, setup_s = _prepare_demo(base_dir)
        # Both servers get the environment the load benchmark (docs/benchmarks/load.md) used.
        common = {**env, "OMP_NUM_THREADS": "1"}
        ours_env = {**common, **dict(item.split("=", 1) for item in args.env)}
        head = _git("rev-parse", "--short", "HEAD")
        servers = [_start(f"this branch ({head})", ROOT, ours_env, args.server_nice)]
        for variant in args.variant:
            name, _, pairs = variant.partition(":")
            extra = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
            servers.append(
                _start(f"this branch, {name} ({pairs})", ROOT, {**ours_env, **extra}, args.server_nice)
            )
        reference_dir = Path(tmp) / "reference"
        reference_sha = ""
        if args.reference:
            reference_sha = _git("rev-parse", "--short", args.reference)
            _git("worktree", "add", "--detach", str(reference_dir), args.reference)
            reference_env = _prepare_reference(reference_dir, Path(tmp) / "reference-demo", base_dir, common)
            servers.append(
                _start(f"{args.reference} ({reference_sha})", reference_dir, reference_env, args.server_nice)
            )
        try:
            for server in servers:
                _ready(server, password, photos_by_code)
                _run_level(server, 4, args.warmup)
            for i, level in enumerate(args.levels):
                for server in servers[i % len(servers) :] + servers[: i % len(servers)]:
                    result = _run_level(server, level, args.duration)
                    server.results.append(result)
                    print(
                        f"{server.name}: {level} workers {result.rate:.2f} insp/s, flow p95 "
                        f"{_pct(result.flow_ms, 0.95):.0f} ms, errors {sum(result.errors.values())}, "
                        f"CPU {result.cpu_ms_per_inspection:.0f} ms/insp, load {result.load_before:.1f}",
                        flush=True,
                    )
        finally:
            for server in servers:
                _stop(server)
            if args.reference:
                _git("worktree", "remove", "--force", str(reference_dir))
                shutil.rmtree(reference_dir, ignore_errors=True)
    _report(args, servers, len(photos_by_code), setup_s)


def _table(server: Server) -> list[str]:
    lines = [
        "| workers | load avg | inspections | insp/s | errors | 503 retried | inspection p50 / p95 ms "
        "| upload p95 | search p95 | anomaly p95 | server CPU ms / insp |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in server.results:
        steps = " | ".join(f"{_pct(r.latencies[s], 0.95):.0f}" for s in STEPS)
        lines.append(
            f"| {r.workers} | {r.load_before:.1f} | {r.flows} | {r.rate:.2f} | {sum(r.errors.values())} "
            f"| {r.refusals} | {_pct(r.flow_ms, 0.5):.0f} / {_pct(r.flow_ms, 0.95):.0f} | {steps} "
            f"| {r.cpu_ms_per_inspection:.0f} |"
        )
    return lines


def _report(args: argparse.Namespace, servers: list[Server], photo_count: int, setup_s: float | None) -> None:
    setup = f"{setup_s:.0f} s" if setup_s is not None else f"reused from {args.work}"
    lines = [
        "# Throughput: concurrent line workers, this branch vs the reference",
        "",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: 2-core CPU (shared with other sessions; "
        "the 1-minute load average before each level is in the tables). Command: "
        f"`python bench/throughput_bench.py --levels {' '.join(map(str, args.levels))} "
        f"--duration {args.duration:.0f}"
        + (f" --env {' '.join(args.env)}" if args.env else "")
        + (f" --variant {' '.join(args.variant)}" if args.variant else "")
        + (f" --server-nice {args.server_nice}" if args.server_nice else "")
        + "`.",
        "",
        f"Demo data set (seed 0, 3 products; setup incl. search index and PatchCore memory banks {setup}); "
        f"{photo_count} holdout defect photos cycled by every worker; {args.duration:.0f} s per level and "
        "server, the servers taking turns to go first. Each server: `defectlens serve` (uvicorn) in its own "
        "process, SQLite, local storage, packaged EfficientNet-Lite0, OMP_NUM_THREADS=1 in the environment. "
        "An inspection = upload + search + anomaly, each retried after a 503's Retry-After. Every upload is "
        "a new photo (two pixels carry an upload counter), so nothing a server remembers by checksum is "
        "reused across inspections.",
        "",
    ]
    for server in servers:
        lines += [f"### {server.name}", "", *_table(server), ""]
    if args.reference:
        ours, ref = servers[0], servers[-1]
        lines += [
            "### Ratios (this branch / reference)",
            "",
            "| workers | insp/s | inspection p95 | search p95 | anomaly p95 | server CPU per inspection |",
            "|---|---|---|---|---|---|",
        ]
        for mine, theirs in zip(ours.results, ref.results, strict=True):
            p95 = _pct(mine.flow_ms, 0.95) / _pct(theirs.flow_ms, 0.95)
            steps = [_pct(mine.latencies[s], 0.95) / _pct(theirs.latencies[s], 0.95) for s in STEPS[1:]]
            cpu = mine.cpu_ms_per_inspection / theirs.cpu_ms_per_inspection
            lines.append(
                f"| {mine.workers} | {mine.rate / max(theirs.rate, 1e-9):.2f}x | {p95:.2f}x | "
                + " | ".join(f"{r:.2f}x" for r in steps)
                + f" | {cpu:.2f}x |"
            )
        lines.append("")
    errors = [
        f"{s.name} {r.workers} workers {kind} x{n}"
        for s in servers
        for r in s.results
        for kind, n in r.errors.items()
    ]
    lines += ["Errors by kind: " + (", ".join(errors) or "none") + ".", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
