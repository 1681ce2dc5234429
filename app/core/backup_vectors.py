"""The Milvus part of a backup (`app.core.backup`): gallery vectors out of Milvus into the archive and back.

A gallery version built with ``VECTOR_BACKEND=milvus`` stores only ``gallery.json`` naming its collection, so
the archive carries the collection's rows as ``vectors/<collection>/page-NNNNNN.npz`` members: image id,
product, defect type and vector, read by id in pages (`app.ml.vector_archive`). The rows taken are those of
the images in the same database snapshot as the archive's rows (an image registered after the snapshot is
left out, one deleted after it is counted as ``missing`` in the manifest), so the archive is consistent.

Restore writes them into the target's vector store, without embedding anything:

- ``VECTOR_BACKEND=milvus``: into new collections of the target Milvus, under the archived names when they
  carry the target's collection prefix (a Milvus that lost its data), else under new names in the target's
  prefix (another deployment, or a copy beside the source on the same Milvus);
- the FAISS default: into FAISS galleries saved as files in the version.

Where the version's files change (a renamed collection, a FAISS gallery), the version is re-published under
the same key with a new manifest, and its artifact row gets the new manifest checksum.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from app.core import artifact_store
from app.core.config import Settings
from app.core.errors import InvalidInputError
from app.core.storage import ObjectStorage
from app.ml.milvus_gallery import MilvusConfig, client_for
from app.ml.vector_archive import (
    GalleryImport,
    VectorPage,
    export_pages,
    new_collection_name,
    saved_collection,
)

logger = logging.getLogger(__name__)

VECTORS = "vectors"


@dataclass
class Snapshot:
    """What the vector export needs from the database snapshot: images per kind, current stored versions."""

    image_ids: dict[str, set[int]] = field(default_factory=dict)
    versions: list[tuple[str, str]] = field(default_factory=list)

    def observe(self, table: str, row: Mapping[Any, Any]) -> None:
        """Note one dumped row (called for every row of the snapshot)."""
        if table == "reference_image":
            self.image_ids.setdefault(str(row["kind"]), set()).add(int(row["id"]))
        elif table == "artifact" and row.get("is_current"):
            self.versions.append((str(row["path"]), str(row.get("checksum") or "")))


def milvus_config(settings: Settings) -> MilvusConfig | None:
    """The Milvus the settings name (None when MILVUS_URI is empty)."""
    if not settings.milvus_uri:
        return None
    return MilvusConfig(
        uri=settings.milvus_uri,
        token=settings.milvus_token.get_secret_value(),
        prefix=settings.milvus_collection_prefix,
        timeout_s=settings.milvus_timeout_s,
    )


def _milvus_galleries(
    storage: ObjectStorage, versions: list[tuple[str, str]]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(version key, file inside it, saved gallery.json) of every Milvus gallery in the current versions."""
    for path, checksum in versions:
        if not artifact_store.is_stored(path, checksum):
            continue
        try:
            manifest = storage.get(f"{path}/{artifact_store.MANIFEST}")
        except Exception:  # a version whose objects are gone is reported by the server that loads it
            logger.warning("backup: version %s has no manifest in the storage", path)
            continue
        if hashlib.sha256(manifest).hexdigest() != checksum:
            continue
        for name in sorted(json.loads(manifest)["files"]):
            if PurePosixPath(name).name == "gallery.json":
                saved = saved_collection(storage.get(f"{path}/{name}"))
                if saved is not None:
                    yield path, name, saved


def dump_vectors(
    settings: Settings, storage: ObjectStorage, snapshot: Snapshot, add: Callable[[str, bytes], None]
) -> dict[str, dict[str, Any]]:
    """Write the rows of every Milvus gallery of the snapshot's current versions; returns their manifest part.

    Raises:
        InvalidInputError: A version keeps its gallery in Milvus but no MILVUS_URI is set, or the collection
            is gone.
    """
    section: dict[str, dict[str, Any]] = {}
    for version, file, saved in _milvus_galleries(storage, snapshot.versions):
        name = str(saved["collection"])
        config = milvus_config(settings)
        if config is None:
            raise InvalidInputError("errors.backup_milvus_not_configured", collection=name)
        if not client_for(config).has_collection(name):
            raise InvalidInputError("errors.backup_milvus_collection_missing", collection=name)
        wanted = snapshot.image_ids.get(str(saved["kind"]), set())
        rows = pages = 0
        for page in export_pages(config, name, int(saved["dim"]), sorted(wanted)):
            add(f"{VECTORS}/{name}/page-{pages:06d}.npz", page.encode())
            rows += len(page)
            pages += 1
        if rows < len(wanted):
            logger.warning(
                "backup: %d %s images of the snapshot are not in %s", len(wanted) - rows, saved["kind"], name
            )
        section[name] = {
            "version": version,
            "file": file,
            "gallery": saved,
            "rows": rows,
            "pages": pages,
            "missing": len(wanted) - rows,
        }
    return section


@dataclass
class _Plan:
    version: str
    file: str
    gallery: dict[str, Any]
    rows: int
    target: str  # Milvus collection to create ("" for FAISS)
    rewrites_version: bool
    importer: GalleryImport | None = None


class VectorRestore:
    """Archived Milvus galleries restored into the target's vector store (see the module docstring)."""

    def __init__(self, settings: Settings, section: dict[str, dict[str, Any]]) -> None:
        self.milvus = milvus_config(settings) if settings.vector_backend == "milvus" else None
        self.plans: dict[str, _Plan] = {}
        for name, info in section.items():
            gallery = dict(info["gallery"])
            if self.milvus is None:
                target, rewrites = "", True
            elif name.startswith(self.milvus.prefix + "_"):
                target, rewrites = name, False
            else:
                target, rewrites = new_collection_name(self.milvus.prefix, str(gallery["kind"])), True
            self.plans[name] = _Plan(
                str(info["version"]), str(info["file"]), gallery, int(info["rows"]), target, rewrites
            )
        changed = {p.version for p in self.plans.values() if p.rewrites_version}
        self._changed_versions = changed
        self._replaced = {f"{p.version}/{p.file}" for p in self.plans.values() if p.rewrites_version}
        self._manifests: dict[str, bytes] = {}

    def require_empty(self) -> None:
        """Refuse a target Milvus that already holds a collection this restore would create."""
        if self.milvus is None:
            return
        client = client_for(self.milvus)
        for plan in self.plans.values():
            if plan.target and client.has_collection(plan.target):
                raise InvalidInputError("errors.backup_target_not_empty", what=f"Milvus {plan.target}")

    def start(self) -> None:
        """Create the empty galleries (Milvus collections or FAISS indexes) the pages go into."""
        for plan in self.plans.values():
            plan.importer = GalleryImport(plan.gallery, self.milvus, plan.target)

    def add_page(self, member: str, data: bytes) -> None:
        """Store one ``vectors/<collection>/page-*.npz`` member."""
        collection = PurePosixPath(member).parts[1]
        plan = self.plans.get(collection)
        if plan is None or plan.importer is None:
            raise InvalidInputError("errors.backup_archive_unreadable", reason=f"unexpected member {member}")
        try:
            page = VectorPage.decode(data, plan.importer.dim)
        except (ValueError, KeyError, OSError) as exc:
            raise InvalidInputError("errors.backup_archive_unreadable", reason=member) from exc
        plan.importer.add(page)

    def holds_object(self, key: str, data: bytes) -> bool:
        """True for an object this restore writes itself (a replaced gallery file or its version manifest)."""
        if key in self._replaced:
            return True
        version, _, rest = key.rpartition("/")
        if rest == artifact_store.MANIFEST and version in self._changed_versions:
            self._manifests[version] = data
            return True
        return False

    def skips_file(self, root: str, relative: str) -> bool:
        """True for a local cache copy of a version this restore changes (it is fetched again instead)."""
        return root == "artifacts" and any(relative.startswith(f"cache/{v}/") for v in self._changed_versions)

    def finish(self, storage: ObjectStorage, written: list[str]) -> dict[str, str]:
        """Seal the galleries and re-publish the changed versions; returns version key -> new checksum."""
        files: dict[str, dict[str, bytes]] = {}
        for name, plan in self.plans.items():
            if plan.importer is None:
                continue
            if plan.importer.rows != plan.rows:
                raise InvalidInputError(
                    "errors.backup_archive_unreadable",
                    reason=f"{name}: {plan.importer.rows} of {plan.rows} rows",
                )
            saved = plan.importer.finish()
            if plan.rewrites_version:
                folder = str(PurePosixPath(plan.file).parent)
                files.setdefault(plan.version, {}).update({f"{folder}/{n}": b for n, b in saved.items()})
        checksums: dict[str, str] = {}
        for version, new_files in files.items():
            if version not in self._manifests:
                raise InvalidInputError("errors.backup_archive_unreadable", reason=f"{version}: no manifest")
            manifest = json.loads(self._manifests[version])
            entries: dict[str, Any] = manifest["files"]
            for plan in self.plans.values():
                if plan.version == version:
                    entries.pop(plan.file, None)
            for relative, data in new_files.items():
                storage.put(f"{version}/{relative}", data, "application/octet-stream")
                written.append(f"{version}/{relative}")
                entries[relative] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            body = json.dumps(manifest, sort_keys=True).encode()
            storage.put(f"{version}/{artifact_store.MANIFEST}", body, "application/json")
            written.append(f"{version}/{artifact_store.MANIFEST}")
            checksums[version] = hashlib.sha256(body).hexdigest()
        for version, data in self._manifests.items():
            if version not in checksums:  # nothing of it changed after all: the archived manifest stands
                storage.put(f"{version}/{artifact_store.MANIFEST}", data, "application/json")
                written.append(f"{version}/{artifact_store.MANIFEST}")
        return checksums

    def discard(self) -> None:
        """Drop the collections made so far (a failed restore leaves the target Milvus as it was)."""
        for plan in self.plans.values():
            if plan.importer is not None and plan.importer.is_milvus:
                try:
                    plan.importer.discard()
                except Exception:  # cleanup after a failure must not hide the failure itself
                    logger.warning("could not drop Milvus collection %s", plan.target, exc_info=True)
