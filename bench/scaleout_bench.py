"""Scale-out benchmark: how long a change made on one server takes to reach searches on another.

Starts a fresh MariaDB database and a SeaweedFS S3 server (as the tests do), then two `defectlens serve`
processes A and B sharing them, each with its own data and models folders (its own artifact cache), at the
default ARTIFACT_POLL_S unless `--poll` says otherwise. Through A: a small catalog and a search-index build;
measured: build finished on A -> B serves the new version (fetched from S3, checksums verified). Then
`--registrations` single-image registrations on A and as many deletions: time from A's answer (the change is
committed and logged) to B's live gallery holding (or no longer holding) the image, read from B's /readyz
every 20 ms; one search on B at the end checks the last registration is really its top match.

Usage: OMP_NUM_THREADS=1 python bench/scaleout_bench.py [--registrations 20] [--poll 2.0]
       [--out docs/benchmarks/scaleout.md]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.auth import service as auth_service
from app.auth.schemas import UserCreate
from app.cli import run_migrations
from app.core.config import Settings
from app.db.session import make_engine, make_session_factory
from tests import services
from tests.inspection.search.conftest import hole_photo, inspect, make_catalog, png, scratch_photo, upload
from tests.server_process import ServerProcess

PASSWORD = "bench-" + uuid.uuid4().hex[:12]
COUNTS = re.compile(r"(\d+) defect / (\d+) normal images")


def _settings(root: Path, name: str, shared: dict[str, object]) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "base_dir": Path(__file__).resolve().parents[1],
        "data_dir": root / name / "data",
        "models_dir": root / name / "models",
        "manual_store_dir": root / name / "manual_store",
        "log_json": False,
        "load_models": True,
        **shared,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _defect_count(client: httpx.Client) -> int | None:
    engines = client.get("/readyz").json()["checks"]["models"]["engines"]
    found = COUNTS.search(str(engines.get("search", "")))
    return int(found.group(1)) if found else None


def _until(check: Callable[[], bool], timeout: float = 60.0, every: float = 0.02) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout:
            raise RuntimeError("change never became visible")
        time.sleep(every)
    return time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=20)
    parser.add_argument("--poll", type=float, default=None, help="ARTIFACT_POLL_S (default: the setting's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    poll = args.poll if args.poll is not None else Settings(_env_file=None).artifact_poll_s  # type: ignore[call-arg]
    with tempfile.TemporaryDirectory(prefix="scaleout-bench-") as tmp:
        root = Path(tmp)
        (root / "s3").mkdir()
        database = services.mariadb_database()
        s3 = services.seaweedfs_server(root / "s3")
        db_url = next(database)
        s3_info = next(s3)
        shared: dict[str, object] = {
            "database_url": db_url,
            "storage_backend": "s3",
            "s3_endpoint_url": s3_info["endpoint"],
            "s3_bucket": f"bench-{uuid.uuid4().hex[:8]}",
            "s3_access_key": s3_info["access_key"],
            "s3_secret_key": s3_info["secret_key"],
            "s3_create_bucket": True,
            "artifact_poll_s": poll,
        }
        first = _settings(root, "a", shared)
        run_migrations(first)
        engine = make_engine(db_url)
        with make_session_factory(engine)() as session:
            auth_service.create_user(
                session,
                user_in=UserCreate(username="bench-admin", password=PASSWORD, role="admin"),
                settings=first,
                actor_id=None,
            )
        engine.dispose()
        servers = [ServerProcess(_settings(root, n, shared), root / f"server-{n}.log") for n in ("a", "b")]
        try:
            for server in servers:
                server.wait_ready()
            lines = _run(servers, args.registrations, poll)
        finally:
            for server in servers:
                server.stop()
            for generator in (s3, database):
                generator.close()
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")


def _run(servers: list[ServerProcess], registrations: int, poll: float) -> list[str]:
    a, b = servers[0].client(), servers[1].client()
    login = a.post("/api/v1/auth/login", json={"username": "bench-admin", "password": PASSWORD})
    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
    a.cookies.clear()
    catalog = make_catalog(a, admin, n=8)  # type: ignore[arg-type]
    created = a.post("/api/v1/deployments", json={"kind": "search_index"}, headers=admin).json()
    while a.get(f"/api/v1/deployments/{created['id']}", headers=admin).json()["status"] in (
        "queued",
        "running",
    ):
        time.sleep(0.02)
    build_seen = _until(lambda: _defect_count(b) == 16)
    added: list[float] = []
    removed: list[float] = []
    ids: list[int] = []
    jitter = random.Random(0)
    for i in range(registrations):
        time.sleep(jitter.uniform(0, poll))  # changes arrive at any point of B's poll cycle, as in real use
        photo = png(scratch_photo(200 + i) if i % 2 else hole_photo(200 + i))
        type_id = catalog.scratch_id if i % 2 else catalog.hole_id
        before = _defect_count(b) or 0
        (image_id,) = upload(a, admin, catalog.product_id, "defect", [photo], type_id)  # type: ignore[arg-type]
        added.append(_until(lambda before=before: _defect_count(b) == before + 1))
        ids.append(image_id)
    last_photo = png(
        scratch_photo(200 + registrations - 1)
        if (registrations - 1) % 2
        else hole_photo(200 + registrations - 1)
    )
    query = inspect(b, admin, last_photo)  # type: ignore[arg-type]
    top = b.post(f"/api/v1/inspections/{query}/search", json={}, headers=admin).json()["matches"][0]
    assert top["image_id"] == ids[-1], top
    for image_id in ids:
        time.sleep(jitter.uniform(0, poll))
        before = _defect_count(b) or 0
        assert a.delete(f"/api/v1/images/{image_id}", headers=admin).status_code == 204
        removed.append(_until(lambda before=before: _defect_count(b) == before - 1))
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]

    def row(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return f"| {name} | {len(ms)} | {statistics.median(ms):.0f} | {_pct(ms, 0.95):.0f} | {max(ms):.0f} |"

    return [
        "# Scale-out: a change on server A visible to searches on server B",
        "",
        f"Date: {now}. Machine: 2-core CPU (shared with other sessions; 1-minute load average {load:.1f}"
        " at the end). Command: `OMP_NUM_THREADS=1 python bench/scaleout_bench.py"
        f" --registrations {registrations}{'' if poll == 2.0 else f' --poll {poll}'}`.",
        "",
        "Two `defectlens serve` processes on one MariaDB database and one SeaweedFS S3 bucket, each with its"
        f" own data and models folders (its own artifact cache); ARTIFACT_POLL_S={poll}. Times run from A's"
        " answer (the change is committed and in the change log) until B's live gallery reflects it, read"
        " from B's /readyz every 20 ms; each change waits a random 0..ARTIFACT_POLL_S first, so changes land"
        " anywhere in B's poll cycle. A registration reaches B with its vector in the log (B embeds"
        " nothing); a build reaches B as a new version B fetches from S3 and verifies.",
        "",
        "| change made on A | n | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|",
        row("search-index build (16 defect + 3 normal images) loaded on B", [build_seen]),
        row("one image registered", added),
        row("one image deleted", removed),
        "",
        "The last registration was B's top match for the same photo. The bound is the poll interval"
        f" ({poll} s) plus one poll's work: on average a change waits half an interval (spec: within 5 s).",
    ]


if __name__ == "__main__":
    main()
