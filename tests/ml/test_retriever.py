"""Hybrid manual retrieval: every defect type gets ITS OWN cause / action / prevention sections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.ml.chunking import chunk_pages
from app.ml.manual_samples import SAMPLE_DEFECTS, ManualStyle, SampleDefect, build_sample_manual
from app.ml.pdf_text import parse_pdf
from app.ml.retriever import (
    BM25Index,
    CrossEncoderReranker,
    IndexedChunk,
    IndexMismatchError,
    KoreanTokenizer,
    ManualIndex,
    RetrievalQuery,
    sections_to_passages,
)
from app.ml.text_embedder import UseTextEmbedder
from tests.ml._tiny_models import save_tiny_bert

STYLES: tuple[ManualStyle, ...] = ("numbered", "bullets", "chapters")


def manual_chunks(product_id: int, style: ManualStyle, manual_id: int | None = None) -> list[IndexedChunk]:
    mid = manual_id if manual_id is not None else 100 + product_id
    pages = parse_pdf(build_sample_manual(f"제품{product_id}", style)).pages
    return [
        IndexedChunk(f"{mid}-{c.ordinal}", mid, product_id, c.page, c.section, c.text)
        for c in chunk_pages(pages)
    ]


@pytest.fixture(scope="module")
def tokenizer() -> KoreanTokenizer:
    return KoreanTokenizer()


@pytest.fixture(scope="module")
def embedder() -> UseTextEmbedder:
    return UseTextEmbedder.load()


@pytest.fixture(scope="module")
def index(embedder: UseTextEmbedder, tokenizer: KoreanTokenizer) -> ManualIndex:
    chunks = [c for pid, style in enumerate(STYLES) for c in manual_chunks(pid, style)]
    return ManualIndex.build(chunks, embedder, tokenizer=tokenizer)


def query(pid: int, d: SampleDefect) -> RetrievalQuery:
    return RetrievalQuery(
        product_id=pid, defect_code=d.code, defect_name=d.name, defect_description=d.description
    )


def test_tokenizer_keeps_content_morphemes_and_english(tokenizer: KoreanTokenizer) -> None:
    toks = tokenizer.tokenize("표면 긁힘(Scratch) 불량은 가이드 레일 마모로 발생한다. 깊이 0.05mm")
    assert {"표면", "scratch", "가이드", "레일", "마모", "0.05", "mm"} <= set(toks)
    assert "은" not in toks
    assert "로" not in toks
    assert tokenizer.tokenize("긁힘") == tokenizer.tokenize("긁힘 ")  # stable stems


def test_bm25_ranks_the_document_with_the_rare_term_first() -> None:
    bm = BM25Index([["레일", "마모", "점검"], ["금형", "점검"], ["점검", "점검", "기록"]])
    scores = bm.scores(["레일", "점검"])
    assert int(np.argmax(scores)) == 0
    assert bm.scores(["없는단어"]).sum() == 0


@pytest.mark.parametrize(("pid", "style"), list(enumerate(STYLES)))
def test_every_defect_gets_its_own_cause_action_and_prevention(
    index: ManualIndex, pid: int, style: ManualStyle
) -> None:
    for d in SAMPLE_DEFECTS:
        sections = index.retrieve_sections(query(pid, d), per_section=2)
        expected = {"cause": d.causes[0], "action": d.actions[0], "prevention": d.preventions[0]}
        for kind, sentence in expected.items():
            hits = sections[kind]  # type: ignore[index]
            assert hits, (style, d.name, kind)
            assert all(d.name in h.chunk.section and h.kind == kind for h in hits), (style, d.name, kind)
            assert any(sentence[:15] in h.chunk.text for h in hits)
            assert all(h.chunk.product_id == pid for h in hits)


def test_retrieve_top_k_contains_all_three_sections_of_the_right_defect(index: ManualIndex) -> None:
    for d in SAMPLE_DEFECTS:
        hits = index.retrieve(query(0, d), k=5)
        assert len(hits) == 5
        right = {h.kind for h in hits if d.name in h.chunk.section}
        assert right >= {"cause", "action", "prevention"}, d.name
        assert hits[0].bm25_rank is not None or hits[0].dense_rank is not None


def test_defect_named_differently_from_the_manual_heading_is_inferred(index: ManualIndex) -> None:
    """A product may register '크랙' for what the manual calls '균열 (Crack)'."""
    aliases = {"scratch": "스크래치", "crack": "크랙", "bubble": "블리스터", "foreign": "혼입물"}
    for i, d in enumerate(d for d in SAMPLE_DEFECTS if d.code in aliases):
        q = RetrievalQuery(
            0, defect_code=f"D{i:02d}", defect_name=aliases[d.code], defect_description=d.description
        )
        sections = index.retrieve_sections(q, per_section=1)
        for kind, hits in sections.items():
            assert hits, (d.name, kind)
            assert d.name in hits[0].chunk.section, (d.name, kind)
            assert hits[0].section_match < 0.5  # flagged as an inference, not a heading match


def test_results_are_limited_to_the_product(index: ManualIndex) -> None:
    hits = index.retrieve(RetrievalQuery(product_id=2, text="금형 마모 점검"), k=20)
    assert hits
    assert all(h.chunk.product_id == 2 for h in hits)
    assert index.retrieve(RetrievalQuery(product_id=99, defect_name="긁힘"), k=5) == []
    assert index.retrieve_sections(RetrievalQuery(product_id=99, defect_name="긁힘")) == {
        "cause": [],
        "action": [],
        "prevention": [],
    }


def test_passages_carry_kind_page_and_manual(index: ManualIndex) -> None:
    passages = sections_to_passages(index.retrieve_sections(query(0, SAMPLE_DEFECTS[3]), per_section=1))
    assert [p.kind for p in passages] == ["cause", "action", "prevention"]
    assert all(p.manual_id == 100 and p.page >= 1 and "균열" in p.section for p in passages)


def test_save_load_roundtrip_without_pickle(
    index: ManualIndex, embedder: UseTextEmbedder, tokenizer: KoreanTokenizer, tmp_path: Path
) -> None:
    index.save(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[0].startswith("embeddings-")
    assert files[0].endswith(".npy")
    assert files[1] == "manual_index.json"
    meta = json.loads((tmp_path / "manual_index.json").read_text(encoding="utf-8"))
    assert meta["embedder_id"] == embedder.embedder_id
    loaded = ManualIndex.load(tmp_path, embedder, tokenizer=tokenizer)
    q = query(1, SAMPLE_DEFECTS[4])
    assert [h.chunk for h in loaded.retrieve(q, k=4)] == [h.chunk for h in index.retrieve(q, k=4)]
    index.save(tmp_path)  # a second save replaces, and leaves a single embeddings file
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 1


def test_load_refuses_an_index_built_with_another_embedder(
    index: ManualIndex, tmp_path: Path, tokenizer: KoreanTokenizer
) -> None:
    class OtherEmbedder:
        """Stand-in for a different model: only the id differs, which is what load() checks."""

        embedder_id = "other-model"
        dim = 512

        def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
            return np.zeros((len(texts), 512), dtype=np.float32)

    index.save(tmp_path)
    with pytest.raises(IndexMismatchError):
        ManualIndex.load(tmp_path, OtherEmbedder(), tokenizer=tokenizer)


def test_add_and_remove_manual_incrementally(embedder: UseTextEmbedder, tokenizer: KoreanTokenizer) -> None:
    idx = ManualIndex.build(manual_chunks(5, "numbered", manual_id=1), embedder, tokenizer=tokenizer)
    n_first = len(idx)
    idx.add_manual(2, manual_chunks(6, "bullets", manual_id=2))
    assert idx.manual_ids() == {"1", "2"}
    assert idx.retrieve_sections(query(6, SAMPLE_DEFECTS[1]))["cause"][0].chunk.manual_id == 2
    idx.add_manual(2, manual_chunks(6, "bullets", manual_id=2))  # re-upload replaces, not duplicates
    assert len(idx) == n_first + len(manual_chunks(6, "bullets", manual_id=2))
    assert idx.remove_manual(1) == n_first
    assert idx.retrieve(query(5, SAMPLE_DEFECTS[0])) == []
    assert len(idx.embeddings) == len(idx.chunks)


def test_optional_reranker_from_models_dir(
    embedder: UseTextEmbedder, tokenizer: KoreanTokenizer, tmp_path: Path
) -> None:
    assert CrossEncoderReranker.find(tmp_path) is None
    words = sorted({w for d in SAMPLE_DEFECTS for w in " ".join(d.causes).split()})
    save_tiny_bert(tmp_path / "reranker" / "tiny-ce", words, classifier=True)
    reranker = CrossEncoderReranker.find(tmp_path)
    assert reranker is not None
    idx = ManualIndex.build(manual_chunks(0, "numbered"), embedder, tokenizer=tokenizer, reranker=reranker)
    hits = idx.retrieve(query(0, SAMPLE_DEFECTS[2]), k=5)
    assert any(h.rerank_rank is not None for h in hits)
    assert {h.kind for h in hits if "오염" in h.chunk.section} >= {"cause", "action", "prevention"}


def test_unknown_defect_without_any_text_gets_no_other_defects_sections(index: ManualIndex) -> None:
    sections = index.retrieve_sections(RetrievalQuery(product_id=0), per_section=3)
    for hits in sections.values():
        assert all(not any(d.name in h.chunk.section for d in SAMPLE_DEFECTS) for h in hits)
