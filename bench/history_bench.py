"""History benchmark: the list page and the statistics on a large inspection table (SQLite, embedded).

Inserts N inspections spread over the last 365 days (3 products, 6 defect types, 2 generators, random
scores) into a fresh migrated SQLite database, then times, in one run: the first list page unfiltered,
the first page filtered by product + 30-day range, a deep page, the 30-day and 365-day statistics, and
the admin dashboard's numbers.

Usage: python bench/history_bench.py [--sizes 10000 100000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli import run_migrations
from app.core.config import Settings
from app.db.session import make_engine, make_session_factory
from app.db.tables import DefectType, Inspection, Product, User
from app.history import dashboard, service


def _seed(settings: Settings, n: int) -> tuple[int, object]:
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    rng = random.Random(7)
    with factory() as session:
        user = User(username="w", password_hash="!", role="worker")  # noqa: S106 - an unusable hash, no login
        products = [Product(code=f"p{i}", name=f"제품 {i}") for i in range(3)]
        session.add_all([user, *products])
        session.flush()
        defects = [
            DefectType(product_id=p.id, code=f"d{j}", name=f"불량 {j}") for p in products for j in range(2)
        ]
        session.add_all(defects)
        session.flush()
        now = datetime.now(UTC)
        rows = []
        for i in range(n):
            defect = rng.choice(defects)
            done = rng.random() < 0.6
            created = now - timedelta(seconds=rng.randint(0, 365 * 86400))
            rows.append(
                {
                    "user_id": user.id,
                    "product_id": defect.product_id if rng.random() < 0.7 else None,
                    "verdict_product_id": defect.product_id,
                    "verdict_defect_type_id": defect.id,
                    "status": "completed" if done else "guided",
                    "image_key": f"inspections/{i:08d}/original.png",
                    "content_type": "image/png",
                    "size_bytes": 1000,
                    "width": 64,
                    "height": 64,
                    "checksum": "x",
                    "is_anomaly": rng.random() < 0.5,
                    "anomaly_score": rng.random() * 4,
                    "generator": rng.choice(("extractive", "llm")),
                    "timings_ms": {},
                    "feedback_score": rng.randint(1, 5) if done else None,
                    "completed_at": created if done else None,
                    "created_at": created,
                    "updated_at": created,
                }
            )
        session.execute(insert(Inspection), rows)
        session.commit()
        pid = products[0].id
    return pid, factory


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), max(samples)


def _cases(pid: int, today: date) -> list[tuple[str, Callable[[Session], object]]]:
    last30 = service.HistoryFilter(date_from=today - timedelta(days=29), date_to=today)
    year = service.HistoryFilter(date_from=today - timedelta(days=364), date_to=today)
    product30 = service.HistoryFilter(product_id=pid, date_from=last30.date_from)
    everything = service.HistoryFilter()
    return [
        (
            "list page 1, no filter",
            lambda s: service.list_inspections(s, flt=everything, page=1, page_size=20),
        ),
        (
            "list page 1, product + 30 days",
            lambda s: service.list_inspections(s, flt=product30, page=1, page_size=20),
        ),
        ("list page 200", lambda s: service.list_inspections(s, flt=everything, page=200, page_size=20)),
        ("stats, 30 days", lambda s: service.inspection_stats(s, flt=last30)),
        ("stats, 365 days", lambda s: service.inspection_stats(s, flt=year)),
        ("dashboard numbers", lambda s: dashboard.dashboard(s, states=[])),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print("| inspections | query | p50 ms | max ms |")
    print("|---|---|---|---|")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(_env_file=None, data_dir=Path(tmp), load_models=False)  # type: ignore[call-arg]
            run_migrations(settings)
            start = time.perf_counter()
            pid, factory = _seed(settings, n)
            print(f"(seeded {n} rows in {time.perf_counter() - start:.1f} s)", file=sys.stderr)
            cases = _cases(pid, service.today())
            for label, fn in cases:
                with factory() as session:  # type: ignore[operator]
                    p50, worst = _time(lambda fn=fn, session=session: fn(session), args.repeats)
                print(f"| {n:,} | {label} | {p50:.1f} | {worst:.1f} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
