"""Where a server's time goes under load: py-spy samples `defectlens serve` while N workers run inspections.

Uses the demo install of bench/throughput_bench.py (`--work`), starts this checkout's server, runs `--workers`
line workers (upload + search + anomaly) for `--duration` seconds with py-spy recording every thread, and
prints the functions with the most samples (own and cumulative), grouped by request step. py-spy is a
profiling tool, not a dependency: pass its path with `--py-spy` (e.g. from `pip install py-spy` into any
virtualenv).

Usage: .venv/bin/python bench/throughput_profile.py --work bench/out/throughput-demo --py-spy /path/py-spy
       [--workers 16] [--duration 30] [--idle] [--env KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput_bench import _pct, _prepare_demo, _ready, _run_level, _start, _stop  # noqa: E402

# Frames that name the step a sample belongs to.
STEP_MARKERS = {
    "create_inspection": "upload",
    "search_inspection": "search",
    "check_inspection": "anomaly",
    "get_current_user": "auth",
}


def _summarise(collapsed: Path, top: int) -> list[str]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        for frame in set(frames):
            total[frame] += count
        own[frames[-1]] += count
        step = next((s for f in frames for m, s in STEP_MARKERS.items() if f.startswith(f"{m} ")), "other")
        steps[step] += count
    lines = [f"samples: {samples}", "", "by step:"]
    lines += [f"  {name:10s} {n / samples:6.1%}" for name, n in steps.most_common()]
    lines += ["", "own time:"]
    lines += [f"  {n / samples:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "cumulative:"]
    lines += [f"  {n / samples:6.1%}  {frame}" for frame, n in total.most_common(top * 2)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--py-spy", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--idle", action="store_true", help="also sample waiting threads (what blocks)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("bench/out/profile.txt"))
    parser.add_argument("--env", nargs="*", default=[])
    args = parser.parse_args()
    env, password, photos, _ = _prepare_demo(args.work.resolve())
    extra = dict(item.split("=", 1) for item in args.env)
    server = _start("profiled", ROOT, {**env, "OMP_NUM_THREADS": "1", **extra})
    collapsed = args.out.with_suffix(".collapsed")
    collapsed.parent.mkdir(parents=True, exist_ok=True)
    try:
        _ready(server, password, photos)
        _run_level(server, 4, 5)
        spy = subprocess.Popen(
            [
                str(args.py_spy),
                "record",
                "--pid",
                str(server.process.pid),
                "--duration",
                str(int(args.duration)),
                "--rate",
                "50",
                "--format",
                "raw",
                "--output",
                str(collapsed),
                "--nonblocking",
                *(["--idle"] if args.idle else []),
            ]
        )
        result = _run_level(server, args.workers, args.duration)
        spy.wait(120)
    finally:
        _stop(server)
    lines = [
        f"{args.workers} workers, {args.duration:.0f} s: {result.rate:.2f} insp/s, inspection p95 "
        f"{_pct(result.flow_ms, 0.95):.0f} ms, errors {sum(result.errors.values())}",
        *_summarise(collapsed, args.top),
    ]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
