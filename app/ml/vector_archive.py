"""Gallery vectors kept in Milvus, out of it into a backup archive and back, a page at a time.

A Milvus gallery's saved version holds only ``gallery.json`` naming its collection (`app.ml.milvus_gallery`),
so a backup must carry the vectors themselves. Export reads the collection by image id in pages (``image_id in
[...]`` over the ids the caller wants, sorted, never the whole collection at once) and yields `VectorPage`s;
a page is stored as one ``.npz`` member. Import writes the pages into a new Milvus collection, or, when the
restored instance keeps its galleries in FAISS, into a FAISS `Gallery` saved as files. Either way the stored
vectors are the ones the source searched: nothing is embedded again.
"""

from __future__ import annotations

import io
import json
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.ml.gallery import META_FILE, Gallery, IndexType
from app.ml.milvus_gallery import BACKEND, NO_LABEL, MilvusConfig, MilvusGallery, client_for

# Bytes of vectors per page: well under gRPC's 64 MB message limit, and what one page costs in memory.
PAGE_BYTES = 16 * 1024 * 1024
MAX_PAGE_ROWS = 4096


@dataclass(frozen=True)
class VectorPage:
    """Rows of one gallery: image ids, their product and defect type (`NO_LABEL` for none), vectors."""

    image_ids: np.ndarray
    product_ids: np.ndarray
    labels: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def encode(self) -> bytes:
        """The page as ``.npz`` bytes (no pickles)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            image_id=self.image_ids.astype(np.int64),
            product_id=self.product_ids.astype(np.int64),
            label=self.labels.astype(np.int64),
            vector=self.vectors.astype(np.float32),
        )
        return buffer.getvalue()

    @classmethod
    def decode(cls, data: bytes, dim: int) -> VectorPage:
        """Read `encode`'s bytes, checking the shapes.

        Raises:
            ValueError: Not a page of `dim`-long vectors.
        """
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            page = cls(
                np.asarray(arrays["image_id"], dtype=np.int64),
                np.asarray(arrays["product_id"], dtype=np.int64),
                np.asarray(arrays["label"], dtype=np.int64),
                np.asarray(arrays["vector"], dtype=np.float32),
            )
        n = len(page)
        if page.vectors.shape != (n, dim) or page.product_ids.shape != (n,) or page.labels.shape != (n,):
            raise ValueError(f"vector page of shape {page.vectors.shape}, expected ({n}, {dim})")
        return page


def saved_collection(meta: bytes) -> dict[str, Any] | None:
    """A saved ``gallery.json`` (its bytes) parsed when it names a Milvus collection, else None."""
    try:
        saved = json.loads(meta)
    except ValueError:
        return None
    if not isinstance(saved, dict) or saved.get("backend") != BACKEND:
        return None
    return saved if isinstance(saved.get("collection"), str) else None


def page_rows(dim: int) -> int:
    """Rows per page for vectors of length `dim`."""
    return max(1, min(MAX_PAGE_ROWS, PAGE_BYTES // (4 * max(1, dim))))


def export_pages(
    config: MilvusConfig, collection: str, dim: int, image_ids: Sequence[int]
) -> Iterator[VectorPage]:
    """The stored rows of these images, in id order, one page at a time (ids Milvus lacks are left out).

    Args:
        config: The Milvus server.
        collection: The collection to read.
        dim: Its vector length.
        image_ids: The images wanted (e.g. those of a consistent database snapshot).

    Yields:
        Pages of at most `page_rows(dim)` rows; reads are Strong, so every acknowledged write is seen.
    """
    client = client_for(config)
    wanted = sorted({int(i) for i in image_ids})
    step = page_rows(dim)
    for start in range(0, len(wanted), step):
        chunk = wanted[start : start + step]
        rows = client.query(
            collection,
            filter="image_id in [" + ",".join(map(str, chunk)) + "]",
            output_fields=["image_id", "product_id", "label", "vector"],
            limit=len(chunk),
            consistency_level="Strong",
        )
        if not rows:
            continue
        rows.sort(key=lambda row: int(row["image_id"]))
        yield VectorPage(
            np.asarray([int(r["image_id"]) for r in rows], dtype=np.int64),
            np.asarray([int(r["product_id"]) for r in rows], dtype=np.int64),
            np.asarray([int(r["label"]) for r in rows], dtype=np.int64),
            np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), dim),
        )


def _labels(page: VectorPage) -> list[int | None]:
    return [None if int(v) == NO_LABEL else int(v) for v in page.labels.tolist()]


class GalleryImport:
    """Pages of one archived Milvus gallery written into the restoring instance's vector store.

    Into Milvus, rows are inserted as archived (no id table is kept here: the server that loads the gallery
    reads it from Milvus), so memory stays at one page however large the gallery. Into FAISS, the index is
    in memory by nature.

    Args:
        saved: The source's ``gallery.json`` (kind, embedder, dim, index type, preprocessing keys).
        milvus: The target Milvus, or None to rebuild the gallery as a FAISS one (files).
        collection: Name of the new Milvus collection (ignored for FAISS).
    """

    def __init__(self, saved: dict[str, Any], milvus: MilvusConfig | None, collection: str) -> None:
        self.saved = saved
        self.dim = int(saved["dim"])
        index_type: IndexType = "hnsw" if saved.get("index_type") == "hnsw" else "flat"
        kind, embedder_id = str(saved["kind"]), str(saved["embedder_id"])
        self.milvus: MilvusGallery | None = None
        self.faiss: Gallery | None = None
        if milvus is not None:
            self.milvus = MilvusGallery.create(
                milvus, kind, embedder_id, self.dim, index_type, name=collection
            )
        else:
            self.faiss = Gallery.empty(kind, embedder_id, self.dim, index_type)
            self.faiss.built_at = str(saved.get("built_at") or self.faiss.built_at)
            for product_id, key in (saved.get("preprocessing_keys") or {}).items():
                self.faiss.set_preprocessing_key(int(product_id), str(key))
        self.rows = 0

    @property
    def is_milvus(self) -> bool:
        """True when the rows go into a Milvus collection."""
        return self.milvus is not None

    def add(self, page: VectorPage) -> None:
        """Store one page."""
        if self.milvus is not None:
            # As archived: these are the source's stored (normalised) vectors, bit for bit.
            rows = [
                {"image_id": int(i), "product_id": int(p), "label": int(lab), "vector": v.tolist()}
                for i, p, lab, v in zip(
                    page.image_ids, page.product_ids, page.labels, page.vectors, strict=True
                )
            ]
            client_for(self.milvus.config).insert(self.milvus.collection, rows)
        elif self.faiss is not None:
            self.faiss.add(page.image_ids.tolist(), page.vectors, page.product_ids.tolist(), _labels(page))
        self.rows += len(page)

    def finish(self) -> dict[str, bytes]:
        """Seal the rows; returns the files of the saved gallery folder (name -> bytes)."""
        if self.milvus is not None:
            self.milvus.seal()
            meta = {**self.saved, "collection": self.milvus.collection, "count": self.rows}
            return {META_FILE: json.dumps(meta, indent=2, sort_keys=True).encode()}
        with tempfile.TemporaryDirectory() as tmp:
            if self.faiss is not None:
                self.faiss.save(Path(tmp))
            return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}

    def discard(self) -> None:
        """Drop the collection made (a failed restore)."""
        if self.milvus is not None:
            self.milvus.discard()


def new_collection_name(prefix: str, kind: str) -> str:
    """A fresh collection name in the target's naming (as `MilvusGallery.create` makes them)."""
    return f"{prefix}_{kind}_{secrets.token_hex(6)}"
