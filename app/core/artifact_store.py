"""Built artifacts in the object storage: immutable versions with checksums, fetched into a local cache.

A version is a folder of files (a search gallery generation, one product's memory bank, one product's manual
index) published under ``artifacts/<kind>/<scope>/<version>/``: every file, then ``manifest.json`` last (its
presence means the version is complete). The manifest lists each file's size and SHA-256; the manifest's own
SHA-256 is the version's checksum, recorded on the ``artifact`` row next to the key prefix. A version is
never rewritten: a change is a new version.

Every process loads a version by fetching it into ``<artifacts>/cache/<key prefix>/`` (download to a temp
folder, verify every checksum, rename into place), so a server needs nothing but the database row and the
storage. The process that built a version writes it straight into its cache folder and publishes from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.core.storage import ObjectStorage
from app.ml.errors import ArtifactError

logger = logging.getLogger(__name__)

PREFIX = "artifacts"
MANIFEST = "manifest.json"
# Written into a cache folder once all its files were verified against this checksum.
VERIFIED = ".verified"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Published:
    """One published version: where it lies in the storage and its manifest checksum."""

    key: str
    checksum: str
    files: int
    size: int


def version_key(kind: str, scope: str, version: str) -> str:
    """The storage key prefix of a version (``artifacts/<kind>/<scope>/<version>``)."""
    return f"{PREFIX}/{kind}/{scope}/{version}"


def cache_root(settings: Settings) -> Path:
    """Where fetched (and locally built) versions live on this machine."""
    return settings.artifacts_path / "cache"


def local_dir(settings: Settings, key: str) -> Path:
    """The cache folder of a version key."""
    return cache_root(settings) / key


def is_stored(path: str, checksum: str) -> bool:
    """True for a row that names a storage version (legacy rows name a local folder and have no checksum)."""
    return bool(checksum) and path.startswith(PREFIX + "/")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.relative_to(directory).as_posix() != MANIFEST
    )


def publish(storage: ObjectStorage, directory: Path, key: str) -> Published:
    """Upload every file of `directory` under `key`, then the manifest; marks the folder verified.

    Raises:
        ArtifactError: The folder is empty.
    """
    entries: dict[str, dict[str, object]] = {}
    total = 0
    for path in _files(directory):
        data = path.read_bytes()
        relative = path.relative_to(directory).as_posix()
        storage.put(f"{key}/{relative}", data, "application/octet-stream")
        entries[relative] = {"size": len(data), "sha256": _sha256(data)}
        total += len(data)
    if not entries:
        raise ArtifactError(f"nothing to publish in {directory}")
    manifest = json.dumps({"format_version": FORMAT_VERSION, "files": entries}, sort_keys=True).encode()
    storage.put(f"{key}/{MANIFEST}", manifest, "application/json")
    checksum = _sha256(manifest)
    (directory / VERIFIED).write_text(checksum)
    return Published(key=key, checksum=checksum, files=len(entries), size=total)


def fetch(storage: ObjectStorage, settings: Settings, key: str, checksum: str) -> Path:
    """The local folder of a version, downloaded and verified unless the cache already holds it.

    Raises:
        ArtifactError: Missing objects or a checksum that does not match (nothing is left in the cache).
    """
    target = local_dir(settings, key)
    marker = target / VERIFIED
    if marker.is_file() and marker.read_text().strip() == checksum:
        return target
    try:
        manifest_bytes = storage.get(f"{key}/{MANIFEST}")
    except Exception as exc:
        raise ArtifactError(f"artifact {key}: manifest unreadable ({type(exc).__name__}: {exc})") from exc
    if _sha256(manifest_bytes) != checksum:
        raise ArtifactError(f"artifact {key}: manifest checksum does not match the database")
    files: dict[str, dict[str, object]] = json.loads(manifest_bytes)["files"]
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
    try:
        for relative, entry in files.items():
            path = staging / relative
            if not path.resolve().is_relative_to(staging.resolve()):
                raise ArtifactError(f"artifact {key}: unsafe file name {relative!r}")
            try:
                data = storage.get(f"{key}/{relative}")
            except Exception as exc:
                raise ArtifactError(f"artifact {key}: {relative} unreadable ({type(exc).__name__})") from exc
            if _sha256(data) != entry["sha256"]:
                raise ArtifactError(f"artifact {key}: checksum of {relative} does not match")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (staging / VERIFIED).write_text(checksum)
        if target.exists():  # a partial or stale copy: replace it
            shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(target)
        except OSError:
            # another thread of this machine fetched the same version meanwhile: theirs is as good
            if not (marker.is_file() and marker.read_text().strip() == checksum):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("fetched artifact %s (%d files)", key, len(files))
    return target


def prune(storage: ObjectStorage, settings: Settings, kind: str, scope: str, keep: set[str]) -> int:
    """Delete the versions of (kind, scope) not in `keep` (version names) from storage and cache.

    Called by the writer after a new version is current; `keep` holds it and the one it replaced (a
    server may still be fetching that). Version names sort by build time: only versions older than every
    kept one go, so a newer version another process is publishing right now is never touched. Returns the
    number of objects deleted.
    """
    prefix = f"{PREFIX}/{kind}/{scope}/"
    old = [key for key in storage.list(prefix) if _is_older(key[len(prefix) :].split("/", 1)[0], keep)]
    deleted = _delete(storage, old)
    prune_cache(settings, kind, scope, keep)
    return deleted


def discard(storage: ObjectStorage, key: str) -> int:
    """Delete a version that was published but never recorded (its build failed or was cancelled afterwards).

    The manifest goes first, so a half-deleted version is never taken for a complete one. Returns the number
    of objects deleted; objects the storage refuses to delete are logged and left (`prune` gets them).
    """
    manifest = f"{key}/{MANIFEST}"
    return _delete(storage, [manifest, *(k for k in storage.list(f"{key}/") if k != manifest)])


def _delete(storage: ObjectStorage, keys: list[str]) -> int:
    """Delete these objects in order; returns how many went. A refused delete is logged and skipped: a
    leftover object costs space, not correctness."""
    deleted = 0
    for object_key in keys:
        try:
            storage.delete(object_key)
            deleted += 1
        except Exception:
            logger.warning("could not delete artifact object %s", object_key, exc_info=True)
    return deleted


def prune_cache(settings: Settings, kind: str, scope: str, keep: set[str]) -> None:
    """Delete this machine's cached versions of (kind, scope) not in `keep`."""
    folder = cache_root(settings) / PREFIX / kind / scope
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_dir() and not path.name.startswith(".") and _is_older(path.name, keep):
                shutil.rmtree(path, ignore_errors=True)


def _is_older(version: str, keep: set[str]) -> bool:
    return bool(version) and bool(keep) and version not in keep and version < min(keep)
