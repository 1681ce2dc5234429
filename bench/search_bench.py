"""Similar-image search benchmark: upload->search latency, register-vs-rebuild cost, retrieval quality.

Latency = decode JPEG + preprocess + embed one image + gallery search (k=10), measured per embedder at
several gallery sizes. Gallery contents are random unit vectors (search cost depends only on size and
dimension, not on what the vectors mean). CLIP ViT-B-32 uses random weights unless --clip-weights is
given (timing is identical). Registering one image (decode + preprocess + embed + add) is compared
with rebuilding a gallery of --rebuild-size images in the same run.

`evaluate_retrieval` computes top-1 accuracy and recall@5 on any labelled set; the run below applies it
to a small synthetic set (textures with holes / scratches / clean) only to exercise it.

Usage: python bench/search_bench.py [--sizes 1000 10000 100000] [--repeats 30] [--hnsw]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.ml.embedders import ClipEmbedder, EfficientNetEmbedder, ImageEmbedder
from app.ml.gallery import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, Gallery, IndexType, build_gallery
from app.ml.preprocessing import PreprocessingOptions, apply_preprocessing, decode_image

Item = tuple[int, int, int | None, Image.Image]
N_PRODUCTS = 10
OPTIONS = PreprocessingOptions(contrast=True, smooth=True)
MAX_SIDE = 512  # working resolution for decode + preprocessing (set by --max-side)


@dataclass(frozen=True)
class RetrievalQuality:
    """Retrieval quality on a labelled query set (class = (product_id, label))."""

    top1_accuracy: float
    recall_at_5: float
    n_queries: int


def evaluate_retrieval(
    gallery_items: Sequence[Item],
    query_items: Sequence[Item],
    embedder: ImageEmbedder,
    preprocess: Callable[[int, Image.Image], Image.Image] | None = None,
    *,
    filter_by_product: bool = False,
) -> RetrievalQuality:
    """Top-1 accuracy and recall@5 of queries against a gallery built from gallery_items.

    Items are (image_id, product_id, label, image). A query counts for top-1 when its best hit has the
    same (product_id, label) and for recall@5 when any of the top 5 does. With filter_by_product the
    search is restricted to the query's product (as the app does when the worker picked the product).
    """
    prep = preprocess or (lambda _pid, image: image)
    gallery = build_gallery(gallery_items, embedder, prep, batch_size=16)
    if not query_items:
        return RetrievalQuality(0.0, 0.0, 0)
    vectors = embedder.embed([prep(pid, image) for _, pid, _, image in query_items], batch_size=16)
    top1 = recall5 = 0
    for (_, pid, label, _), vector in zip(query_items, vectors, strict=True):
        hits = gallery.search(vector, k=5, product_id=pid if filter_by_product else None)
        classes = [(h.product_id, h.label) for h in hits]
        top1 += bool(classes) and classes[0] == (pid, label)
        recall5 += (pid, label) in classes
    n = len(query_items)
    return RetrievalQuality(top1 / n, recall5 / n, n)


# -- synthetic photos --------------------------------------------------------------------------------


def _texture(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    streaks = rng.normal(0, 18, (h, 1)) + rng.normal(0, 6, (h, w))
    base = np.clip(140 + streaks, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([base, base, base], axis=-1)).filter(ImageFilter.GaussianBlur(0.6))


def _defect(image: Image.Image, kind: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    out = image.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    x, y = int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4))
    if kind == 1:
        r = int(min(w, h) * rng.uniform(0.06, 0.12))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(20, 18, 16))
    elif kind == 2:
        dx, dy = int(w * rng.uniform(0.2, 0.4)), int(h * rng.uniform(-0.3, 0.3))
        draw.line((x - dx, y - dy, x + dx, y + dy), fill=(245, 245, 240), width=max(2, w // 60))
    return out


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _photos(n: int, size: tuple[int, int]) -> list[bytes]:
    return [_jpeg(_defect(_texture(i, size), 1 + i % 2, i)) for i in range(n)]


def _synthetic_quality_set() -> tuple[list[Item], list[Item]]:
    gallery: list[Item] = []
    queries: list[Item] = []
    for i in range(36):
        kind = i % 3  # 0 clean, 1 hole, 2 scratch
        image = _defect(_texture(1000 + i, (320, 240)), kind, 2000 + i)
        (queries if i % 4 == 3 else gallery).append((i, 1, kind, image))
    return gallery, queries


# -- measurements ------------------------------------------------------------------------------------


def _label(embedder: ImageEmbedder) -> str:
    return "clip-ViT-B-32" if embedder.embedder_id.startswith("clip-") else embedder.embedder_id


def _percentiles(samples_ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples_ms, 50)), float(np.percentile(samples_ms, 95))


def _random_gallery(embedder_id: str, dim: int, size: int, index_type: IndexType) -> Gallery:
    rng = np.random.default_rng(size)
    gallery = Gallery.empty("defect", embedder_id, dim, index_type=index_type)
    chunk = 20_000
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        ids = range(start, start + n)
        gallery.add(ids, vectors, [i % N_PRODUCTS for i in ids], [i % 7 for i in ids])
    return gallery


def _query_pipeline(
    photo: bytes, embedder: ImageEmbedder, gallery: Gallery, product: int | None
) -> list[float]:
    t0 = time.perf_counter()
    image = apply_preprocessing(decode_image(photo, MAX_SIDE), OPTIONS, MAX_SIDE)
    t1 = time.perf_counter()
    vector = embedder.embed([image])[0]
    t2 = time.perf_counter()
    gallery.search(vector, k=10, product_id=product)
    t3 = time.perf_counter()
    return [(t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t3 - t0) * 1e3]


def _bench_latency(
    embedder: ImageEmbedder, photos: list[bytes], sizes: list[int], repeats: int, index_type: IndexType
) -> list[list[str]]:
    rows = []
    for size in sizes:
        build_start = time.perf_counter()
        gallery = _random_gallery(embedder.embedder_id, embedder.dim, size, index_type)
        build_s = time.perf_counter() - build_start
        for product in (None, 1):
            for i in range(3):  # warm-up
                _query_pipeline(photos[i % len(photos)], embedder, gallery, product)
            samples = np.array(
                [_query_pipeline(photos[i % len(photos)], embedder, gallery, product) for i in range(repeats)]
            )
            prep50, _ = _percentiles(samples[:, 0].tolist())
            emb50, _ = _percentiles(samples[:, 1].tolist())
            search50, search95 = _percentiles(samples[:, 2].tolist())
            total50, total95 = _percentiles(samples[:, 3].tolist())
            rows.append(
                [
                    _label(embedder),
                    str(embedder.dim),
                    f"hnsw (built in {build_s:.0f} s)" if index_type == "hnsw" else index_type,
                    f"{size:,}",
                    "all" if product is None else f"1 of {N_PRODUCTS}",
                    f"{prep50:.1f}",
                    f"{emb50:.1f}",
                    f"{search50:.2f} / {search95:.2f}",
                    f"**{total50:.1f}** / {total95:.1f}",
                ]
            )
            print("  ", " | ".join(rows[-1]), f"(gallery fill {build_s:.1f}s)", flush=True)
        del gallery
    return rows


def _bench_register_vs_rebuild(embedder: ImageEmbedder, photos: list[bytes], rebuild_size: int) -> list[str]:
    gallery = _random_gallery(embedder.embedder_id, embedder.dim, rebuild_size, "flat")
    register_ms = []
    for i in range(12):
        start = time.perf_counter()
        image = apply_preprocessing(decode_image(photos[i % len(photos)], MAX_SIDE), OPTIONS, MAX_SIDE)
        gallery.add([10_000_000 + i], embedder.embed([image]), [1], [3])
        register_ms.append((time.perf_counter() - start) * 1e3)
    register_ms = register_ms[2:]  # first calls include lazy allocations

    def items() -> Iterator[Item]:
        # Lazy, as the app streams images from storage: only one batch of decoded photos in memory.
        for i in range(rebuild_size):
            yield (i, i % N_PRODUCTS, i % 7, decode_image(photos[i % len(photos)], MAX_SIDE))

    start = time.perf_counter()
    build_gallery(
        items(),
        embedder,
        lambda _pid, image: apply_preprocessing(image, OPTIONS, MAX_SIDE),
        batch_size=32,
        total=rebuild_size,
    )
    rebuild_s = time.perf_counter() - start
    register50 = float(np.median(register_ms))
    return [
        _label(embedder),
        f"{register50:.1f} ms",
        f"{rebuild_s:.1f} s ({rebuild_s / rebuild_size * 1e3:.1f} ms/image)",
        f"{rebuild_s * 1e3 / register50:,.0f}x",
    ]


def _bench_preprocessing(photos: list[bytes], max_side: int, repeats: int) -> list[list[str]]:
    rows = []
    for label, side in (("full resolution", None), (f"max_side={max_side}", max_side)):
        samples = []
        for i in range(repeats):
            start = time.perf_counter()
            apply_preprocessing(decode_image(photos[i % len(photos)], side), OPTIONS, side)
            samples.append((time.perf_counter() - start) * 1e3)
        p50, p95 = _percentiles(samples)
        rows.append([label, f"{p50:.1f}", f"{p95:.1f}"])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _load_clip(weights: Path | None, workdir: Path) -> ClipEmbedder:
    if weights is None:
        import open_clip

        torch.manual_seed(0)
        weights = workdir / "ViT-B-32-random.pt"
        torch.save(open_clip.create_model("ViT-B-32").state_dict(), weights)
    return ClipEmbedder.load("ViT-B-32", weights, "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--embedders", nargs="+", default=["efficientnet-lite0", "clip"])
    parser.add_argument(
        "--clip-weights", type=Path, default=None, help="real ViT-B-32 weights (default: random)"
    )
    parser.add_argument("--rebuild-size", type=int, default=1000)
    parser.add_argument("--hnsw", action="store_true", help="also time an HNSW gallery (see --hnsw-size)")
    parser.add_argument(
        "--hnsw-size", type=int, default=20_000, help="HNSW builds are slow: 20k x 1280-d ~1 min"
    )
    parser.add_argument("--photo-size", type=int, nargs=2, default=[1280, 960], metavar=("W", "H"))
    parser.add_argument("--max-side", type=int, default=512, help="decode/preprocess working size")
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads (request path: 1)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/search.md"))
    args = parser.parse_args()
    global MAX_SIDE
    MAX_SIDE = args.max_side

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    photos = _photos(8, tuple(args.photo_size))
    prep_rows = _bench_preprocessing(photos, args.max_side, args.repeats)
    print(prep_rows, flush=True)
    latency_rows: list[list[str]] = []
    cost_rows: list[list[str]] = []
    quality_rows: list[list[str]] = []
    run_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.embedders:
            print(f"== {name}", flush=True)
            embedder: ImageEmbedder
            if name == "clip":
                embedder = _load_clip(args.clip_weights, Path(tmp))
            else:
                embedder = EfficientNetEmbedder.load("cpu")
            latency_rows += _bench_latency(embedder, photos, args.sizes, args.repeats, "flat")
            if args.hnsw:
                latency_rows += _bench_latency(embedder, photos, [args.hnsw_size], args.repeats, "hnsw")
            cost_rows.append(_bench_register_vs_rebuild(embedder, photos, args.rebuild_size))
            print("  ", cost_rows[-1], flush=True)
            gallery_items, query_items = _synthetic_quality_set()
            quality = evaluate_retrieval(gallery_items, query_items, embedder)
            quality_rows.append(
                [
                    embedder.embedder_id,
                    f"{quality.top1_accuracy:.2f}",
                    f"{quality.recall_at_5:.2f}",
                    str(quality.n_queries),
                ]
            )
            print("  ", quality_rows[-1], flush=True)
    total_min = (time.perf_counter() - run_start) / 60
    load_end = os.getloadavg()[0]

    latency = _table(
        [
            "embedder",
            "dim",
            "index",
            "gallery",
            "product filter",
            "decode+prep p50 ms",
            "embed p50 ms",
            "search p50 / p95 ms",
            "total p50 / p95 ms",
        ],
        latency_rows,
    )
    cost = _table(
        ["embedder", "register 1 image (p50)", f"rebuild {args.rebuild_size:,} images", "rebuild / register"],
        cost_rows,
    )
    quality = _table(["embedder", "top-1 accuracy", "recall@5", "queries"], quality_rows)
    clip_weights = "the given" if args.clip_weights else "random"
    report = f"""# Similar-image search benchmark

Date 2026-11-21, machine "2-core CPU, 24 GB, no GPU", shared with other jobs while measuring (1-minute
load average {load_start:.1f} at start, {load_end:.1f} at end, so single timings are noisy; compare rows of
the same run). torch and faiss limited to {args.threads} thread(s) as on the request path. Command:
`python bench/search_bench.py {" ".join(sys.argv[1:])}` (run took {total_min:.1f} min).

## Upload -> search latency

One {args.photo_size[0]}x{args.photo_size[1]} JPEG per query: decode + preprocessing ({OPTIONS.key()}:
contrast + smoothing, at max_side={args.max_side}) + embed one image + gallery search k=10,
{args.repeats} queries after 3 warm-up queries. Gallery contents are random unit vectors (search cost
depends only on size and dimension); CLIP ViT-B-32 uses {clip_weights} weights (same compute as
trained ones).
"product filter 1 of {N_PRODUCTS}" restricts the search to one product's images (exact IDSelector).
Gallery fill time (adding the random vectors) is printed on the console; HNSW rows, if any, use
M={HNSW_M}, efConstruction={HNSW_EF_CONSTRUCTION}, efSearch>={HNSW_EF_SEARCH}.

{latency}

Decode + preprocessing alone, full resolution vs `max_side` (the embedders resize to 224 px anyway):

{_table(["decode + preprocess", "p50 ms", "p95 ms"], prep_rows)}

## Registering one image vs rebuilding the gallery

Register = decode + preprocess + embed one image + `Gallery.add` into a {args.rebuild_size:,}-image
gallery (median of 10). Rebuild = `build_gallery` over {args.rebuild_size:,} images (decode + preprocess
+ embed in batches of 32). Both measured in the same run.

{cost}

## Retrieval quality (synthetic smoke check only)

`evaluate_retrieval(gallery_items, query_items, embedder)` on 27 gallery / 9 query synthetic textures
(clean / hole / scratch). This only shows the function works; quality on real demo data is measured
separately. Random CLIP weights are expected to be near chance.

{quality}
"""
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
