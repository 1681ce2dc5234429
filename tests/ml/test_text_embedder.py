"""Text embedders: packaged multilingual USE and local Hugging Face encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.ml.text_embedder import (
    TextEmbedder,
    TransformersTextEmbedder,
    UseTextEmbedder,
    available_text_embedders,
    load_text_embedder,
)
from tests.ml._tiny_models import save_tiny_bert


def test_use_embeds_korean_with_meaningful_similarity() -> None:
    emb = UseTextEmbedder.load()
    assert isinstance(emb, TextEmbedder)
    vecs = emb.embed(["표면에 긁힌 자국이 있다", "표면에 스크래치가 생겼다", "창고 습도를 관리한다", ""])
    assert vecs.shape == (4, 512)
    assert vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
    assert emb.embed([]).shape == (0, 512)


def test_local_encoder_is_listed_and_loaded_offline(tmp_path: Path) -> None:
    names = {i.name: i for i in available_text_embedders(tmp_path)}
    assert names["use"].is_available
    assert not names["bge-m3"].is_available
    save_tiny_bert(tmp_path / "text" / "multilingual-e5-small", ["표면", "긁힘", "점검", "query", "passage"])
    info = {i.name: i for i in available_text_embedders(tmp_path)}["multilingual-e5-small"]
    assert info.is_available
    emb = load_text_embedder("multilingual-e5-small", tmp_path)
    assert isinstance(emb, TransformersTextEmbedder)
    assert emb.embedder_id == "hf:multilingual-e5-small"
    q = emb.embed(["표면 긁힘"], is_query=True)
    p = emb.embed(["표면 긁힘"])
    assert q.shape == p.shape == (1, emb.dim)
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(q, p)  # e5 uses different "query: " / "passage: " prefixes
