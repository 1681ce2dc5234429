"""Where galleries keep their vectors: FAISS in process memory (the default) or a Milvus server.

`VectorBackend` makes new galleries and loads saved ones; a saved gallery says in its ``gallery.json``
which backend wrote it, and is loaded by that backend (a FAISS build keeps working after switching to
Milvus, until the next rebuild writes Milvus collections).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.ml.errors import ArtifactError
from app.ml.gallery import META_FILE, Gallery, IndexType, VectorGallery
from app.ml.milvus_gallery import BACKEND as MILVUS
from app.ml.milvus_gallery import MilvusConfig, MilvusGallery

BackendName = Literal["faiss", "milvus"]


@dataclass(frozen=True)
class VectorBackend:
    """The configured vector store.

    Args:
        name: "faiss" (in-process index, saved as files) or "milvus" (collections on a Milvus server).
        milvus: How to reach Milvus; required for "milvus".
    """

    name: BackendName = "faiss"
    milvus: MilvusConfig | None = None

    def __post_init__(self) -> None:
        if self.name == MILVUS and self.milvus is None:
            raise ValueError("the milvus vector backend needs a MilvusConfig (MILVUS_URI)")

    def empty(self, kind: str, embedder_id: str, dim: int, index_type: IndexType = "flat") -> VectorGallery:
        """A new, empty gallery in this backend."""
        if self.name == MILVUS and self.milvus is not None:
            return MilvusGallery.create(self.milvus, kind, embedder_id, dim, index_type)
        return Gallery.empty(kind, embedder_id, dim, index_type)

    def load(self, directory: Path) -> VectorGallery:
        """Load the gallery saved in `directory` with the backend that saved it.

        Raises:
            ArtifactError: Unreadable or corrupt, or saved in Milvus while no Milvus is configured.
        """
        if _saved_backend(Path(directory)) == MILVUS:
            if self.milvus is None:
                raise ArtifactError(
                    f"the gallery in {directory} is in Milvus: set VECTOR_BACKEND=milvus and MILVUS_URI"
                )
            return MilvusGallery.load(directory, self.milvus)
        return Gallery.load(directory)


FAISS = VectorBackend()


def _saved_backend(directory: Path) -> str:
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "faiss"  # Gallery.load reports the missing or broken file
    backend = meta.get("backend", "faiss") if isinstance(meta, dict) else "faiss"
    return str(backend)
