"""Searchable gallery of image embeddings (FAISS), keyed by the database image id.

Design:

* Vectors live in a FAISS ``IndexIDMap2`` whose labels are internal *slots* (a counter), not image ids.
  Re-adding an image gives it a new slot, so an approximate index that cannot delete (HNSW) never
  returns a stale vector under a live id: dead slots are filtered out with an ``IDSelector`` and the
  HNSW graph is rebuilt once more than half its entries are dead. The exact ``flat`` index deletes for real.
* Scores are inner products of L2-normalised vectors, i.e. cosine similarities in [-1, 1].
* Product filtering is exact: the search only visits the product's slots (``IDSelectorBatch``), so a
  product with at least k images always yields k hits; HNSW falls back to an exact scan of the product's
  vectors when its filtered graph walk comes back short.
* One lock serialises mutations and searches, so incremental adds during searches are safe and visible to
  the next search immediately. FAISS uses OpenMP; on the request path the application should call
  ``faiss.omp_set_num_threads(1)`` once at start-up (a single query is not parallelised anyway).

On-disk layout of ``save(directory)``: ``gallery.json`` (metadata + SHA-256 of the two data files) names
``index-<token>.faiss`` (``faiss.serialize_index`` bytes) and ``rows-<token>.npy`` (int64 table: slot,
image_id, product_id, label, has_label). Data files are written first, then ``gallery.json`` is replaced
atomically, so a reader sees either the old or the new gallery, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import faiss
import numpy as np
from PIL import Image

from app.core.fileio import atomic_write_bytes
from app.ml.embedders import ImageEmbedder
from app.ml.errors import ArtifactError, JobCancelled

logger = logging.getLogger(__name__)
# faiss's bundled type stubs lack the search-parameter classes; go through an untyped alias for those.
_faiss: Any = faiss

IndexType = Literal["flat", "hnsw"]
FORMAT_VERSION = 1
META_FILE = "gallery.json"
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
# Rebuild the HNSW graph once this share of its entries are deleted (searches get slower and less exact).
HNSW_MAX_DEAD_FRACTION = 0.5


@dataclass(frozen=True)
class GalleryHit:
    """One search result.

    Args:
        image_id: Database id of the gallery image.
        score: Cosine similarity to the query (higher is more similar).
        product_id: Product of the gallery image.
        label: Defect type id of the gallery image, None when unlabelled.
    """

    image_id: int
    score: float
    product_id: int
    label: int | None


@dataclass(frozen=True)
class _Row:
    image_id: int
    product_id: int
    label: int | None


class VectorGallery(Protocol):
    """What the search engine needs of a gallery: FAISS `Gallery` (default) or `MilvusGallery`."""

    kind: str
    embedder_id: str
    dim: int
    index_type: IndexType
    preprocessing_keys: dict[int, str]
    built_at: str

    def add(
        self,
        ids: Sequence[int],
        vectors: np.ndarray,
        product_ids: Sequence[int],
        labels: Sequence[int | None],
    ) -> None: ...
    def remove(self, ids: Iterable[int]) -> int: ...
    def set_preprocessing_key(self, product_id: int, key: str) -> None: ...
    def discard(self) -> None: ...
    def discard_saved(self, directory: Path) -> None: ...
    @property
    def count(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, image_id: object) -> bool: ...
    def count_by_product(self) -> dict[int, int]: ...
    def search(self, vector: np.ndarray, k: int, product_id: int | None = None) -> list[GalleryHit]: ...
    def search_batch(
        self, vectors: np.ndarray, k: int, product_id: int | None = None
    ) -> list[list[GalleryHit]]: ...
    def rows(self, product_id: int | None = None) -> list[GalleryHit]: ...
    def get_vectors(self, image_ids: Sequence[int]) -> np.ndarray: ...
    def staleness(
        self, embedder_id: str, preprocessing_keys: Mapping[int, str], dim: int | None = None
    ) -> list[str]: ...
    def save(self, directory: Path) -> None: ...


GalleryFactory = Callable[[str, str, int, IndexType], VectorGallery]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _new_index(dim: int, index_type: IndexType) -> Any:
    inner: Any
    if index_type == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif index_type == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise ValueError(f"index_type must be 'flat' or 'hnsw', got {index_type!r}")
    return faiss.IndexIDMap2(inner)


def _normalise_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"expected vectors of dimension {dim}, got shape {np.shape(vectors)}")
    if not np.all(np.isfinite(array)):
        raise ValueError("vectors contain NaN or infinity")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    # Re-normalising makes scores cosine similarities even if a caller passes raw features.
    out: np.ndarray = np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)
    return np.ascontiguousarray(out, dtype=np.float32)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Gallery:
    """FAISS index of image embeddings with per-image product and defect-type metadata.

    Create with `Gallery.empty(...)`, `build_gallery(...)` or `Gallery.load(directory)`.

    Attributes:
        kind: Caller-defined purpose, e.g. "defect" or "normal".
        embedder_id: `ImageEmbedder.embedder_id` the vectors came from.
        dim: Vector length.
        index_type: "flat" (exact) or "hnsw" (approximate, for galleries past ~100k images).
        preprocessing_keys: product_id -> `PreprocessingOptions.key()` used for that product's images;
            set by the caller, saved with the gallery, checked by `staleness`.
        built_at: ISO-8601 UTC time the gallery was created (not changed by incremental adds).
    """

    def __init__(self, kind: str, embedder_id: str, dim: int, index_type: IndexType = "flat") -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        self.kind = kind
        self.embedder_id = embedder_id
        self.dim = dim
        self.index_type: IndexType = index_type
        self.preprocessing_keys: dict[int, str] = {}
        self.built_at = _now()
        self._index: Any = _new_index(dim, index_type)
        self._lock = threading.RLock()
        self._slot_of: dict[int, int] = {}
        self._rows: dict[int, _Row] = {}
        self._slots_by_product: dict[int, set[int]] = {}
        self._dead: set[int] = set()
        self._next_slot = 0
        # Cached selectors per product (None = "all live"), with the objects they reference kept alive.
        self._selectors: dict[int | None, tuple[Any, tuple[Any, ...]]] = {}

    @classmethod
    def empty(cls, kind: str, embedder_id: str, dim: int, index_type: IndexType = "flat") -> Gallery:
        """A gallery with no images.

        Args:
            kind: Caller-defined purpose ("defect", "normal", ...).
            embedder_id: Embedder whose vectors will be added.
            dim: Vector length.
            index_type: "flat" (exact inner product) or "hnsw".

        Returns:
            The empty gallery.
        """
        return cls(kind, embedder_id, dim, index_type)

    # -- mutation -----------------------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[int],
        vectors: np.ndarray,
        product_ids: Sequence[int],
        labels: Sequence[int | None],
    ) -> None:
        """Add images, replacing any that are already present; visible to the next search.

        Args:
            ids: Image ids (unique within the call).
            vectors: (len(ids), dim) embeddings; rows are L2-normalised here.
            product_ids: Product of each image.
            labels: Defect type id of each image, or None.

        Raises:
            ValueError: On mismatched lengths, wrong dimension, non-finite values or duplicate ids.
        """
        image_ids = [int(i) for i in ids]
        if not (len(image_ids) == len(product_ids) == len(labels)):
            raise ValueError("ids, product_ids and labels must have the same length")
        matrix = _normalise_rows(vectors, self.dim) if image_ids else np.zeros((0, self.dim), np.float32)
        if matrix.shape[0] != len(image_ids):
            raise ValueError(f"{len(image_ids)} ids but {matrix.shape[0]} vectors")
        if len(set(image_ids)) != len(image_ids):
            raise ValueError("duplicate image ids in one add() call")
        if not image_ids:
            return
        with self._lock:
            self._remove_locked(image_ids)
            slots = np.arange(self._next_slot, self._next_slot + len(image_ids), dtype=np.int64)
            self._next_slot += len(image_ids)
            self._index.add_with_ids(matrix, slots)
            for slot, image_id, product_id, label in zip(
                slots.tolist(), image_ids, product_ids, labels, strict=True
            ):
                row = _Row(image_id, int(product_id), None if label is None else int(label))
                self._slot_of[image_id] = slot
                self._rows[slot] = row
                self._slots_by_product.setdefault(row.product_id, set()).add(slot)
            self._selectors.clear()

    def remove(self, ids: Iterable[int]) -> int:
        """Remove images by id (unknown ids are ignored); returns how many were removed."""
        with self._lock:
            removed = self._remove_locked([int(i) for i in ids])
            if removed:
                self._selectors.clear()
            return removed

    def _remove_locked(self, image_ids: Sequence[int]) -> int:
        slots = [self._slot_of.pop(i) for i in image_ids if i in self._slot_of]
        if not slots:
            return 0
        for slot in slots:
            row = self._rows.pop(slot)
            product_slots = self._slots_by_product[row.product_id]
            product_slots.discard(slot)
            if not product_slots:
                del self._slots_by_product[row.product_id]
        if self.index_type == "flat":
            self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(slots, dtype=np.int64)))
        else:
            self._dead.update(slots)
            if len(self._dead) > HNSW_MAX_DEAD_FRACTION * self._index.ntotal:
                self._rebuild_locked()
        return len(slots)

    def _rebuild_locked(self) -> None:
        labels, vectors = self._all_vectors_locked()
        live = np.fromiter((s in self._rows for s in labels.tolist()), dtype=bool, count=len(labels))
        index = _new_index(self.dim, self.index_type)
        if live.any():
            index.add_with_ids(np.ascontiguousarray(vectors[live]), labels[live])
        self._index = index
        self._dead.clear()
        self._selectors.clear()
        logger.info("rebuilt %s gallery index with %d live vectors", self.index_type, int(live.sum()))

    def set_preprocessing_key(self, product_id: int, key: str) -> None:
        """Record the preprocessing key used for a product's images (saved, checked by `staleness`)."""
        with self._lock:
            self.preprocessing_keys[int(product_id)] = key

    def discard(self) -> None:
        """Free what this gallery holds outside the process (nothing: a FAISS index is process memory)."""

    def discard_saved(self, directory: Path) -> None:
        """Free what a gallery saved in `directory` holds outside it (nothing: its files are all there)."""

    # -- queries ------------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of images in the gallery."""
        with self._lock:
            return len(self._rows)

    def __len__(self) -> int:
        return self.count

    def __contains__(self, image_id: object) -> bool:
        with self._lock:
            return image_id in self._slot_of

    def count_by_product(self) -> dict[int, int]:
        """Images per product id."""
        with self._lock:
            return {pid: len(slots) for pid, slots in sorted(self._slots_by_product.items())}

    def search(self, vector: np.ndarray, k: int, product_id: int | None = None) -> list[GalleryHit]:
        """The k most similar images, best first.

        Args:
            vector: Query embedding, shape (dim,) or (1, dim); L2-normalised here.
            k: Number of hits wanted.
            product_id: Only search this product's images (exact filter), or None for all.

        Returns:
            Up to k hits (fewer only when the gallery/product has fewer images).
        """
        query = _normalise_rows(vector, self.dim)
        if query.shape[0] != 1:
            raise ValueError("search takes one query vector; use search_batch for several")
        return self.search_batch(query, k, product_id)[0]

    def search_batch(
        self, vectors: np.ndarray, k: int, product_id: int | None = None
    ) -> list[list[GalleryHit]]:
        """`search` for several queries at once (one FAISS call; used for calibration and evaluation).

        Args:
            vectors: (n, dim) query embeddings.
            k: Hits wanted per query.
            product_id: Only search this product's images, or None for all.

        Returns:
            One best-first hit list per query.
        """
        queries = _normalise_rows(vectors, self.dim)
        if k < 1 or queries.shape[0] == 0:
            return [[] for _ in range(queries.shape[0])]
        with self._lock:
            if product_id is None:
                n_candidates = len(self._rows)
            else:
                n_candidates = len(self._slots_by_product.get(int(product_id), ()))
            k_eff = min(k, n_candidates)
            if k_eff == 0:
                return [[] for _ in range(queries.shape[0])]
            selector = self._selector_locked(None if product_id is None else int(product_id))
            params: Any = None
            if self.index_type == "hnsw":
                params = _faiss.SearchParametersHNSW()
                params.efSearch = max(HNSW_EF_SEARCH, 2 * k_eff)
            elif selector is not None:
                params = _faiss.SearchParameters()
            if selector is not None:
                params.sel = selector
            scores, slots = self._index.search(queries, k_eff, params=params)
            results = []
            for row, query in enumerate(queries):
                pairs = [(float(s), int(i)) for s, i in zip(scores[row], slots[row], strict=True) if i >= 0]
                if len(pairs) < k_eff:
                    # Filtered HNSW walks can miss nodes when the filter is very selective: scan exactly.
                    pairs = self._exact_locked(query, k_eff, product_id)
                results.append([self._hit(slot, score) for score, slot in pairs])
            return results

    def _hit(self, slot: int, score: float) -> GalleryHit:
        row = self._rows[slot]
        return GalleryHit(row.image_id, score, row.product_id, row.label)

    def _selector_locked(self, product_id: int | None) -> Any:
        if product_id is None and not self._dead:
            return None
        cached = self._selectors.get(product_id)
        if cached is None:
            if product_id is None:
                # Only HNSW has dead slots; excluding them is cheaper than listing every live slot.
                dead = np.fromiter(self._dead, dtype=np.int64, count=len(self._dead))
                inner = faiss.IDSelectorBatch(dead)
                cached = (faiss.IDSelectorNot(inner), (inner, dead))
            else:
                slots = self._slots_by_product[product_id]
                allowed = np.fromiter(slots, dtype=np.int64, count=len(slots))
                cached = (faiss.IDSelectorBatch(allowed), (allowed,))
            self._selectors[product_id] = cached
        return cached[0]

    def _exact_locked(self, query: np.ndarray, k: int, product_id: int | None) -> list[tuple[float, int]]:
        if product_id is None:
            slots = np.fromiter(self._rows, dtype=np.int64, count=len(self._rows))
        else:
            product_slots = self._slots_by_product.get(product_id, set())
            slots = np.fromiter(product_slots, dtype=np.int64, count=len(product_slots))
        vectors = np.stack([self._index.reconstruct(int(s)) for s in slots.tolist()])
        scores = vectors @ query
        order = np.argsort(-scores, kind="stable")[:k]
        return [(float(scores[i]), int(slots[i])) for i in order]

    def _all_vectors_locked(self) -> tuple[np.ndarray, np.ndarray]:
        """All stored (labels, vectors), dead HNSW entries included, in internal order."""
        labels = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        inner = faiss.downcast_index(self._index.index)
        if labels.size == 0:
            return labels, np.zeros((0, self.dim), dtype=np.float32)
        return labels, np.asarray(inner.reconstruct_n(0, labels.size), dtype=np.float32)

    def rows(self, product_id: int | None = None) -> list[GalleryHit]:
        """Metadata of the stored images (score field 1.0), in id order; optionally one product only."""
        with self._lock:
            slots = self._slots_by_product.get(product_id, set()) if product_id is not None else self._rows
            return sorted((self._hit(slot, 1.0) for slot in slots), key=lambda h: h.image_id)

    def get_vectors(self, image_ids: Sequence[int]) -> np.ndarray:
        """Stored (normalised) vectors of the given images as a float32 (n, dim) array.

        Raises:
            KeyError: For an id that is not in the gallery.
        """
        with self._lock:
            if not image_ids:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self._index.reconstruct(self._slot_of[int(i)]) for i in image_ids]).astype(
                np.float32, copy=False
            )

    # -- staleness ----------------------------------------------------------------------------------

    def staleness(
        self, embedder_id: str, preprocessing_keys: Mapping[int, str], dim: int | None = None
    ) -> list[str]:
        """Why this gallery no longer matches the current settings (empty list = current).

        Args:
            embedder_id: The embedder currently configured.
            preprocessing_keys: product_id -> current `PreprocessingOptions.key()`; products not listed
                are not checked.
            dim: The current embedder's dimension, if known.

        Returns:
            Human-readable reasons, one per mismatch.
        """
        reasons: list[str] = []
        with self._lock:
            if embedder_id != self.embedder_id:
                reasons.append(f"built with embedder {self.embedder_id}, current embedder is {embedder_id}")
            if dim is not None and dim != self.dim:
                reasons.append(f"built with dimension {self.dim}, current embedder gives {dim}")
            for product_id, key in sorted(preprocessing_keys.items()):
                stored = self.preprocessing_keys.get(int(product_id))
                if stored is None:
                    if int(product_id) in self._slots_by_product:
                        reasons.append(f"product {product_id}: no preprocessing recorded, current is {key}")
                elif stored != key:
                    reasons.append(
                        f"product {product_id}: built with preprocessing {stored}, current is {key}"
                    )
        return reasons

    # -- persistence --------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write the gallery atomically into `directory` (created if needed); see module docstring."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            index_bytes = faiss.serialize_index(self._index).tobytes()
            table = np.array(
                [
                    (
                        slot,
                        row.image_id,
                        row.product_id,
                        -1 if row.label is None else row.label,
                        row.label is not None,
                    )
                    for slot, row in sorted(self._rows.items())
                ],
                dtype=np.int64,
            ).reshape(-1, 5)
            meta: dict[str, Any] = {
                "format_version": FORMAT_VERSION,
                "kind": self.kind,
                "embedder_id": self.embedder_id,
                "dim": self.dim,
                "count": len(self._rows),
                "index_type": self.index_type,
                "preprocessing_keys": {str(k): v for k, v in sorted(self.preprocessing_keys.items())},
                "built_at": self.built_at,
                "saved_at": _now(),
                "next_slot": self._next_slot,
            }
        buffer = io.BytesIO()
        np.save(buffer, table, allow_pickle=False)
        rows_bytes = buffer.getvalue()
        token = secrets.token_hex(6)
        index_name, rows_name = f"index-{token}.faiss", f"rows-{token}.npy"
        previous = _referenced_files(directory)
        atomic_write_bytes(directory / index_name, index_bytes)
        atomic_write_bytes(directory / rows_name, rows_bytes)
        meta.update(
            index_file=index_name,
            index_sha256=_sha256(index_bytes),
            rows_file=rows_name,
            rows_sha256=_sha256(rows_bytes),
        )
        atomic_write_bytes(directory / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
        # Keep the generation a concurrent reader may have just opened; delete anything older.
        keep = {index_name, rows_name, META_FILE, *previous}
        for path in directory.iterdir():
            if path.name not in keep and path.name.startswith(("index-", "rows-")):
                with contextlib.suppress(OSError):
                    path.unlink()
        logger.info("saved %s gallery (%d images) to %s", self.kind, meta["count"], directory)

    @classmethod
    def load(cls, directory: Path) -> Gallery:
        """Load a gallery written by `save`, verifying checksums.

        Args:
            directory: The directory passed to `save`.

        Returns:
            The gallery.

        Raises:
            ArtifactError: Missing files, checksum mismatch, or unreadable/inconsistent content.
        """
        directory = Path(directory)
        meta = _read_meta(directory)
        try:
            index_bytes = _read_checked(directory / meta["index_file"], meta["index_sha256"])
            rows_bytes = _read_checked(directory / meta["rows_file"], meta["rows_sha256"])
            gallery = cls(str(meta["kind"]), str(meta["embedder_id"]), int(meta["dim"]), meta["index_type"])
            gallery.built_at = str(meta["built_at"])
            gallery.preprocessing_keys = {int(k): str(v) for k, v in meta["preprocessing_keys"].items()}
            gallery._next_slot = int(meta["next_slot"])
            table = np.load(io.BytesIO(rows_bytes), allow_pickle=False)
            index: Any = faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8).copy())
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, OSError) as exc:
            raise ArtifactError(f"gallery in {directory} is unreadable: {exc}") from exc
        if index.d != gallery.dim or table.ndim != 2 or table.shape[1] != 5:
            raise ArtifactError(f"gallery in {directory} is inconsistent (dimension or row table shape)")
        gallery._index = index
        for slot, image_id, product_id, label, has_label in table.tolist():
            row = _Row(int(image_id), int(product_id), int(label) if has_label else None)
            gallery._rows[int(slot)] = row
            gallery._slot_of[row.image_id] = int(slot)
            gallery._slots_by_product.setdefault(row.product_id, set()).add(int(slot))
        stored = set(faiss.vector_to_array(index.id_map).tolist())
        live = set(gallery._rows)
        if not live <= stored or (gallery.index_type == "flat" and stored != live):
            raise ArtifactError(f"gallery in {directory}: index and row table disagree")
        gallery._dead = stored - live
        if len(gallery._rows) != int(meta["count"]):
            raise ArtifactError(
                f"gallery in {directory}: expected {meta['count']} rows, found {len(gallery._rows)}"
            )
        return gallery


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"no gallery in {directory} ({META_FILE} missing)") from exc
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"gallery metadata {path} is unreadable: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"gallery metadata {path} has an unsupported format")
    if meta.get("index_type") not in ("flat", "hnsw"):
        raise ArtifactError(f"gallery metadata {path} has an unknown index type")
    return meta


def _referenced_files(directory: Path) -> set[str]:
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        return {str(meta["index_file"]), str(meta["rows_file"])}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _read_checked(path: Path, expected_sha256: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"gallery file {path} is missing or unreadable: {exc}") from exc
    if _sha256(data) != expected_sha256:
        raise ArtifactError(f"gallery file {path} is corrupt (checksum mismatch)")
    return data


def build_gallery(
    items: Iterable[tuple[int, int, int | None, Image.Image]],
    embedder: ImageEmbedder,
    preprocess: Callable[[int, Image.Image], Image.Image],
    *,
    kind: str = "defect",
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    index_type: IndexType = "flat",
    total: int | None = None,
    preprocessing_keys: Mapping[int, str] | None = None,
    factory: GalleryFactory | None = None,
) -> VectorGallery:
    """Embed images in batches into a new gallery.

    Args:
        items: (image_id, product_id, label, image) tuples; consumed lazily, one batch at a time.
        embedder: Produces the vectors; its embedder_id/dim are recorded.
        preprocess: (product_id, image) -> preprocessed image (the product's `apply_preprocessing`).
        kind: Gallery kind recorded in the metadata.
        batch_size: Images per embedding batch.
        progress: Called as progress(done, total) after each batch; total is len(items) when items is
            sized, else `total`, else 0 (unknown).
        should_cancel: Polled before each batch; returning True aborts the build.
        index_type: "flat" or "hnsw".
        total: Number of items when `items` is a generator.
        preprocessing_keys: product_id -> preprocessing key to record.
        factory: Makes the empty gallery, (kind, embedder_id, dim, index_type) -> gallery; default
            `Gallery.empty` (FAISS). A failed or cancelled build discards what it made.

    Returns:
        The new gallery (not saved).

    Raises:
        JobCancelled: When should_cancel returned True.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    expected = len(items) if isinstance(items, Sized) else (total or 0)
    if should_cancel is not None and should_cancel():
        raise JobCancelled("gallery build cancelled before it started")
    gallery = (factory or Gallery.empty)(kind, embedder.embedder_id, embedder.dim, index_type)
    gallery.preprocessing_keys = {int(k): v for k, v in (preprocessing_keys or {}).items()}
    done = 0
    batch: list[tuple[int, int, int | None, Image.Image]] = []

    def flush() -> None:
        nonlocal done
        if should_cancel is not None and should_cancel():
            raise JobCancelled(f"gallery build cancelled after {done} images")
        images = [preprocess(product_id, image) for _, product_id, _, image in batch]
        vectors = embedder.embed(images, batch_size=batch_size)
        gallery.add([b[0] for b in batch], vectors, [b[1] for b in batch], [b[2] for b in batch])
        done += len(batch)
        batch.clear()
        if progress is not None:
            progress(done, max(expected, done) if expected else 0)

    try:
        for item in items:
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    except BaseException:
        gallery.discard()
        raise
    logger.info("built %s gallery with %d images (%s)", kind, gallery.count, embedder.embedder_id)
    return gallery
