"""Manual-understanding benchmark: sections found and mapped, parts right, extractive answers right.

For each manual of the corpus (bench/manual_corpus.py: the real seed manuals as PDF and DOCX, the demo
manuals, generated layouts) it runs what the server runs: the bounded parse process, the structure
parser, the mapping to the product's defect types, chunking, the real hybrid index (Kiwi BM25 + the
packaged multilingual USE) and the extractive generator, going through the same section lookup as the
guidance service. A part is right when one of its ground-truth phrases is in it and no phrase of another
part of the same defect is; a part the manual lacks is right when it is empty (and the answer says so
instead of quoting another part). ``--baseline`` scores the previous pipeline (line chunker + retriever
on defect names) on the same corpus for the side-by-side figures.

    nice -n 10 .venv/bin/python -m bench.manual_bench [--only NAME ...] [--no-answers] [--baseline]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.manuals.document import Limits
from app.manuals.indexing import structure_pieces
from app.manuals.mapping import DefectLabel, map_sections
from app.manuals.parse_worker import ProcessLimits, parse_bounded
from app.manuals.structure import PART_KINDS, parse_structure
from bench.manual_corpus import SEEDS_DIR, CorpusManual, Score, corpus

_KIND_LABELS = {"cause": "원인", "action": "조치", "prevention": "예방"}


def _norm(text: str) -> str:
    return " ".join(text.split())


def _right(text: str, phrases: list[str] | None, others: list[str]) -> bool:
    flat = _norm(text)
    if phrases is None:
        return not flat.strip()
    return any(_norm(p) in flat for p in phrases) and not any(_norm(p) in flat for p in others)


@dataclass
class Understood:
    """A parsed manual: sections mapped to defect codes, and its chunks."""

    by_code: dict[str, dict[str, Any]]
    titles: list[str]
    pieces: list[tuple[int, str, str, int]]


def understand(manual: CorpusManual) -> Understood:
    """Parse (bounded process) and map a corpus manual as the indexing job does."""
    document = parse_bounded(manual.data, Limits(), ProcessLimits())
    structure = parse_structure(document.lines)
    labels = [DefectLabel(i, d.code, d.name, d.description) for i, d in enumerate(manual.defect_types)]
    mapped = map_sections([s.to_json() for s in structure.sections], labels)
    by_code = {
        manual.defect_types[s["defect_type_id"]].code: s for s in mapped if s["defect_type_id"] is not None
    }
    return Understood(by_code, [s.title for s in structure.sections], structure_pieces(structure))


def score_structure(manual: CorpusManual, understood: Understood) -> Score:
    """Sections mapped and parts right (the structure alone)."""
    score = Score(manual.name)
    for code, truth in manual.truth.items():
        score.defects += 1
        section = understood.by_code.get(code)
        if section is None:
            score.errors.append(f"{code}: no section (found {understood.titles})")
            score.parts += len(PART_KINDS)
            continue
        score.mapped += 1
        for kind in PART_KINDS:
            text = "\n".join(p["text"] for p in section["parts"].get(kind, []))
            others = [p for k in PART_KINDS if k != kind for p in (truth.get(k) or [])]
            score.parts += 1
            if _right(text, truth.get(kind), others):
                score.parts_right += 1
            else:
                score.errors.append(f"{code}.{kind}: {text[:80]!r}")
    return score


def score_answers(manual: CorpusManual, understood: Understood, score: Score, engines: Any) -> None:
    """End to end: index the chunks, retrieve as the guidance service does, write the extractive answer."""
    from app.ml.guidance.extractive import ExtractiveGenerator
    from app.ml.guidance.types import GuidanceRequest
    from app.ml.retriever import IndexedChunk, ManualIndex, RetrievalQuery, sections_to_passages

    embedder, tokenizer = engines
    index = ManualIndex(embedder, tokenizer=tokenizer)
    index.add_manual(
        1, [IndexedChunk(f"1-{o}", 1, 1, page, sec, text) for page, sec, text, o in understood.pieces]
    )
    generator = ExtractiveGenerator()
    for spec in manual.defect_types:
        truth = manual.truth.get(spec.code)
        if truth is None:
            continue
        section = understood.by_code.get(spec.code)
        title = str(section["title"]).replace(">", "›") if section else ""
        passages = []
        if title:
            query = RetrievalQuery(
                product_id=1, defect_code="", defect_name=title, defect_description=spec.description
            )
            passages = sections_to_passages(index.retrieve_sections(query, per_section=2))
        result = generator.generate(
            GuidanceRequest(
                product_code="p",
                product_name="P",
                defect_code=spec.code,
                defect_name=spec.name,
                passages=passages,
                manual_notes={k: f"[없음:{k}]" for k in PART_KINDS},
            )
        )
        answer = result.sections.as_dict()
        for kind in PART_KINDS:
            others = [p for k in PART_KINDS if k != kind for p in (truth.get(k) or [])]
            text = answer[kind]
            score.answer_parts += 1
            expected = truth.get(kind)
            ok = f"[없음:{kind}]" in text if expected is None else _right(text, expected, others)
            if ok:
                score.answer_right += 1
            else:
                score.errors.append(f"answer {spec.code}.{kind}: {text[:100]!r}")


def baseline_structure(manual: CorpusManual, engines: Any) -> Score:
    """The previous pipeline (PDF only; DOCX was refused): line chunker + retrieval by defect name."""
    from app.ml.chunking import chunk_pages, section_kind, split_section
    from app.ml.pdf_text import PdfError, parse_pdf
    from app.ml.retriever import IndexedChunk, ManualIndex, RetrievalQuery

    score = Score(manual.name)
    try:
        pages = parse_pdf(manual.data).pages
    except PdfError:
        pages = []
    chunks = chunk_pages(pages) if pages else []
    embedder, tokenizer = engines
    index = ManualIndex(embedder, tokenizer=tokenizer)
    if chunks:
        index.add_manual(1, [IndexedChunk(f"1-{c.ordinal}", 1, 1, c.page, c.section, c.text) for c in chunks])
    for spec in manual.defect_types:
        truth = manual.truth.get(spec.code)
        if truth is None:
            continue
        score.defects += 1
        found: dict[str, str] = dict.fromkeys(PART_KINDS, "")
        if chunks:
            query = RetrievalQuery(1, spec.code, spec.name, spec.description)
            sections = index.retrieve_sections(query, per_section=2)
            if any(h.section_match >= 0.5 for hits in sections.values() for h in hits):
                score.mapped += 1
            for kind, hits in sections.items():
                found[kind] = "\n".join(
                    h.chunk.text
                    for h in hits
                    if section_kind(split_section(h.chunk.section)[1] or "") == kind
                )
        for kind in PART_KINDS:
            others = [p for k in PART_KINDS if k != kind for p in (truth.get(k) or [])]
            score.parts += 1
            if _right(found[kind], truth.get(kind), others):
                score.parts_right += 1
    return score


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a JSON report (and a Markdown table)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=Path, default=SEEDS_DIR)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--no-answers", action="store_true")
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    manuals = corpus(args.seeds, names=args.only)
    engines = None
    if not args.no_answers or args.baseline:
        from app.ml.retriever import KoreanTokenizer
        from app.ml.text_embedder import UseTextEmbedder

        engines = (UseTextEmbedder.load(), KoreanTokenizer())
    rows = []
    for manual in manuals:
        understood = understand(manual)
        score = score_structure(manual, understood)
        if not args.no_answers:
            score_answers(manual, understood, score, engines)
        row = score.as_row()
        if args.baseline:
            base = baseline_structure(manual, engines)
            row["baseline_sections_mapped"] = round(base.ratio(base.mapped, base.defects), 3)
            row["baseline_parts_right"] = round(base.ratio(base.parts_right, base.parts), 3)
        rows.append(row)
        if args.verbose and score.errors:
            print(manual.name, *score.errors, sep="\n  ", file=sys.stderr)
    print(
        "| manual | defects | sections mapped | parts right | answer parts right |"
        + (" baseline mapped | baseline parts |" if args.baseline else "")
    )
    print("|---|---|---|---|---|" + ("---|---|" if args.baseline else ""))
    for r in rows:
        extra = (
            f" {r['baseline_sections_mapped']:.2f} | {r['baseline_parts_right']:.2f} |"
            if args.baseline
            else ""
        )
        answer = "-" if args.no_answers else f"{r['answer_right']:.2f}"
        figures = f"{r['sections_mapped']:.2f} | {r['parts_right']:.2f} | {answer}"
        print(f"| {r['manual']} | {r['defects']} | {figures} |{extra}")
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "manuals": len(rows),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "manual_bench.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
