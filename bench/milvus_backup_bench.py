"""Backup and restore of an instance whose search galleries live in Milvus: time and archive size.

One run builds, at each size, an instance (SQLite + local files) whose current search version is a Milvus
gallery of N defect images (plus N/10 normal images), the database holding one catalog row per image; then
times `create_backup`, a restore into an empty instance on the same Milvus under another collection prefix,
and a restore into an empty FAISS (default) instance. The same N vectors saved as a FAISS version are backed
up and restored beside it, as the reference. Each restore is checked: 20 queries give the source's hits.

Rows are 1280-d (EfficientNet-Lite0's size), clustered as in bench/milvus_bench.py. No images are stored (the
catalog rows name objects that are not there): the figures are the rows and the vectors.

Usage: python bench/milvus_backup_bench.py [--sizes 10000] [--dim 1280] [--milvus-uri URI]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli import run_migrations
from app.core import artifact_store
from app.core.artifacts import record_current_artifact
from app.core.backup import create_backup, restore_backup
from app.core.config import Settings
from app.core.storage import make_storage
from app.db.session import make_engine, make_session_factory
from app.db.tables import DefectType, Product, ReferenceImage
from app.ml.gallery import VectorGallery
from app.ml.milvus_gallery import MilvusConfig, MilvusGallery, client_for
from app.ml.search_runtime import SearchEngine
from app.ml.vector_backend import VectorBackend
from bench.milvus_bench import clustered, milvus_server
from tests.conftest import make_settings

PRODUCTS = 20
EMBEDDER = "bench-embedder"


def _settings(root: Path, uri: str, backend: str, prefix: str) -> Settings:
    return make_settings(root, vector_backend=backend, milvus_uri=uri, milvus_collection_prefix=prefix)


def _catalog(settings: Settings, n: int, normals: int, product_ids: np.ndarray) -> list[int]:
    """Products, 4 defect types each, and one catalog row per image; returns the defect type ids."""
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        products = [Product(code=f"p{i}", name=f"product {i}") for i in range(1, PRODUCTS + 1)]
        session.add_all(products)
        session.flush()
        types = [
            DefectType(product_id=p.id, code=f"t{j}", name=f"type {j}") for p in products for j in range(4)
        ]
        session.add_all(types)
        session.flush()
        now = datetime.now(UTC)
        rows = [
            {
                "id": i + 1,
                "product_id": int(product_ids[i % n]),
                "defect_type_id": types[(int(product_ids[i % n]) - 1) * 4 + i % 4].id if i < n else None,
                "kind": "defect" if i < n else "normal",
                "seq": i,
                "file_name": f"{i}.png",
                "original_name": f"{i}.png",
                "object_key": f"images/bench/{i}.png",
                "content_type": "image/png",
                "size_bytes": 1,
                "width": 1,
                "height": 1,
                "checksum": f"{i:064x}",
                "source": "upload",
                "created_at": now,
            }
            for i in range(n + normals)
        ]
        for start in range(0, len(rows), 5_000):
            session.execute(sa.insert(ReferenceImage), rows[start : start + 5_000])
        session.commit()
        labels = [t.id for t in types]
    engine.dispose()
    return labels


def _instance(
    root: Path,
    uri: str,
    backend: str,
    prefix: str,
    vectors: np.ndarray,
    product_ids: np.ndarray,
    normals: int,
) -> tuple[Settings, VectorGallery]:
    """A migrated instance with the catalog rows and a current search version of `backend` galleries."""
    settings = _settings(root, uri, backend, prefix)
    run_migrations(settings)
    n = len(vectors)
    types = _catalog(settings, n, normals, product_ids)
    config = MilvusConfig(uri=uri, prefix=prefix)
    store = VectorBackend("milvus", config) if backend == "milvus" else VectorBackend()
    galleries: dict[str, VectorGallery] = {}
    for kind, first, count in (("defect", 0, n), ("normal", n, normals)):
        gallery = store.empty(kind, EMBEDDER, vectors.shape[1])
        for start in range(first, first + count, 5_000):
            end = min(first + count, start + 5_000)
            ids = list(range(start + 1, end + 1))
            pids = [int(product_ids[i % n]) for i in range(start, end)]
            labels: list[int | None] = (
                [types[(int(product_ids[i]) - 1) * 4 + i % 4] for i in range(start, end)]
                if kind == "defect"
                else [None] * (end - start)
            )
            gallery.add(ids, vectors[[i % n for i in range(start, end)]], pids, labels)
        if isinstance(gallery, MilvusGallery):
            gallery.seal()
        galleries[kind] = gallery
    engine = SearchEngine(embedder=_Named(), embedder_name="bench", galleries=galleries, built_at="bench")
    key = artifact_store.version_key("search_index", "all", "bench")
    directory = artifact_store.local_dir(settings, key)
    engine.save_to(directory)
    published = artifact_store.publish(make_storage(settings), directory, key)
    db = make_engine(settings.database_url)
    with make_session_factory(db)() as session:
        record_current_artifact(
            session,
            kind="search_index",
            product_id=None,
            version="bench",
            path=key,
            checksum=published.checksum,
            meta={"change_id": 0},
        )
        session.commit()
    db.dispose()
    return settings, galleries["defect"]


class _Named:
    """Stands in for the embedder when saving a version (only its id is written; nothing is embedded)."""

    embedder_id = EMBEDDER
    dim = 0


def _loaded_defect(settings: Settings, uri: str) -> VectorGallery:
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        path, checksum = conn.execute(
            sa.text("SELECT path, checksum FROM artifact WHERE is_current = 1")
        ).one()
    engine.dispose()
    directory = artifact_store.fetch(make_storage(settings), settings, path, checksum)
    config = MilvusConfig(uri=uri, prefix=settings.milvus_collection_prefix)
    return VectorBackend("milvus", config).load(directory / "defect")


def _same(a: VectorGallery, b: VectorGallery, queries: np.ndarray, product_ids: np.ndarray) -> bool:
    for i, query in enumerate(queries):
        for product in (None, int(product_ids[i])):
            x, y = a.search(query, 10, product), b.search(query, 10, product)
            if [h.image_id for h in x] != [h.image_id for h in y]:
                return False
            if not np.allclose([h.score for h in x], [h.score for h in y], atol=1e-5):
                return False
    return True


def _timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def run(size: int, dim: int, uri: str, work: Path) -> list[str]:
    """One size: the table rows (markdown) for Milvus and the FAISS reference."""
    rng = np.random.default_rng(size)
    vectors, product_ids = clustered(rng, size, dim, PRODUCTS)
    normals = size // 10
    queries = vectors[rng.choice(size, 20, replace=False)]
    lines = []
    for backend in ("milvus", "faiss"):
        root = work / f"{backend}-{size}"
        source, gallery = _instance(
            root / "src", uri, backend, f"bk_{backend}_{size}", vectors, product_ids, normals
        )
        archive = root / "backup.tar"
        backup_s = _timed(lambda source=source, archive=archive: create_backup(source, archive))
        mb = archive.stat().st_size / 1e6
        cells = [f"{size:,}", backend, f"{backup_s:.1f}", f"{mb:.0f}"]
        for target_backend in ("milvus", "faiss"):
            target = _settings(root / f"to-{target_backend}", uri, target_backend, f"bk_{backend}_{size}_r")
            restore_s = _timed(lambda target=target, archive=archive: restore_backup(target, archive))
            restored = _loaded_defect(target, uri)
            same = _same(gallery, restored, queries, product_ids)
            cells += [f"{restore_s:.1f}", "yes" if same else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    """Run the benchmark and print the markdown section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--milvus-uri", default="")
    args = parser.parse_args()
    started = time.perf_counter()
    rows: list[str] = []
    with milvus_server(args.milvus_uri or None) as uri, tempfile.TemporaryDirectory() as tmp:
        try:
            for size in args.sizes:
                rows += run(size, args.dim, uri, Path(tmp))
        finally:
            client = client_for(MilvusConfig(uri=uri))
            for name in client.list_collections():
                if name.startswith("bk_"):
                    client.drop_collection(name)
    took = time.perf_counter() - started
    load = os.getloadavg()[0]
    print(
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, no GPU,"
        f" 1-minute load average {load:.1f} at the end (shared with other jobs); {took:.0f} s in all."
        f" Vectors {args.dim}-d, N defect + N/10 normal images in {PRODUCTS} products.\n"
    )
    print(
        "| images (defect) | source galleries | backup s | archive MB | restore into Milvus s | same hits |"
        " restore into FAISS s | same hits |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
