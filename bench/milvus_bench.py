"""Gallery search, FAISS against Milvus: latency (p50/p95) and recall@10, with and without a product filter.

One run measures, at each gallery size: the FAISS gallery (flat, the default, exact) and the Milvus gallery
with a FLAT and an HNSW index, each searched one query at a time (as a request does) over the whole gallery
and restricted to the query's product. Recall@10 is against an exact numpy search of the same scope.

Vectors are clustered like embeddings (each product around its own centre, each defect type around a
sub-centre) in products of very different sizes (Zipf), so a product filter keeps from a few to a quarter
of the gallery. The Milvus server is the real engine (the `milvus` 2.3 package) started by this script on
loopback unless --milvus-uri names one.

Usage: python bench/milvus_bench.py [--sizes 10000 100000] [--dim 1280] [--queries 200] [--products 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.ml.gallery import Gallery, GalleryHit, VectorGallery
from app.ml.milvus_gallery import HNSW_EF, MilvusConfig, MilvusGallery, client_for

K = 10


@dataclass(frozen=True)
class Row:
    """One measured configuration."""

    size: int
    engine: str
    scope: str
    fill_s: float
    p50_ms: float
    p95_ms: float
    recall: float


def clustered(rng: np.random.Generator, n: int, dim: int, products: int) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors in `products` Zipf-sized products; returns (vectors, product ids 1..products)."""
    weights = 1.0 / np.arange(1, products + 1)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * n)).astype(int)
    sizes[0] += n - sizes.sum()
    product_ids = np.repeat(np.arange(1, products + 1), sizes)
    centres = _unit(rng.standard_normal((products, dim)).astype(np.float32))
    types = _unit(rng.standard_normal((products * 4, dim)).astype(np.float32))
    label = rng.integers(0, 4, n)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 10_000):
        end = min(n, start + 10_000)
        pid = product_ids[start:end] - 1
        noise = _unit(rng.standard_normal((end - start, dim)).astype(np.float32))
        vectors[start:end] = _unit(centres[pid] + 0.5 * types[pid * 4 + label[start:end]] + 0.8 * noise)
    return vectors, product_ids


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def fill(gallery: VectorGallery, vectors: np.ndarray, product_ids: np.ndarray) -> None:
    """Add every vector in batches (image ids 1..n)."""
    for start in range(0, len(vectors), 5_000):
        end = min(len(vectors), start + 5_000)
        gallery.add(
            list(range(start + 1, end + 1)),
            vectors[start:end],
            product_ids[start:end].tolist(),
            [None] * (end - start),
        )


def exact_top(
    vectors: np.ndarray, product_ids: np.ndarray, query: np.ndarray, product: int | None
) -> set[int]:
    """Image ids of the exact top-K (ids are row + 1)."""
    rows = np.arange(len(vectors)) if product is None else np.flatnonzero(product_ids == product)
    scores = vectors[rows] @ query
    return {int(r) + 1 for r in rows[np.argsort(-scores)[:K]]}


def measure(
    search: Callable[[np.ndarray, int | None], list[GalleryHit]],
    queries: np.ndarray,
    products: np.ndarray,
    truth: list[set[int]],
    filtered: bool,
) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, recall@10) over the queries, one at a time after 5 warm-up searches."""
    for q, p in zip(queries[:5], products[:5], strict=True):
        search(q, int(p) if filtered else None)
    times, recalls = [], []
    for q, p, want in zip(queries, products, truth, strict=True):
        start = time.perf_counter()
        hits = search(q, int(p) if filtered else None)
        times.append(time.perf_counter() - start)
        recalls.append(len({h.image_id for h in hits} & want) / max(1, min(K, len(want))))
    ms = np.asarray(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(np.mean(recalls))


@contextmanager
def milvus_server(uri: str | None) -> Iterator[str]:
    """The given Milvus, or the real engine started on loopback for this run."""
    if uri:
        yield uri
        return
    from tests.services import milvus_server as start

    with tempfile.TemporaryDirectory(prefix="milvus-bench-") as workdir:
        server = start(Path(workdir))
        try:
            yield next(server)
        finally:
            next(server, None)


def run(sizes: list[int], dim: int, n_queries: int, n_products: int, uri: str) -> list[Row]:
    """Every engine at every size; prints each row as it is measured."""
    faiss.omp_set_num_threads(1)
    config = MilvusConfig(uri=uri, prefix="bench")
    client = client_for(config)
    for stale in client.list_collections():  # left by an interrupted run on the same server
        if stale.startswith("bench_"):
            client.drop_collection(stale)
    rows: list[Row] = []
    for size in sizes:
        rng = np.random.default_rng(size)
        vectors, product_ids = clustered(rng, size, dim, n_products)
        picked = rng.integers(0, size, n_queries)
        queries = _unit(
            vectors[picked] + 0.6 * _unit(rng.standard_normal((n_queries, dim)).astype(np.float32))
        )
        products = product_ids[picked]
        truth = {
            False: [exact_top(vectors, product_ids, q, None) for q in queries],
            True: [
                exact_top(vectors, product_ids, q, int(p)) for q, p in zip(queries, products, strict=True)
            ],
        }
        share = np.mean([np.mean(product_ids == p) for p in products])
        print(
            f"{size:,} vectors x {dim}: a query's product holds {share:.1%} of the gallery on average",
            flush=True,
        )
        engines: list[tuple[str, Callable[[], VectorGallery]]] = [
            ("FAISS flat", lambda: Gallery.empty("defect", "bench", dim, "flat")),
            ("Milvus FLAT", lambda: MilvusGallery.create(config, "defect", "bench", dim, "flat")),
            ("Milvus HNSW", lambda: MilvusGallery.create(config, "defect", "bench", dim, "hnsw")),
        ]
        for name, make in engines:
            gallery = make()
            start = time.perf_counter()
            fill(gallery, vectors, product_ids)
            if isinstance(gallery, MilvusGallery):
                gallery.wait_indexed(timeout_s=1800)
            fill_s = time.perf_counter() - start
            for filtered in (False, True):
                p50, p95, recall = measure(
                    lambda q, p, g=gallery: g.search(q, K, product_id=p),
                    queries,
                    products,
                    truth[filtered],
                    filtered,
                )
                row = Row(size, name, "1 product" if filtered else "all", fill_s, p50, p95, recall)
                rows.append(row)
                print(
                    f"  {name:12s} {row.scope:9s} fill {fill_s:7.1f} s  p50 {p50:7.2f} ms  "
                    f"p95 {p95:7.2f} ms  recall@10 {recall:.4f}",
                    flush=True,
                )
            gallery.discard()  # a Milvus collection leaves the server's memory before the next one
        del vectors
    return rows


def report(rows: list[Row], args: argparse.Namespace, took_s: float) -> str:
    """The Markdown table for docs/benchmarks/milvus.md."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f'Date {datetime.now(UTC):%Y-%m-%d}, machine "{os.cpu_count()}-core CPU, {platform.machine()}, '
        f'no GPU", 1-minute load average {load:.1f} at the end (shared with other jobs). Milvus 2.3.5 '
        "standalone (the `milvus` package) on loopback, pymilvus 3.0.2; FAISS with one OpenMP thread as "
        "on the request path.",
        f"Command: `python bench/milvus_bench.py --sizes {' '.join(map(str, args.sizes))} --dim {args.dim} "
        f"--queries {args.queries} --products {args.products}` (run took {took_s / 60:.1f} min).",
        "",
        "| gallery | engine | product filter | fill + index s | search p50 ms | p95 ms | recall@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size:,} | {r.engine} | {r.scope} | {r.fill_s:.1f} | {r.p50_ms:.2f} | {r.p95_ms:.2f} "
            f"| {r.recall:.4f} |"
        )
    lines.append("")
    lines.append(f"Milvus HNSW: M=32, efConstruction=80, ef=max({HNSW_EF}, 4k) at search.")
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and print the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--dim", type=int, default=1280, help="efficientnet-lite0, the default embedder, gives 1280"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--products", type=int, default=60)
    parser.add_argument(
        "--milvus-uri", default="", help="an existing Milvus (default: start one on loopback)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    with milvus_server(args.milvus_uri or None) as uri:
        rows = run(args.sizes, args.dim, args.queries, args.products, uri)
    print()
    print(report(rows, args, time.perf_counter() - started))


if __name__ == "__main__":
    main()
