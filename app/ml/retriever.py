"""Hybrid manual retrieval (Kiwi BM25 + dense cosine, RRF) that keeps to the right defect's sections.

Why structure-aware: manuals repeat the same vocabulary (표면, 금형, 점검 ...) under every defect, so a
plain lexical/dense ranker happily returns the causes of a neighbouring defect. We first decide which
defect heading of the product's manual the query is about (name/code match on the heading, else the
heading whose chunks rank best), then serve cause / action / prevention from under that heading only.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from app.core.fileio import atomic_write_bytes
from app.ml.chunking import SECTION_KINDS, SectionKind, section_kind, split_section
from app.ml.text_embedder import TextEmbedder

if TYPE_CHECKING:
    from app.ml.guidance.types import Passage

logger = logging.getLogger(__name__)

Key = int | str
RetrievalMode = Literal["hybrid", "bm25", "dense"]

RRF_K = 60
INDEX_FILE = "manual_index.json"
FORMAT_VERSION = 1
# Added to the fused score of chunks under the matched defect heading; RRF scores are < 0.05, so a
# strong heading match always ranks first while the fused order is kept inside each group.
_MATCH_BOOST = 1.0
_INFERRED_BOOST = 0.1
_STRONG_MATCH = 0.5
_KIND_QUERY: dict[SectionKind, str] = {
    "cause": "발생 원인 원인 분석 원인",
    "action": "조치 가이드 대응 방안 조치 방법",
    "prevention": "예방 조치 재발 방지 예방 대책",
}
_KIND_TEXT = {
    "cause": re.compile(r"원인"),
    "action": re.compile(r"조치|대응|처리"),
    "prevention": re.compile(r"예방|재발\s*방지"),
}
_GENERAL_TOPIC = re.compile(r"공통|일반|전체|general|common", re.IGNORECASE)
_TOPIC_PREFIX = re.compile(r"^(제\s*\d{1,3}\s*[장편부]\s*|\d{1,2}(?:\.\d{1,2})*[.)]?\s+|[■□▶▷●◆◇◎▣]\s*)")
_PARENS = re.compile(r"[(（\[]([^)）\]]*)[)）\]]")
_NON_WORD = re.compile(r"[^0-9a-z가-힣]+")


@dataclass(frozen=True)
class IndexedChunk:
    """A manual chunk as stored in the index (ids are whatever the caller's database uses)."""

    chunk_id: Key
    manual_id: Key
    product_id: Key
    page: int
    section: str
    text: str


@dataclass(frozen=True)
class RetrievalQuery:
    """What to look up: the product plus the defect verdict (any field may be empty for unknown defects).

    Args:
        product_id: only this product's manuals are searched.
        text: free text (e.g. the worker's note); optional.
        defect_code / defect_name / defect_description: the recognised defect type.
    """

    product_id: Key
    text: str = ""
    defect_code: str = ""
    defect_name: str = ""
    defect_description: str = ""

    def full_text(self) -> str:
        """All query parts joined (code, name, description, free text)."""
        parts = [self.defect_name, self.defect_code.replace("_", " "), self.defect_description, self.text]
        return " ".join(p.strip() for p in parts if p and p.strip())


@dataclass(frozen=True)
class RetrievedChunk:
    """One hit.

    Args:
        chunk: the stored chunk.
        score: final score (fused RRF, plus the heading-match boost when applied).
        bm25_rank / dense_rank: 1-based ranks within the product (None when that signal did not rank it).
        section_match: 1.0 exact defect heading match, 0.5-0.9 partial, 0.3 inferred, 0 none.
        kind: "cause" / "action" / "prevention" from the chunk's subsection heading.
        rerank_rank: 1-based cross-encoder rank when a reranker was used.
    """

    chunk: IndexedChunk
    score: float
    bm25_rank: int | None
    dense_rank: int | None
    section_match: float = 0.0
    kind: SectionKind | None = None
    rerank_rank: int | None = None


class IndexMismatchError(ValueError):
    """The stored index was built with another embedder (or format); rebuild it."""


class KoreanTokenizer:
    """Kiwi morphological tokenizer keeping content morphemes (nouns, verb/adjective stems, roots,
    numbers, foreign words lower-cased)."""

    _KEEP_PREFIX = ("NNG", "NNP", "NR", "VV", "VA", "XR", "SN", "SH")

    def __init__(self, kiwi: Any | None = None) -> None:
        if kiwi is None:
            from kiwipiepy import Kiwi

            kiwi = Kiwi()
        self._kiwi = kiwi
        # Kiwi builds its analyser lazily on the first call: 2-4 s here, holding the GIL, which froze the
        # whole server (the event loop shares the process) when it happened inside a request or a job.
        # Paying it now puts it where models load: at startup.
        self._kiwi.tokenize("불량 대응 매뉴얼")

    def _keep(self, tokens: Iterable[Any]) -> list[str]:
        out: list[str] = []
        for tok in tokens:
            tag: str = tok.tag
            if tag == "SL":
                out.append(str(tok.form).lower())
            elif tag.startswith(self._KEEP_PREFIX):
                out.append(str(tok.form))
        return out

    def tokenize(self, text: str) -> list[str]:
        """Content tokens of one text."""
        return self._keep(self._kiwi.tokenize(text)) if text.strip() else []

    def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
        """Content tokens of many texts (Kiwi batches them)."""
        if not texts:
            return []
        results = self._kiwi.tokenize([t if t.strip() else " " for t in texts])
        return [self._keep(toks) for toks in results]


class BM25Index:
    """Okapi BM25 over pre-tokenised documents (numpy, in memory).

    Args:
        docs: token lists, one per document.
        k1, b: the usual BM25 parameters.
    """

    def __init__(self, docs: Sequence[Sequence[str]], *, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.n_docs = len(docs)
        lengths = np.array([len(d) for d in docs], dtype=np.float32)
        self._avgdl = float(lengths.mean()) if self.n_docs and lengths.sum() > 0 else 1.0
        postings: dict[str, dict[int, int]] = {}
        for i, doc in enumerate(docs):
            for term in doc:
                row = postings.setdefault(term, {})
                row[i] = row.get(i, 0) + 1
        self._norm = k1 * (1.0 - b + b * lengths / self._avgdl)
        self._postings: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
        for term, row in postings.items():
            ids = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
            tfs = np.fromiter(row.values(), dtype=np.float32, count=len(row))
            df = len(row)
            idf = math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))
            self._postings[term] = (ids, tfs, idf)

    def scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for the query (unique query terms)."""
        out = np.zeros(self.n_docs, dtype=np.float32)
        for term in set(query_tokens):
            hit = self._postings.get(term)
            if hit is None:
                continue
            ids, tfs, idf = hit
            out[ids] += idf * tfs * (self.k1 + 1.0) / (tfs + self._norm[ids])
        return out


class CrossEncoderReranker:
    """Optional local cross-encoder (AutoModelForSequenceClassification) from models_dir/reranker/<name>/."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, device: str = "cpu") -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self.name = name

    @classmethod
    def load(cls, model_dir: Path, *, device: str = "cpu") -> CrossEncoderReranker:
        """Load from a local directory only (``local_files_only=True``).

        Args:
            model_dir: directory with config.json, weights and tokenizer.
            device: "cpu" or "cuda".

        Returns:
            A ready reranker.
        """
        from app.ml.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # transformers imports torchvision
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True)
        model.eval().to(device)
        return cls(model, tokenizer, name=model_dir.name, device=device)

    @classmethod
    def find(cls, models_dir: Path, *, device: str = "cpu") -> CrossEncoderReranker | None:
        """The first reranker under ``models_dir/reranker/`` (or the dir itself), None when absent."""
        root = models_dir / "reranker"
        candidates = [root] + (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
        for path in candidates:
            if (path / "config.json").is_file():
                try:
                    return cls.load(path, device=device)
                except Exception:  # a broken optional model must not break retrieval
                    logger.exception("cannot load reranker from %s", path)
        return None

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Relevance logit for each (query, text) pair."""
        import torch

        if not texts:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            enc = self._tokenizer(
                [query] * len(texts),
                list(texts),
                padding=True,
                truncation=True,
                max_length=512,
                return_tensors="pt",
            ).to(self._device)
            logits = self._model(**enc).logits.float()
            col = logits[:, -1] if logits.shape[-1] > 1 else logits[:, 0]
            return np.asarray(col.cpu().numpy(), dtype=np.float32)


def _norm_text(s: str) -> str:
    return _NON_WORD.sub(" ", s.lower()).strip()


def _aliases(s: str) -> set[str]:
    """Normalised names in a heading/defect label: the whole, the part outside and inside parentheses."""
    s = _TOPIC_PREFIX.sub("", s.strip())
    inner = [m.group(1) for m in _PARENS.finditer(s)]
    outer = _PARENS.sub(" ", s)
    out = {_norm_text(x) for x in [s, outer, *inner]}
    return {a for a in out if a}


def _match_strength(defect_aliases: set[str], topic: str) -> float:
    """How strongly a topic heading names the defect (0 = not at all)."""
    topic_aliases = _aliases(topic)
    if not topic_aliases or not defect_aliases:
        return 0.0
    if defect_aliases & topic_aliases:
        return 1.0
    topic_tokens = {t for a in topic_aliases for t in a.split()}
    best = 0.0
    for alias in defect_aliases:
        words = alias.split()
        padded = f" {alias} "
        if any(padded in f" {ta} " for ta in topic_aliases) or (len(words) == 1 and alias in topic_tokens):
            best = max(best, 0.8)
        elif any(f" {ta} " in padded for ta in topic_aliases if len(ta) >= 2):
            best = max(best, 0.6)
        elif len(alias) >= 2 and any(alias in t for t in topic_tokens) and re.search("[가-힣]", alias):
            best = max(best, 0.5)
    return best


def _rank(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """1-based descending ranks; 0 where ``valid`` is False."""
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(1, len(values) + 1)
    if valid is not None:
        ranks[~valid] = 0
    return ranks


@dataclass
class _ProductView:
    """Per-product cached slices (BM25 statistics are per product, matching the product filter)."""

    indices: np.ndarray
    bm25: BM25Index
    topics: list[str] = field(default_factory=list)
    kinds: list[SectionKind | None] = field(default_factory=list)


class ManualIndex:
    """All indexed manual chunks with their tokens and embeddings.

    Build with :meth:`build` (or :meth:`load`), keep it in memory, update with :meth:`add_manual` /
    :meth:`remove_manual`, persist with :meth:`save`. Not thread-safe for concurrent writes.

    Args:
        text_embedder: embeds chunks and queries; its ``embedder_id`` is stored with the index.
        tokenizer: Korean BM25 tokenizer (a fresh Kiwi by default).
        reranker: optional cross-encoder used as a third RRF signal in hybrid mode.
    """

    def __init__(
        self,
        text_embedder: TextEmbedder,
        *,
        tokenizer: KoreanTokenizer | None = None,
        reranker: CrossEncoderReranker | None = None,
    ) -> None:
        self.embedder = text_embedder
        self.tokenizer = tokenizer or KoreanTokenizer()
        self.reranker = reranker
        self.chunks: list[IndexedChunk] = []
        self.tokens: list[list[str]] = []
        self.embeddings = np.zeros((0, text_embedder.dim), dtype=np.float32)
        self._views: dict[str, _ProductView] = {}

    # ----- building -------------------------------------------------------------------------------------
    @staticmethod
    def _doc_text(c: IndexedChunk) -> str:
        return f"{c.section}\n{c.text}" if c.section else c.text

    @classmethod
    def build(
        cls,
        chunks: Sequence[IndexedChunk],
        text_embedder: TextEmbedder,
        *,
        tokenizer: KoreanTokenizer | None = None,
        reranker: CrossEncoderReranker | None = None,
    ) -> ManualIndex:
        """Index ``chunks`` (tokenise + embed).

        Args:
            chunks: chunks of any number of manuals/products.
            text_embedder: the embedder to use.
            tokenizer: optional shared KoreanTokenizer.
            reranker: optional cross-encoder.

        Returns:
            The index.
        """
        index = cls(text_embedder, tokenizer=tokenizer, reranker=reranker)
        index._append(list(chunks))
        return index

    def _append(self, chunks: list[IndexedChunk]) -> None:
        if not chunks:
            return
        docs = [self._doc_text(c) for c in chunks]
        self.tokens.extend(self.tokenizer.tokenize_many(docs))
        emb = self.embedder.embed(docs)
        self.embeddings = np.concatenate([self.embeddings, emb.astype(np.float32)], axis=0)
        self.chunks.extend(chunks)
        self._views.clear()

    def add_manual(self, manual_id: Key, chunks: Sequence[IndexedChunk]) -> None:
        """(Re)index one manual: its previous chunks are replaced."""
        self.remove_manual(manual_id)
        self._append([c for c in chunks if str(c.manual_id) == str(manual_id)])

    def add_embedded(self, manual_id: Key, source: ManualIndex) -> None:
        """(Re)index one manual from the chunks, tokens and embeddings ``source`` holds (nothing is embedded).

        Args:
            manual_id: the manual; its previous chunks here are replaced.
            source: an index built with the same text embedder that holds the manual's chunks.

        Raises:
            IndexMismatchError: ``source`` was built with another text embedder.
        """
        if source.embedder.embedder_id != self.embedder.embedder_id:
            raise IndexMismatchError(
                f"chunks embedded with {source.embedder.embedder_id}, index uses {self.embedder.embedder_id}"
            )
        self.remove_manual(manual_id)
        rows = [i for i, c in enumerate(source.chunks) if str(c.manual_id) == str(manual_id)]
        if not rows:
            return
        self.chunks = [*self.chunks, *(source.chunks[i] for i in rows)]
        self.tokens = [*self.tokens, *(source.tokens[i] for i in rows)]
        picked = source.embeddings[np.asarray(rows, dtype=np.int64)].astype(np.float32)
        self.embeddings = np.concatenate([self.embeddings, picked], axis=0)
        self._views.clear()

    def remove_manual(self, manual_id: Key) -> int:
        """Drop every chunk of ``manual_id``; returns how many were removed."""
        keep = [i for i, c in enumerate(self.chunks) if str(c.manual_id) != str(manual_id)]
        removed = len(self.chunks) - len(keep)
        if removed:
            self.chunks = [self.chunks[i] for i in keep]
            self.tokens = [self.tokens[i] for i in keep]
            self.embeddings = (
                self.embeddings[np.asarray(keep, dtype=np.int64)]
                if keep
                else np.zeros((0, self.embedder.dim), dtype=np.float32)
            )
            self._views.clear()
        return removed

    def copy(self) -> ManualIndex:
        """A copy to update beside this one (arrays are shared: updates replace, never write into them)."""
        twin = ManualIndex(self.embedder, tokenizer=self.tokenizer, reranker=self.reranker)
        twin.chunks = list(self.chunks)
        twin.tokens = list(self.tokens)
        twin.embeddings = self.embeddings
        return twin

    def __len__(self) -> int:
        return len(self.chunks)

    def manual_ids(self) -> set[str]:
        """Ids (as strings) of the indexed manuals."""
        return {str(c.manual_id) for c in self.chunks}

    # ----- persistence ----------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Persist to ``directory`` (JSON + .npy, no pickle); readers never see a half-written index."""
        directory.mkdir(parents=True, exist_ok=True)
        emb_name = f"embeddings-{uuid.uuid4().hex}.npy"
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(self.embeddings, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(directory / emb_name, buffer.getvalue())
        meta = {
            "format": FORMAT_VERSION,
            "embedder_id": self.embedder.embedder_id,
            "dim": int(self.embedder.dim),
            "embeddings_file": emb_name,
            "chunks": [{**asdict(c), "tokens": t} for c, t in zip(self.chunks, self.tokens, strict=True)],
        }
        # The JSON names its embeddings file, so replacing it switches both at once.
        atomic_write_bytes(directory / INDEX_FILE, json.dumps(meta, ensure_ascii=False).encode("utf-8"))
        for old in directory.glob("embeddings-*.npy"):
            if old.name != emb_name:
                old.unlink(missing_ok=True)

    @classmethod
    def load(
        cls,
        directory: Path,
        text_embedder: TextEmbedder,
        *,
        tokenizer: KoreanTokenizer | None = None,
        reranker: CrossEncoderReranker | None = None,
    ) -> ManualIndex:
        """Load an index saved by :meth:`save`.

        Args:
            directory: the save directory.
            text_embedder: must have the same ``embedder_id`` as at build time.
            tokenizer / reranker: as for :meth:`build`.

        Returns:
            The index.

        Raises:
            FileNotFoundError: nothing saved there.
            IndexMismatchError: other embedder, other format, or inconsistent files (rebuild).
        """
        meta = json.loads((directory / INDEX_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise IndexMismatchError(f"index format {meta.get('format')} != {FORMAT_VERSION}")
        if meta.get("embedder_id") != text_embedder.embedder_id:
            raise IndexMismatchError(
                f"index built with {meta.get('embedder_id')!r}, "
                f"current embedder is {text_embedder.embedder_id!r}"
            )
        emb_file = directory / Path(str(meta["embeddings_file"])).name
        emb = np.load(emb_file, allow_pickle=False)
        rows = meta["chunks"]
        if emb.ndim != 2 or emb.shape[0] != len(rows) or emb.shape[1] != text_embedder.dim:
            raise IndexMismatchError(f"embeddings shape {emb.shape} does not match {len(rows)} chunks")
        index = cls(text_embedder, tokenizer=tokenizer, reranker=reranker)
        index.chunks = [
            IndexedChunk(
                r["chunk_id"],
                r["manual_id"],
                r["product_id"],
                int(r["page"]),
                str(r["section"]),
                str(r["text"]),
            )
            for r in rows
        ]
        index.tokens = [[str(t) for t in r["tokens"]] for r in rows]
        index.embeddings = emb.astype(np.float32)
        return index

    # ----- retrieval ------------------------------------------------------------------------------------
    def _view(self, product_id: Key) -> _ProductView | None:
        key = str(product_id)
        view = self._views.get(key)
        if view is None:
            idx = np.array([i for i, c in enumerate(self.chunks) if str(c.product_id) == key], dtype=np.int64)
            if idx.size == 0:
                return None
            split = [split_section(self.chunks[i].section) for i in idx]
            view = _ProductView(
                indices=idx,
                bm25=BM25Index([self.tokens[i] for i in idx]),
                topics=[t for t, _ in split],
                kinds=[section_kind(s) if s else None for _, s in split],
            )
            self._views[key] = view
        return view

    def _fused(
        self, view: _ProductView, text: str, mode: RetrievalMode
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Over the product's chunks: fused RRF score, bm25 rank (0 = unranked), dense rank, and a
        score-normalised sum (each signal scaled to [0, 1]) used to infer the defect heading."""
        n = view.indices.size
        bm25_ranks = np.zeros(n, dtype=np.int64)
        dense_ranks = np.zeros(n, dtype=np.int64)
        fused = np.zeros(n, dtype=np.float64)
        normed = np.zeros(n, dtype=np.float64)
        if mode in ("hybrid", "bm25"):
            s = view.bm25.scores(self.tokenizer.tokenize(text))
            bm25_ranks = _rank(s, s > 0)
            fused += np.where(bm25_ranks > 0, 1.0 / (RRF_K + bm25_ranks), 0.0)
            normed += s / max(float(s.max()), 1e-9)
        if mode in ("hybrid", "dense"):
            q = self.embedder.embed([text], is_query=True)[0]
            sims = self.embeddings[view.indices] @ q
            dense_ranks = _rank(sims)
            fused += 1.0 / (RRF_K + dense_ranks)
            normed += (sims - sims.min()) / max(float(sims.max() - sims.min()), 1e-9)
        return fused, bm25_ranks, dense_ranks, normed

    def _topic_match(
        self, view: _ProductView, query: RetrievalQuery, normed: np.ndarray
    ) -> tuple[dict[str, float], bool]:
        """Match strength per topic heading; second value says whether the match was only inferred."""
        defect_aliases = _aliases(query.defect_name) | _aliases(query.defect_code.replace("_", " "))
        strengths: dict[str, float] = {}
        for topic in set(view.topics):
            if topic:
                strengths[topic] = _match_strength(defect_aliases, topic)
        best = max(strengths.values(), default=0.0)
        if best >= _STRONG_MATCH:
            return {t: s for t, s in strengths.items() if s == best}, False
        if not (query.defect_description or query.text or query.defect_name):
            return {}, False
        # No heading names the defect: infer the heading holding the best-scoring chunk. Raw scores,
        # not RRF: rank fusion flattens the margin that separates the right heading (measured in bench).
        scored: dict[str, float] = {}
        for i, topic in enumerate(view.topics):
            if topic and not _GENERAL_TOPIC.search(topic):
                scored[topic] = max(scored.get(topic, -1.0), float(normed[i]))
        if not scored:
            return {}, False
        top = max(scored, key=lambda t: scored[t])
        return {top: 0.3}, True

    def _hits(
        self,
        query: RetrievalQuery,
        text: str,
        mode: RetrievalMode,
        section_boost: bool,
        match: tuple[dict[str, float], bool] | None = None,
    ) -> tuple[list[RetrievedChunk], tuple[dict[str, float], bool]]:
        """All product chunks scored for ``text``; ``match`` reuses an earlier heading decision."""
        view = self._view(query.product_id)
        if view is None:
            return [], ({}, False)
        fused, bm25_ranks, dense_ranks, normed = self._fused(view, text, mode)
        rerank_ranks = np.zeros(view.indices.size, dtype=np.int64)
        if self.reranker is not None and mode == "hybrid":
            top = np.argsort(-fused, kind="stable")[:20]
            scores = self.reranker.score(text, [self._doc_text(self.chunks[view.indices[i]]) for i in top])
            for r, j in enumerate(np.argsort(-scores, kind="stable"), start=1):
                rerank_ranks[top[j]] = r
                fused[top[j]] += 1.0 / (RRF_K + r)
        matched: dict[str, float] = {}
        inferred = False
        if section_boost:
            matched, inferred = match if match is not None else self._topic_match(view, query, normed)
        hits: list[RetrievedChunk] = []
        for i, gi in enumerate(view.indices):
            strength = matched.get(view.topics[i], 0.0)
            boost = (_INFERRED_BOOST if inferred else _MATCH_BOOST) if strength > 0 else 0.0
            hits.append(
                RetrievedChunk(
                    chunk=self.chunks[gi],
                    score=float(fused[i] + boost),
                    bm25_rank=int(bm25_ranks[i]) or None,
                    dense_rank=int(dense_ranks[i]) or None,
                    section_match=strength,
                    kind=view.kinds[i],
                    rerank_rank=int(rerank_ranks[i]) or None,
                )
            )
        hits.sort(key=lambda h: -h.score)
        return hits, (matched, inferred)

    def retrieve(
        self, query: RetrievalQuery, k: int = 6, *, mode: RetrievalMode = "hybrid", section_boost: bool = True
    ) -> list[RetrievedChunk]:
        """Best ``k`` chunks of the query's product.

        Args:
            query: product + defect (+ free text).
            k: number of chunks.
            mode: "hybrid" (BM25 + dense via RRF), "bm25" or "dense" (for comparisons).
            section_boost: prefer chunks under the defect's heading and guarantee that its cause,
                action and prevention subsections are among the results (when they exist and k >= 3).

        Returns:
            Hits, best first (empty when the product has no indexed manual).
        """
        hits, (matched, _) = self._hits(query, query.full_text(), mode, section_boost)
        if not section_boost or not matched or k < len(SECTION_KINDS):
            return hits[:k]
        picked: list[RetrievedChunk] = []
        for kind in SECTION_KINDS:
            best = next((h for h in hits if h.section_match > 0 and h.kind == kind), None)
            if best is not None:
                picked.append(best)
        seen = {id(h) for h in picked}
        picked += [h for h in hits if id(h) not in seen][: max(0, k - len(picked))]
        return sorted(picked, key=lambda h: -h.score)[:k]

    def retrieve_sections(
        self,
        query: RetrievalQuery,
        per_section: int = 2,
        *,
        mode: RetrievalMode = "hybrid",
        section_boost: bool = True,
    ) -> dict[SectionKind, list[RetrievedChunk]]:
        """Best chunks for 원인 (cause), 조치 (action) and 예방 (prevention) of the query's defect.

        Args:
            query: product + defect.
            per_section: chunks per kind.
            mode: as for :meth:`retrieve`.
            section_boost: when False, plain ranking of each kind's query over all the product's
                chunks (the baseline that mixes defects up).

        Returns:
            {"cause": [...], "action": [...], "prevention": [...]}; a list is empty when the manual has
            nothing for that kind of this defect (we never substitute another defect's section).
        """
        out: dict[SectionKind, list[RetrievedChunk]] = {}
        base = query.full_text()
        # Decide the defect heading once, from the defect query alone, so all three kinds agree.
        _, match = self._hits(query, base, mode, section_boost)
        matched = match[0]
        for kind in SECTION_KINDS:
            hits, _ = self._hits(query, f"{base} {_KIND_QUERY[kind]}", mode, section_boost, match)
            if not section_boost:
                out[kind] = hits[:per_section]
                continue
            if not matched:
                # Nothing identifies a defect (unknown verdict, no text): only defect-independent
                # sections are safe; another defect's causes would mislead.
                only_general = not base
                pool = [h for h in hits if h.kind == kind and (not only_general or _is_general(h))]
                out[kind] = pool[:per_section]
                continue
            pool = [h for h in hits if h.section_match > 0 and h.kind == kind]
            if not pool:  # the defect has no such subsection: its own untyped text mentioning it, else
                # general rules; never its other parts (prevention must not repeat the cause or the action)
                pool = [
                    h
                    for h in hits
                    if h.section_match > 0 and h.kind is None and _KIND_TEXT[kind].search(h.chunk.text)
                ]
            if not pool:
                pool = [h for h in hits if h.kind == kind and _is_general(h)]
            out[kind] = pool[:per_section]
        return out


def _is_general(hit: RetrievedChunk) -> bool:
    """Chunk under no defect heading, or under a common/general one."""
    topic = split_section(hit.chunk.section)[0]
    return not topic or bool(_GENERAL_TOPIC.search(topic))


def to_passages(hits: Iterable[RetrievedChunk], kind: SectionKind | None = None) -> list[Passage]:
    """Convert hits to generator passages (``kind`` overrides the chunk's own kind)."""
    from app.ml.guidance.types import Passage

    return [
        Passage(
            manual_id=h.chunk.manual_id,
            page=h.chunk.page,
            section=h.chunk.section,
            text=h.chunk.text,
            kind=kind or h.kind,
            chunk_id=h.chunk.chunk_id,
            score=h.score,
        )
        for h in hits
    ]


def sections_to_passages(sections: dict[SectionKind, list[RetrievedChunk]]) -> list[Passage]:
    """Flatten :meth:`ManualIndex.retrieve_sections` output into passages tagged with their kind."""
    out: list[Passage] = []
    seen: set[str] = set()
    for kind, hits in sections.items():
        for p in to_passages(hits, kind):
            key = f"{p.chunk_id}:{kind}"
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out
