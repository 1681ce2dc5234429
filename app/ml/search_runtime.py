"""The live similar-image search engine: one embedder plus a defect gallery and a normal gallery.

The defect gallery answers "which known defect does this photo look like" (the search step); the normal
gallery answers "which good part looks most like it" (the anomaly step's reference image). Both are built
by the same embedder, with each product's preprocessing, at one working resolution (`MAX_SIDE`).

On disk, one build is one *generation* directory::

    <root>/current.json                 {"generation": "<token>"}, replaced atomically
    <root>/<token>/search.json          embedder, build time, calibrated thresholds per product
    <root>/<token>/defect/              Gallery.save() output
    <root>/<token>/normal/              Gallery.save() output
    <root>/<token>/identification/product-<id>.npz   region-aware identification (app.ml.identification)

A rebuild writes a new generation beside the old one and then flips `current.json`, so a crash in the
middle leaves the previous build in force. Incremental adds and deletes re-save the galleries of the
current generation in place (each `Gallery.save` is itself atomic). All saves go through one lock: one
writer at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from app.core.fileio import atomic_write_bytes
from app.ml.embedders import ImageEmbedder
from app.ml.errors import ArtifactError
from app.ml.gallery import GalleryHit, VectorGallery
from app.ml.identification import ProductIdentification
from app.ml.milvus_regions import META_KEY as REGIONS_KEY
from app.ml.milvus_regions import MilvusRegionStore, drop_saved_store
from app.ml.preprocessing import PreprocessingOptions, apply_preprocessing
from app.ml.registry import RegistryKey
from app.ml.vector_backend import FAISS, VectorBackend
from app.ml.verdict import Thresholds

if TYPE_CHECKING:
    from app.core.changelog import ChangeCursor

logger = logging.getLogger(__name__)

GalleryKind = Literal["defect", "normal"]
GALLERY_KINDS: tuple[GalleryKind, GalleryKind] = ("defect", "normal")
# One working resolution app-wide: galleries and queries are shrunk to this before preprocessing, so the
# smoothing radius means the same on every camera and preprocessing stays cheap (embedders use 224 px).
MAX_SIDE = 512
CURRENT_FILE = "current.json"
IDENTIFICATION_DIR = "identification"
META_FILE = "search.json"
FORMAT_VERSION = 1

# Gallery saves are serialised process-wide: one writer at a time, whichever engine object saves.
_SAVE_LOCK = threading.Lock()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def preprocess(image: Image.Image, options: PreprocessingOptions) -> Image.Image:
    """The one preprocessing function for gallery images and queries alike (at `MAX_SIDE`)."""
    return apply_preprocessing(image, options, max_side=MAX_SIDE)


@dataclass
class SearchEngine:
    """An embedder with its defect and normal galleries and per-product verdict thresholds.

    Args:
        embedder: The loaded image embedder.
        embedder_name: The model-settings name it was loaded by ("efficientnet-lite0", "clip").
        galleries: "defect" / "normal" -> gallery (FAISS or Milvus); empty when nothing was built yet.
        thresholds: product_id -> thresholds calibrated on that product's defect images at build time.
        built_at: ISO time of the build (None when nothing was built).
        generation: Directory name of the build on disk (None when nothing was built).
        note: Why no gallery is loaded although one exists on disk (e.g. built by another embedder).
        identification: product_id -> its defect images as identification sees them (region descriptors
            and leave-one-out calibration, see app.ml.identification).
        regions: With VECTOR_BACKEND=milvus, the collection identification searches (the arrays in the
            version's npz files stay for the build's leave-one-out and a FAISS-only reader).
    """

    embedder: ImageEmbedder
    embedder_name: str
    galleries: dict[str, VectorGallery] = field(default_factory=dict)
    thresholds: dict[int, Thresholds] = field(default_factory=dict)
    built_at: str | None = None
    generation: str | None = None
    note: str = ""
    identification: dict[int, ProductIdentification] = field(default_factory=dict)
    regions: MilvusRegionStore | None = None
    # Scale-out: the change log position this engine has applied (app.deployments.changes).
    changes: ChangeCursor | None = None

    @property
    def is_built(self) -> bool:
        """True when both galleries are loaded."""
        return all(kind in self.galleries for kind in GALLERY_KINDS)

    def gallery(self, kind: GalleryKind) -> VectorGallery | None:
        """The defect or normal gallery, or None when not built."""
        return self.galleries.get(kind)

    def describe(self) -> str:
        """One line for /readyz and the admin pages."""
        if not self.is_built:
            return f"{self.embedder.embedder_id}: no gallery built" + (f" ({self.note})" if self.note else "")
        defect, normal = self.galleries["defect"], self.galleries["normal"]
        runtime = getattr(self.embedder, "runtime", "torch")
        return (
            f"{self.embedder.embedder_id}: {defect.count} defect / {normal.count} normal images "
            f"(built {self.built_at}; runs on {runtime})"
        )

    def embed(self, images: Sequence[Image.Image], options: Sequence[PreprocessingOptions]) -> np.ndarray:
        """Preprocess each image with its options and embed them (rows L2-normalised)."""
        prepared = [preprocess(img, opt) for img, opt in zip(images, options, strict=True)]
        return self.embedder.embed(prepared)

    def options_for(
        self, kind: GalleryKind, product_id: int, current: PreprocessingOptions
    ) -> PreprocessingOptions:
        """The preprocessing a query or new image of `product_id` needs to match the built gallery.

        The gallery's recorded options win over the current settings: vectors are only comparable when
        made the same way. A changed setting is reported as stale until the next rebuild.
        """
        gallery = self.galleries.get(kind)
        key = gallery.preprocessing_keys.get(int(product_id)) if gallery is not None else None
        return PreprocessingOptions.from_key(key) if key else current

    def search(
        self, kind: GalleryKind, vector: np.ndarray, k: int, product_id: int | None = None
    ) -> list[GalleryHit]:
        """The k nearest images of one gallery ([] when it is not built)."""
        gallery = self.galleries.get(kind)
        if gallery is None:
            return []
        return gallery.search(vector, k, product_id)

    def add(
        self,
        kind: GalleryKind,
        *,
        ids: Sequence[int],
        vectors: np.ndarray,
        product_ids: Sequence[int],
        labels: Sequence[int | None],
        preprocessing_keys: Mapping[int, str],
    ) -> None:
        """Add (or replace) images in one gallery; visible to the next search."""
        gallery = self.galleries.get(kind)
        if gallery is None:
            return
        for product_id, key in preprocessing_keys.items():
            if int(product_id) not in gallery.preprocessing_keys:
                gallery.set_preprocessing_key(int(product_id), key)
        gallery.add(ids, vectors, product_ids, labels)

    def remove(self, ids: Sequence[int]) -> int:
        """Remove images from both galleries (and identification); returns how many gallery entries went."""
        for found in self.identification.values():
            found.remove(ids)
        return sum(g.remove(ids) for g in self.galleries.values())

    def threshold_for(self, product_id: int | None) -> Thresholds | None:
        """Calibrated thresholds of a product, if it had enough images at build time."""
        return self.thresholds.get(int(product_id)) if product_id is not None else None

    # -- persistence --------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """The generation's metadata (search.json)."""
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "embedder_name": self.embedder_name,
            "embedder_id": self.embedder.embedder_id,
            "built_at": self.built_at,
            "max_side": MAX_SIDE,
            "thresholds": {
                str(pid): {"min_score": t.min_score, "min_margin": t.min_margin}
                for pid, t in sorted(self.thresholds.items())
            },
        }
        if self.regions is not None:
            meta[REGIONS_KEY] = self.regions.collection
        return meta

    def save_to(self, directory: Path) -> None:
        """Write this engine's files into a new, empty `directory` (one immutable version)."""
        with _SAVE_LOCK:
            self._write(Path(directory))

    def _write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=False)
        for kind, gallery in self.galleries.items():
            gallery.save(directory / kind)
        for found in self.identification.values():
            found.save(_identification_path(directory, found.product_id))
        atomic_write_bytes(directory / META_FILE, json.dumps(self.meta(), indent=2).encode())

    def save_new_generation(self, root: Path) -> str:
        """Write this engine as a new generation under `root` and make it current; returns its name."""
        token = new_generation_name()
        directory = Path(root) / token
        with _SAVE_LOCK:
            self._write(directory)
            previous = read_current(root)
            atomic_write_bytes(Path(root) / CURRENT_FILE, json.dumps({"generation": token}).encode())
            self.generation = token
            # Keep the generation just replaced (a reader may still be opening it); delete older ones,
            # with what they hold outside their folder (Milvus collections).
            for path in Path(root).iterdir():
                if path.is_dir() and path.name not in {token, previous}:
                    for kind, gallery in self.galleries.items():
                        try:
                            gallery.discard_saved(path / kind)
                        except Exception:  # a leftover collection is not worth failing a finished build
                            logger.exception("could not release the %s gallery of %s", kind, path.name)
                    if self.regions is not None:
                        with contextlib.suppress(OSError):
                            _release_regions(self.regions, path / META_FILE)
                    shutil.rmtree(path, ignore_errors=True)
        return token

    def save_in_place(
        self,
        root: Path,
        kinds: Sequence[GalleryKind] = GALLERY_KINDS,
        identification: Sequence[int] = (),
    ) -> None:
        """Re-save galleries (and these products' identification data) of the current generation."""
        if self.generation is None:
            return
        directory = Path(root) / self.generation
        with _SAVE_LOCK:
            if not directory.is_dir():
                return  # a newer generation replaced this one and removed it; nothing to keep
            for kind in kinds:
                gallery = self.galleries.get(kind)
                if gallery is not None:
                    gallery.save(directory / kind)
            for pid in identification:
                found = self.identification.get(int(pid))
                if found is not None:
                    found.save(_identification_path(directory, found.product_id))

    @classmethod
    def load(
        cls, root: Path, embedder: ImageEmbedder, embedder_name: str, *, backend: VectorBackend = FAISS
    ) -> SearchEngine:
        """The engine for the current generation under `root` (no embedding work).

        A generation built by another embedder is not loaded (its vectors are not comparable): the
        engine comes back without galleries and `note` says why. `backend` reaches the vectors of a
        gallery kept in Milvus.

        Raises:
            ArtifactError: When the current generation is corrupt or unreadable.
        """
        generation = read_current(root)
        if generation is None:
            return cls(embedder=embedder, embedder_name=embedder_name)
        return cls.load_dir(Path(root) / generation, embedder, embedder_name, backend=backend)

    @classmethod
    def load_dir(
        cls, directory: Path, embedder: ImageEmbedder, embedder_name: str, *, backend: VectorBackend = FAISS
    ) -> SearchEngine:
        """The engine saved in one generation `directory` (see `load`); its name is the folder's name.

        Raises:
            ArtifactError: When the generation is corrupt or unreadable.
        """
        engine = cls(embedder=embedder, embedder_name=embedder_name)
        generation = directory.name
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"search index metadata in {directory} is unreadable: {exc}") from exc
        if meta.get("embedder_id") != embedder.embedder_id:
            engine.note = f"built with {meta.get('embedder_id')}, live embedder is {embedder.embedder_id}"
            engine.built_at = meta.get("built_at")
            return engine
        engine.galleries = {str(kind): backend.load(directory / kind) for kind in GALLERY_KINDS}
        engine.built_at = meta.get("built_at")
        engine.generation = generation
        engine.thresholds = {
            int(pid): Thresholds(float(t["min_score"]), float(t["min_margin"]))
            for pid, t in (meta.get("thresholds") or {}).items()
        }
        folder = directory / IDENTIFICATION_DIR
        if folder.is_dir():
            for path in sorted(folder.glob("product-*.npz")):
                found = ProductIdentification.load(path)
                engine.identification[found.product_id] = found
        engine.regions = _attach_regions(backend, meta.get(REGIONS_KEY), generation)
        if engine.regions is not None:
            for found in engine.identification.values():
                found.attach(engine.regions, fill=False)
                found.release_arrays()  # the rows are in Milvus: no copy in this server's memory
        return engine


def _attach_regions(backend: VectorBackend, name: object, generation: str) -> MilvusRegionStore | None:
    """The identification collection a version names, when it is this deployment's and exists.

    Otherwise (FAISS configured, a version restored from another deployment's backup or into a Milvus
    that lost it) identification searches the arrays the version's npz files hold, with the same answers,
    until the next build makes a collection.
    """
    config = backend.milvus
    if not isinstance(name, str) or config is None:
        return None
    if name.startswith(config.prefix + "_"):
        with contextlib.suppress(LookupError):
            return MilvusRegionStore.attach(config, name)
    logger.warning("identification of %s searches its arrays: no collection %s here", generation, name)
    return None


def _release_regions(current: MilvusRegionStore, meta_path: Path) -> None:
    """Drop the identification collection an older generation's search.json names (not the current one)."""
    meta = meta_path.read_bytes()
    if current.collection.encode() not in meta:
        try:
            drop_saved_store(current.config, meta)
        except Exception:  # a leftover collection is not worth failing a finished build
            logger.exception("could not release the identification collection of %s", meta_path.parent.name)


def _identification_path(directory: Path, product_id: int) -> Path:
    folder = Path(directory) / IDENTIFICATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"product-{int(product_id)}.npz"


def read_current(root: Path) -> str | None:
    """The current generation's directory name under `root`, or None."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        value = json.loads((Path(root) / CURRENT_FILE).read_text(encoding="utf-8"))["generation"]
        if isinstance(value, str) and (Path(root) / value).is_dir():
            return value
    return None


def new_generation_name() -> str:
    """A new generation's name: build time and a random suffix (sorts by time)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def new_built_at() -> str:
    """The build time stamp recorded in a new generation."""
    return _now()


SEARCH = RegistryKey[SearchEngine]("search")
