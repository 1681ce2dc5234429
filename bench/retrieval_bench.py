"""Manual retrieval benchmark: is THE RIGHT defect's cause / action / prevention in the top 3?

Compares, in one run and on the same index: structure-aware hybrid (ours), and hybrid / BM25-only /
dense-only with and without the defect-heading logic. Also times retrieval and the extractive generator.

Usage (from the repository root):
    python -m bench.retrieval_bench                      # the demo manuals (app/demo/generator.py)
    python -m bench.retrieval_bench --synthetic          # built-in synthetic manuals
    python -m bench.retrieval_bench --data DIR           # DIR/<product>/manual.pdf + defects.json
    python -m bench.retrieval_bench --write-sample DIR   # write the synthetic set in that layout
    python -m bench.retrieval_bench --out docs/benchmarks/retrieval.md

defects.json: [{"code": ..., "name": ..., "description": ..., "heading": optional}] where "heading" is
the defect's name as the manual's heading spells it, when it differs from "name" (used only to judge
correctness; the retriever never sees it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from app.ml.chunking import SECTION_KINDS, chunk_pages, split_section
from app.ml.guidance.extractive import ExtractiveGenerator
from app.ml.guidance.fallback import generate_with_fallback
from app.ml.guidance.local_llm import TransformersGenerator
from app.ml.guidance.openai_http import OpenAICompatibleGenerator
from app.ml.guidance.types import Generator, GuidanceRequest
from app.ml.manual_samples import SAMPLE_DEFECTS, ManualStyle, build_sample_manual
from app.ml.pdf_text import parse_pdf
from app.ml.retriever import (
    IndexedChunk,
    KoreanTokenizer,
    ManualIndex,
    RetrievalMode,
    RetrievalQuery,
    RetrievedChunk,
    sections_to_passages,
)
from app.ml.text_embedder import UseTextEmbedder

# Names a factory might register that differ from the manual's headings (tests heading inference).
ALIASES = {
    "scratch": "스크래치",
    "dent": "눌림",
    "contamination": "얼룩",
    "crack": "크랙",
    "discoloration": "색상 이상",
    "bubble": "블리스터",
    "burr": "거스러미",
    "foreign": "혼입물",
}


@dataclass(frozen=True)
class Defect:
    code: str
    name: str
    description: str
    heading: str  # how the manual names it (ground truth only)


@dataclass(frozen=True)
class Product:
    product_id: str
    pdf: bytes
    defects: list[Defect]


def synthetic_products() -> list[Product]:
    """Three manual styles x eight defects, plus one product registering alias names."""
    styles: list[ManualStyle] = ["numbered", "bullets", "chapters"]
    out = [
        Product(
            f"synthetic-{s}",
            build_sample_manual(f"제품 {s}", s),
            [Defect(d.code, d.name, d.description, d.name) for d in SAMPLE_DEFECTS],
        )
        for s in styles
    ]
    out.append(
        Product(
            "synthetic-aliases",
            build_sample_manual("제품 aliases", "numbered"),
            [
                Defect(f"D{i:02d}", ALIASES[d.code], d.description, d.name)
                for i, d in enumerate(SAMPLE_DEFECTS)
            ],
        )
    )
    return out


def demo_products(root: Path) -> list[Product]:
    """The demo data set's products: each Korean PDF manual with its defect types and their headings."""
    from app.demo.generator import generate_demo_dataset

    manifest = generate_demo_dataset(root, seed=0, size=64, normals_per_product=1, defects_per_type=1)
    return [
        Product(
            p.code,
            (root / p.manual_pdf).read_bytes(),
            [Defect(d.code, d.name, d.description, d.manual_heading) for d in p.defect_types],
        )
        for p in manifest.products
    ]


def load_products(data: Path) -> list[Product]:
    out = []
    for d in sorted(p for p in data.iterdir() if (p / "manual.pdf").is_file()):
        rows = json.loads((d / "defects.json").read_text(encoding="utf-8"))
        defects = [
            Defect(r["code"], r["name"], r.get("description", ""), r.get("heading") or r["name"])
            for r in rows
        ]
        out.append(Product(d.name, (d / "manual.pdf").read_bytes(), defects))
    return out


def write_sample(target: Path) -> None:
    for p in synthetic_products():
        d = target / p.product_id
        d.mkdir(parents=True, exist_ok=True)
        (d / "manual.pdf").write_bytes(p.pdf)
        rows = [
            {"code": x.code, "name": x.name, "description": x.description, "heading": x.heading}
            for x in p.defects
        ]
        (d / "defects.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


def is_right(hit: RetrievedChunk, defect: Defect, kind: str) -> bool:
    topic = split_section(hit.chunk.section)[0]
    return hit.kind == kind and (defect.heading in topic or defect.code.lower() in topic.lower())


def same_defect(hit: RetrievedChunk, defect: Defect) -> bool:
    topic = split_section(hit.chunk.section)[0]
    return defect.heading in topic or defect.code.lower() in topic.lower()


def pct(a: int, b: int) -> str:
    return f"{100.0 * a / max(b, 1):.1f}% ({a}/{b})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="DIR/<product>/manual.pdf + defects.json")
    ap.add_argument("--write-sample", type=Path, help="write the synthetic set in the --data layout and exit")
    ap.add_argument("--out", type=Path, help="write the markdown report here")
    ap.add_argument("--synthetic", action="store_true", help="the built-in synthetic manuals, not the demo")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--skip-generators", action="store_true", help="do not time the generator back-ends")
    args = ap.parse_args()
    if args.write_sample:
        write_sample(args.write_sample)
        print(f"wrote sample data to {args.write_sample}")
        return

    if args.data:
        products, source = load_products(args.data), str(args.data)
    elif args.synthetic:
        products = synthetic_products()
        source = "built-in synthetic manuals (3 heading styles + alias names)"
    else:
        products = demo_products(Path(tempfile.mkdtemp(prefix="retrieval-bench-")))
        source = "the demo data set's Korean PDF manuals (app/demo/generator.py, seed 0)"
    t0 = time.perf_counter()
    embedder = UseTextEmbedder.load()
    tokenizer = KoreanTokenizer()
    chunks: list[IndexedChunk] = []
    pages = 0
    for p in products:
        parsed = parse_pdf(p.pdf, max_pages=500, max_bytes=100 * 1024 * 1024)
        pages += parsed.page_count
        chunks += [
            IndexedChunk(f"{p.product_id}-{c.ordinal}", p.product_id, p.product_id, c.page, c.section, c.text)
            for c in chunk_pages(parsed.pages)
        ]
    t_parse = time.perf_counter() - t0
    t1 = time.perf_counter()
    index = ManualIndex.build(chunks, embedder, tokenizer=tokenizer)
    t_index = time.perf_counter() - t1

    configs: list[tuple[str, RetrievalMode, bool]] = [
        ("hybrid + defect headings (ours)", "hybrid", True),
        ("BM25 + defect headings", "bm25", True),
        ("dense + defect headings", "dense", True),
        ("hybrid RRF, no structure (reference)", "hybrid", False),
        ("BM25 only, no structure", "bm25", False),
        ("dense only, no structure", "dense", False),
    ]
    n_types = sum(len(p.defects) for p in products)
    rows = []
    latencies: dict[str, list[float]] = {}
    for label, mode, boost in configs:
        hit3 = all3 = wrong_types = 0
        per_kind = dict.fromkeys(SECTION_KINDS, 0)
        lat: list[float] = []
        for p in products:
            for d in p.defects:
                q = RetrievalQuery(
                    p.product_id, defect_code=d.code, defect_name=d.name, defect_description=d.description
                )
                ts = time.perf_counter()
                sections = index.retrieve_sections(q, per_section=args.k, mode=mode, section_boost=boost)
                lat.append(time.perf_counter() - ts)
                wrong = False
                for kind in SECTION_KINDS:
                    hits = sections[kind]
                    ok = any(is_right(h, d, kind) for h in hits[: args.k])
                    hit3 += ok
                    per_kind[kind] += ok
                    if hits and not same_defect(hits[0], d):
                        wrong = True
                wrong_types += wrong
                top = index.retrieve(q, k=args.k, mode=mode, section_boost=boost)
                all3 += all(any(is_right(h, d, kind) for h in top) for kind in SECTION_KINDS)
        latencies[label] = lat
        rows.append((label, hit3, per_kind, all3, wrong_types))

    # Extractive guidance latency on the hybrid (ours) passages.
    gen = ExtractiveGenerator()
    gen_ms: list[float] = []
    for p in products:
        for d in p.defects:
            q = RetrievalQuery(
                p.product_id, defect_code=d.code, defect_name=d.name, defect_description=d.description
            )
            req = GuidanceRequest(
                product_code=p.product_id,
                product_name=p.product_id,
                defect_code=d.code,
                defect_name=d.name,
                defect_description=d.description,
                similarity=0.9,
                anomaly_score=0.7,
                anomaly_threshold=0.5,
                is_anomaly=True,
                regions=[{"bbox": [0.1, 0.1, 0.3, 0.3]}],
                passages=sections_to_passages(index.retrieve_sections(q)),
            )
            ts = time.perf_counter()
            gen.generate(req)
            gen_ms.append((time.perf_counter() - ts) * 1000)

    n_q = n_types * len(SECTION_KINDS)
    ref = rows[3][1]
    lines = [
        "# Manual retrieval benchmark",
        "",
        f"Date: {time.strftime('%Y-%m-%d')}. Machine: 2-core CPU, 24 GB, no GPU, shared with other jobs "
        f"(load average {os.getloadavg()[0]:.1f} at the end of the run).",
        f"Data: {source}: {len(products)} products, {pages} pages, {len(chunks)} chunks, "
        f"{n_types} defect types, {n_q} (defect, section) queries.",
        "Text embedder: multilingual USE v3 (packaged); BM25 on Kiwi content morphemes; RRF k=60.",
        "Command: `python -m bench.retrieval_bench"
        + (f" --data {args.data}" if args.data else " --synthetic" if args.synthetic else "")
        + "`",
        "",
        f"## Right defect's section in the top {args.k}",
        "",
        "`hit@k`: for each defect type and each of cause/action/prevention, a chunk from THAT defect's",
        "subsection is among the first k chunks returned for that section. `all 3 in retrieve(k)`: one",
        "`retrieve(k)` call returns the defect's cause, action and prevention. `wrong defect`: defect types",
        "for which some section's first chunk sits under another defect's heading (the old system's",
        "failure).",
        "",
        f"| configuration | hit@{args.k} | vs reference | cause | action | prevention | "
        f"all 3 in retrieve({args.k}) | wrong defect (types) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, hit3, per_kind, all3, wrong in rows:
        ratio = f"{hit3 / max(ref, 1):.2f}x"
        lines.append(
            f"| {label} | {pct(hit3, n_q)} | {ratio} | {pct(per_kind['cause'], n_types)} | "
            f"{pct(per_kind['action'], n_types)} | {pct(per_kind['prevention'], n_types)} | "
            f"{pct(all3, n_types)} | {wrong}/{n_types} |"
        )

    def stats_ms(vals: list[float], scale: float = 1000.0) -> str:
        v = sorted(x * scale for x in vals)
        p95 = v[min(len(v) - 1, round(0.95 * (len(v) - 1)))]
        return f"mean {statistics.mean(v):.1f} ms, p95 {p95:.1f} ms, max {v[-1]:.1f} ms"

    lines += [
        "",
        "## Latency",
        "",
        f"- Parse + chunk {len(products)} PDFs: {t_parse:.2f} s; build index (Kiwi + USE embeddings of "
        f"{len(chunks)} chunks): {t_index:.2f} s.",
        f"- `retrieve_sections` (3 section queries), hybrid + headings: {stats_ms(latencies[rows[0][0]])}.",
        f"- `retrieve_sections`, reference (hybrid, no structure): {stats_ms(latencies[rows[3][0]])}.",
        f"- `retrieve_sections`, BM25 + headings: {stats_ms(latencies[rows[1][0]])}.",
        f"- Extractive guidance (`ExtractiveGenerator.generate`, {len(gen_ms)} requests): "
        f"{stats_ms(gen_ms, scale=1.0)}.",
        "",
        "Dense retrieval time is dominated by embedding the query with USE (~5-10 ms per query on this",
        "machine; `retrieve_sections` embeds 4 queries); BM25 and the heading logic are sub-millisecond",
        "at this corpus size.",
        "",
        "## Reading the numbers",
        "",
        "- Without structure, every ranker confuses defects because the sections share vocabulary",
        "  (표면, 금형, 점검, 로트 ...); that is the failure the previous system showed.",
        "- With the defect-heading logic the section comes from under the right heading for every",
        "  defect (with --synthetic also for a product that registers names the manual does not use,",
        "  스크래치 for '긁힘 (Scratch)': the heading is inferred from the best-scoring chunk).",
        "- Caveat: the demo and synthetic manuals were written for this project and are regular.",
        "  Run `--data DIR` on real manuals before trusting the 100%.",
    ]
    if not args.skip_generators:
        lines += ["", *generator_latency(products, index)]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")


class _InstantChatServer(BaseHTTPRequestHandler):
    """OpenAI-compatible test double answering at once (times our code path, not a model)."""

    answer = (
        "## 불량 현황\n- 긁힘 불량 확인.\n## 원인 분석\n- 롤러 이물.\n"
        "## 대응 방안\n- 로트 격리.\n## 예방 조치\n- 롤러 청소.\n"
    )

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        payload = json.dumps({"choices": [{"message": {"content": self.answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def generator_latency(products: list[Product], index: ManualIndex, repeats: int = 10) -> list[str]:
    """Retrieval + generation time per back-end on CPU, for the same demo requests."""
    from tests.ml._tiny_models import save_random_gpt2

    requests: list[GuidanceRequest] = []
    for p in products:
        for d in p.defects:
            q = RetrievalQuery(
                p.product_id, defect_code=d.code, defect_name=d.name, defect_description=d.description
            )
            requests.append(
                GuidanceRequest(
                    product_code=p.product_id,
                    product_name=p.product_id,
                    defect_code=d.code,
                    defect_name=d.name,
                    defect_description=d.description,
                    similarity=0.9,
                    passages=sections_to_passages(index.retrieve_sections(q)),
                )
            )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _InstantChatServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tiny_dir = Path(tempfile.mkdtemp(prefix="tiny-llm-"))
    save_random_gpt2(tiny_dir, ["불량", "원인", "조치", "예방", "##", "긁힘"])
    backends: list[tuple[str, Generator]] = [
        ("extractive", ExtractiveGenerator()),
        (
            "OpenAI-compatible (local test double, instant answers)",
            OpenAICompatibleGenerator(
                f"http://127.0.0.1:{server.server_address[1]}/v1", "double", timeout_s=10
            ),
        ),
        (
            "transformers, tiny random GPT-2 (1 layer, 32-d, 64 new tokens)",
            TransformersGenerator.load(tiny_dir, "cpu", max_new_tokens=64, timeout_s=30),
        ),
    ]
    lines = [
        "## Guidance latency per generator (CPU)",
        "",
        f"{repeats} demo requests per back-end (retrieved passages prepared beforehand), through",
        "`generate_with_fallback` as the API calls it. The double and the tiny model measure our code",
        "path (prompt building, HTTP / tokenisation, parsing, fallback), not a production model.",
        "",
        "| generator | mean | p95 | max | answers used as written |",
        "|---|---|---|---|---|",
    ]
    for label, gen in backends:
        times: list[float] = []
        used = 0
        for req in requests[:repeats]:
            ts = time.perf_counter()
            res = generate_with_fallback(gen, req, timeout_s=30)
            times.append((time.perf_counter() - ts) * 1000)
            used += not res.is_fallback
        v = sorted(times)
        p95 = v[min(len(v) - 1, round(0.95 * (len(v) - 1)))]
        lines.append(
            f"| {label} | {statistics.mean(v):.1f} ms | {p95:.1f} ms | {v[-1]:.1f} ms | {used}/{len(v)} |"
        )
    server.shutdown()
    # What POST /inspections/{id}/guidance does with the default generator, besides database reads.
    end_to_end: list[float] = []
    extractive = ExtractiveGenerator()
    for p in products:
        for d in p.defects:
            ts = time.perf_counter()
            q = RetrievalQuery(
                p.product_id, defect_code=d.code, defect_name=d.name, defect_description=d.description
            )
            passages = sections_to_passages(index.retrieve_sections(q))
            extractive.generate(
                GuidanceRequest(product_code=p.product_id, product_name=p.product_id, passages=passages)
            )
            end_to_end.append((time.perf_counter() - ts) * 1000)
    v = sorted(end_to_end)
    p95 = v[min(len(v) - 1, round(0.95 * (len(v) - 1)))]
    lines.append(
        f"| extractive including retrieval (hybrid + headings), {len(v)} defect types | "
        f"{statistics.mean(v):.1f} ms | {p95:.1f} ms | {v[-1]:.1f} ms | {len(v)}/{len(v)} |"
    )
    lines += [
        "",
        "The tiny random model writes gibberish, so every answer falls back to the extractive one",
        "(marked `is_fallback`); that is the path a broken local model takes in production.",
    ]
    return lines


if __name__ == "__main__":
    main()
