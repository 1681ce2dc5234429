"""Bounded manual parsing: the file is read in a child process with CPU, memory and wall-time limits.

A hostile PDF (pages sharing one huge content stream, deep object nesting) or a DOCX ZIP bomb then
costs at most the limits, never the server's CPU or memory; the indexing job records a translated
reason. ``python -m app.manuals.parse_worker`` reads the file on stdin and limits as JSON in argv,
and writes the Document as JSON on stdout (or {"error": code, "detail": ...}).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.manuals.document import Document, Limits, ManualFileError, extract


@dataclass(frozen=True)
class ProcessLimits:
    """Limits of the parse process (besides the file limits in Limits)."""

    cpu_s: int = 30
    wall_s: float = 60.0
    memory_bytes: int = 1536 * 1024 * 1024


def _apply_rlimits(cpu_s: int, memory_bytes: int) -> None:
    """Limit this (child) process: the kernel stops it past ``cpu_s`` CPU seconds or ``memory_bytes``.

    The child sets its own limits before reading the file (no preexec_fn: running Python between fork
    and exec in a threaded server can deadlock)."""
    try:
        import resource
    except ImportError:  # not POSIX: only the wall-time limit of the parent applies
        return
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def parse_bounded(data: bytes, limits: Limits, process: ProcessLimits) -> Document:
    """Parse ``data`` in a limited child process; ManualFileError on any failure (never hangs)."""
    # The child imports this very code base, whatever the working directory or installed copy.
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(  # noqa: S603 - our own module, fixed arguments
            [
                sys.executable,
                "-m",
                "app.manuals.parse_worker",
                json.dumps(asdict(limits)),
                json.dumps({"cpu_s": process.cpu_s, "memory_bytes": process.memory_bytes}),
            ],
            input=data,
            capture_output=True,
            timeout=process.wall_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ManualFileError("timeout", f"> {process.wall_s:.0f} s") from exc
    if done.returncode != 0:
        # SIGXCPU / SIGKILL (CPU limit), MemoryError (address-space limit) or a crash.
        err = done.stderr.decode("utf-8", "replace")[-300:]
        if done.returncode in (-24, -9, 152, 137) or "MemoryError" in err:
            raise ManualFileError("too_complex", f"exit {done.returncode}")
        raise ManualFileError("parse_failed", err.strip().splitlines()[-1] if err.strip() else "")
    try:
        payload: dict[str, Any] = json.loads(done.stdout)
    except ValueError as exc:
        raise ManualFileError("parse_failed", "unreadable worker output") from exc
    if "error" in payload:
        raise ManualFileError(payload["error"], payload.get("detail", ""))
    return Document.from_json(payload)


def main() -> int:
    """Child entry point: stdin bytes -> stdout JSON."""
    if len(sys.argv) > 2:
        bounds = json.loads(sys.argv[2])
        _apply_rlimits(int(bounds["cpu_s"]), int(bounds["memory_bytes"]))
    limits = Limits(**json.loads(sys.argv[1])) if len(sys.argv) > 1 else Limits()
    data = sys.stdin.buffer.read()
    try:
        document = extract(data, limits)
    except ManualFileError as exc:
        out: dict[str, Any] = {"error": exc.code, "detail": exc.detail}
    except MemoryError:
        out = {"error": "too_complex", "detail": "memory limit"}
    else:
        out = document.to_json()
    sys.stdout.write(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
