"""VECTOR_BACKEND: FAISS by default; Milvus only with a MILVUS_URI."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.deployments.search_index import vector_backend
from app.ml.gallery import Gallery
from tests.conftest import make_settings


def test_faiss_is_the_default_and_milvus_needs_an_uri(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.vector_backend == "faiss"
    with pytest.raises(ValidationError, match="MILVUS_URI"):
        make_settings(tmp_path, vector_backend="milvus")
    milvus = make_settings(
        tmp_path, vector_backend="milvus", milvus_uri="http://milvus:19530", milvus_token="u:p"
    )
    assert milvus.milvus_token.get_secret_value() == "u:p"
    with pytest.raises(ValidationError):
        make_settings(tmp_path, milvus_collection_prefix="bad-prefix!")


def test_the_default_backend_builds_faiss_galleries(tmp_path: Path) -> None:
    class Holder:
        settings = make_settings(tmp_path)

    backend = vector_backend(Holder())  # type: ignore[arg-type]
    assert backend.name == "faiss"
    assert isinstance(backend.empty("defect", "e", 8), Gallery)
