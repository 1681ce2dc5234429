"""Watched folders: a line PC or camera drops photos into a folder; each becomes an analysed inspection.

Rules that keep a drop folder safe:
- a file is taken only once its size and modification time have not changed for the folder's `settle_s`
  (a camera still writing it is left alone), and names that writers use while writing (`.part`, `.tmp`,
  `.crdownload`, `~`, dot files) are never taken;
- taking a file is an atomic rename into `.processing/`, so two servers watching one folder never take the
  same file;
- a photo that analyses goes to `done/YYYY-MM-DD/`; a file that is not a usable photo goes to `rejected/`
  with `<name>.reason.txt` beside it saying why (in the default language), and no inspection is stored;
- results go to the result sinks like every analysed inspection (`inspection.analyzed`).
Folders must lie inside WATCH_FOLDER_ROOTS, so an admin form cannot point the server at system folders.

A watched folder may also be an S3 prefix (`s3://bucket/prefix/`, inside WATCH_S3_PREFIXES), polled
with the S3_* settings. S3 PUTs are atomic, so there is no settle wait (writer temp names are still skipped,
and so is everything below the prefix's own sub-prefixes). S3 has no atomic rename, so a server claims an
object version by inserting a `watch_claim` row (unique per folder, key and ETag): the server whose insert
fails skips it. The object is then downloaded (refused by its listed size first), analysed and moved by
copy-then-delete to `done/YYYY-MM-DD/` or `rejected/` (+ `.reason.txt`); if a step fails the object stays.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.audit import record_audit
from app.core.errors import DomainError, InvalidInputError, NotFoundError
from app.core.i18n import translate
from app.core.services import Services
from app.db.base import utcnow
from app.db.tables import Product, User, WatchClaim, WatchFolder

logger = logging.getLogger(__name__)

_WRITING_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".filepart", "~")
_MAX_NAME = 200
_NOTE_EVERY_S = 60.0
S3_SCHEME = "s3://"
_S3_SUBPREFIXES = (".processing/", "done/", "rejected/")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_S3_GONE = {"NoSuchKey", "404", "NotFound", "PreconditionFailed", "412"}


class WatchFolderCreate(BaseModel):
    """A folder to watch for one product, recorded as one user."""

    path: str = Field(min_length=1, max_length=1000)
    product_id: int
    username: str = Field(min_length=1, max_length=64)
    settle_s: float = Field(default=2.0, ge=0.2, le=600)


class WatchFolderRead(BaseModel):
    """A watched folder as admins see it."""

    id: int
    path: str
    product_id: int
    username: str
    is_active: bool
    settle_s: float
    processed: int
    rejected: int
    last_error: str


def allowed_roots(raw: str, data_dir: Path) -> list[Path]:
    """The folders watched folders must lie in (WATCH_FOLDER_ROOTS, default `<data>/watch`)."""
    roots = [Path(p.strip()) for p in raw.split(",") if p.strip()] or [data_dir / "watch"]
    return [r.resolve() for r in roots]


def s3_location(path: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix/`; the prefix is '' or ends with '/'."""
    bucket, _, prefix = path.strip()[len(S3_SCHEME) :].partition("/")
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    parts = prefix.split("/")[:-1]
    if (
        not _BUCKET_RE.match(bucket)
        or any(part in {"", ".", ".."} for part in parts)
        or any(ord(ch) < 32 for ch in prefix)
        or len(prefix) > 700
    ):
        raise InvalidInputError("errors.watch_s3_invalid", path=path)
    return bucket, prefix


def s3_path(bucket: str, prefix: str) -> str:
    """The canonical `s3://bucket/prefix/` form."""
    return f"{S3_SCHEME}{bucket}/{prefix}"


def allowed_s3_prefixes(raw: str) -> list[str]:
    """The S3 prefixes watched folders may lie in (WATCH_S3_PREFIXES; empty: S3 watching is off)."""
    allowed = []
    for entry in (p.strip() for p in raw.split(",")):
        if not entry.startswith(S3_SCHEME):
            continue
        try:
            allowed.append(s3_path(*s3_location(entry)))
        except InvalidInputError:
            logger.warning("WATCH_S3_PREFIXES entry %r is not s3://bucket/prefix/; ignored", entry)
    return allowed


def _read(folder: WatchFolder, session: Session) -> WatchFolderRead:
    user = session.get(User, folder.user_id)
    return WatchFolderRead(
        id=folder.id,
        path=folder.path,
        product_id=folder.product_id,
        username=user.username if user is not None else "",
        is_active=folder.is_active,
        settle_s=folder.settle_s,
        processed=folder.processed,
        rejected=folder.rejected,
        last_error=folder.last_error,
    )


def list_folders(session: Session) -> list[WatchFolderRead]:
    """Every watched folder."""
    return [_read(f, session) for f in session.scalars(select(WatchFolder).order_by(WatchFolder.id))]


def create_folder(
    session: Session,
    *,
    folder_in: WatchFolderCreate,
    roots: list[Path],
    actor_id: int | None,
    s3_prefixes: Sequence[str] = (),
) -> WatchFolderRead:
    """Watch a folder (created if missing) inside the allowed roots, or an S3 prefix inside `s3_prefixes`."""
    if folder_in.path.strip().startswith(S3_SCHEME):
        return _create_s3(session, folder_in=folder_in, s3_prefixes=s3_prefixes, actor_id=actor_id)
    path = Path(folder_in.path.strip()).expanduser()
    if not path.is_absolute():
        raise InvalidInputError("errors.watch_path_relative")
    resolved = path.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise InvalidInputError("errors.watch_path_outside", roots=", ".join(str(r) for r in roots))
    user = _check_owner(session, folder_in, str(resolved))
    try:
        for sub in (resolved, resolved / ".processing", resolved / "done", resolved / "rejected"):
            sub.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            "errors.watch_path_unusable", path=str(resolved), reason=exc.strerror
        ) from exc
    return _add(session, folder_in=folder_in, path=str(resolved), user=user, actor_id=actor_id)


def _check_owner(session: Session, folder_in: WatchFolderCreate, path: str) -> User:
    if session.get(Product, folder_in.product_id) is None:
        raise NotFoundError("errors.product_not_found", id=folder_in.product_id)
    user = session.scalar(select(User).where(User.username == folder_in.username.strip()))
    if user is None or not user.is_active:
        raise InvalidInputError("errors.watch_user_unknown", username=folder_in.username)
    taken = session.scalar(select(WatchFolder).where(WatchFolder.path == path))
    if taken is not None:
        raise InvalidInputError("errors.watch_path_taken", path=path)
    return user


def _create_s3(
    session: Session, *, folder_in: WatchFolderCreate, s3_prefixes: Sequence[str], actor_id: int | None
) -> WatchFolderRead:
    if not s3_prefixes:
        raise InvalidInputError("errors.watch_s3_disabled")
    path = s3_path(*s3_location(folder_in.path))
    if not any(path.startswith(allowed) for allowed in s3_prefixes):
        raise InvalidInputError("errors.watch_s3_outside", prefixes=", ".join(s3_prefixes))
    user = _check_owner(session, folder_in, path)
    return _add(session, folder_in=folder_in, path=path, user=user, actor_id=actor_id)


def _add(
    session: Session, *, folder_in: WatchFolderCreate, path: str, user: User, actor_id: int | None
) -> WatchFolderRead:
    folder = WatchFolder(
        path=path, product_id=folder_in.product_id, user_id=user.id, settle_s=folder_in.settle_s
    )
    session.add(folder)
    session.flush()
    record_audit(
        session, user_id=actor_id, action="create", entity="watch_folder", entity_id=folder.id, detail={}
    )
    session.commit()
    return _read(folder, session)


def set_active(session: Session, *, folder_id: int, is_active: bool, actor_id: int | None) -> WatchFolderRead:
    """Pause or resume a folder."""
    folder = _get(session, folder_id)
    folder.is_active = is_active
    record_audit(
        session, user_id=actor_id, action="update", entity="watch_folder", entity_id=folder.id, detail={}
    )
    session.commit()
    return _read(folder, session)


def delete_folder(session: Session, *, folder_id: int, actor_id: int | None) -> None:
    """Stop watching a folder (its files stay where they are)."""
    folder = _get(session, folder_id)
    session.delete(folder)
    record_audit(
        session, user_id=actor_id, action="delete", entity="watch_folder", entity_id=folder_id, detail={}
    )
    session.commit()


def _audit(session: Session, actor_id: int | None, action: str, folder_id: int) -> None:
    record_audit(
        session, user_id=actor_id, action=action, entity="watch_folder", entity_id=folder_id, detail={}
    )


def _get(session: Session, folder_id: int) -> WatchFolder:
    folder = session.get(WatchFolder, folder_id)
    if folder is None:
        raise NotFoundError("errors.watch_folder_not_found", id=folder_id)
    return folder


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    stable_since: float


def _candidate(entry: os.DirEntry[str]) -> bool:
    name = entry.name
    return (
        not name.startswith(".")
        and not name.lower().endswith(_WRITING_SUFFIXES)
        and not name.endswith(".reason.txt")
        and len(name) <= _MAX_NAME
        and entry.is_file(follow_symlinks=False)
    )


class FolderWatcher:
    """Polls the active watched folders and analyses each settled photo (a daemon thread per server)."""

    def __init__(self, services: Services, *, poll_s: float) -> None:
        self.services = services
        self.poll_s = poll_s
        self._seen: dict[str, _Seen] = {}
        self._noted: dict[int, float] = {}  # when each folder's row was last written (monotonic)
        self._errored: set[int] = set()
        self._s3: Any = None  # the boto3 client, made when the first S3 prefix is scanned
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching."""
        self._thread = threading.Thread(target=self._loop, name="folder-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the photo in hand."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_s + 30)

    def scan_once(self) -> int:
        """Look at every active folder once; returns how many files were taken."""
        with self.services.session_factory() as session:
            folders = [
                (f.id, f.path, f.settle_s)
                for f in session.scalars(select(WatchFolder).where(WatchFolder.is_active.is_(True)))
            ]
        taken = 0
        for folder_id, path, settle_s in folders:
            try:
                if path.startswith(S3_SCHEME):
                    taken += self._scan_s3(folder_id, path)
                else:
                    taken += self._scan_folder(folder_id, Path(path), settle_s)
            except OSError as exc:
                self._record(folder_id, error=f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                # The S3 service is away or refuses: say so on the folder and look again next time.
                if not path.startswith(S3_SCHEME):
                    raise
                logger.warning("watched prefix %s could not be scanned", path, exc_info=True)
                self._record(folder_id, error=f"{type(exc).__name__}: {exc}")
        return taken

    def _scan_folder(self, folder_id: int, path: Path, settle_s: float) -> int:
        now = time.monotonic()
        ready: list[Path] = []
        with os.scandir(path) as entries:
            for entry in entries:
                if not _candidate(entry):
                    continue
                stat = entry.stat(follow_symlinks=False)
                key = entry.path
                seen = self._seen.get(key)
                if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                    self._seen[key] = _Seen(stat.st_size, stat.st_mtime_ns, now)
                    continue
                if stat.st_size > 0 and now - seen.stable_since >= settle_s:
                    ready.append(Path(entry.path))
        for photo in sorted(ready):
            self._seen.pop(str(photo), None)
            self._take(folder_id, path, photo)
        # An idle scan only says "still watched, no error": write it at most once a minute, or at once to
        # clear an error (the poll runs every second on every server; a write each time holds SQLite's lock).
        self._note_idle(folder_id, now)
        return len(ready)

    def _note_idle(self, folder_id: int, now: float) -> None:
        if folder_id in self._errored or now - self._noted.get(folder_id, -math.inf) >= _NOTE_EVERY_S:
            self._record(folder_id)

    def _take(self, folder_id: int, folder: Path, photo: Path) -> None:
        claimed = folder / ".processing" / photo.name
        try:
            os.rename(photo, claimed)  # atomic: another server that renamed first wins
        except FileNotFoundError:
            return
        try:
            size = claimed.stat().st_size
            data = claimed.read_bytes() if size <= self.services.settings.max_upload_bytes else None
            reason = (
                self._too_large(photo.name) if data is None else self._analyze(folder_id, photo.name, data)
            )
        except Exception as exc:  # an unexpected failure must not lose the file or stop the watcher
            logger.exception("watched photo %s could not be analysed", photo)
            reason = f"{type(exc).__name__}: {exc}"
        if reason is None:
            target = folder / "done" / utcnow().strftime("%Y-%m-%d") / photo.name
            self._record(folder_id, processed=1)
        else:
            target = folder / "rejected" / photo.name
            target.with_name(target.name + ".reason.txt").parent.mkdir(parents=True, exist_ok=True)
            target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
            self._record(folder_id, rejected=1)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(claimed, _free_name(target))

    def _too_large(self, name: str) -> str:
        limit = self.services.settings.max_upload_bytes
        return translate("errors.file_too_large", name=name, limit_mb=limit // 2**20)

    def _analyze(self, folder_id: int, name: str, data: bytes) -> str | None:
        """Analyse one photo as the folder's user; the reason it was refused, or None."""
        from app.inspection.analyze import analyze

        with self.services.session_factory() as session:
            folder = session.get(WatchFolder, folder_id)
            user = session.get(User, folder.user_id) if folder is not None else None
            if folder is None or user is None:
                return translate("errors.watch_folder_not_found", id=folder_id)
            try:
                analyze(
                    session,
                    services=self.services,
                    data=data,
                    file_name=name,
                    product_id=folder.product_id,
                    top_k=5,
                    generator=None,
                    user=user,
                )
            except DomainError as exc:
                session.rollback()
                return translate(exc.message_key, **exc.params)
        return None

    # --- S3 prefixes ---

    def _client(self) -> Any:
        if self._s3 is None:
            from app.core.storage import make_s3_client

            settings = self.services.settings
            self._s3 = make_s3_client(
                endpoint_url=settings.s3_endpoint_url,
                access_key=settings.s3_access_key.get_secret_value(),
                secret_key=settings.s3_secret_key.get_secret_value(),
                region=settings.s3_region,
            )
        return self._s3

    def _scan_s3(self, folder_id: int, path: str) -> int:
        bucket, prefix = s3_location(path)
        client = self._client()
        found: list[tuple[str, str, int]] = []  # (name, etag, size)
        marker = ""
        while True:  # ListObjects (v1) with Marker: NCP has no ListObjectsV2
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": 1000}
            if marker:
                kwargs["Marker"] = marker
            page = client.list_objects(**kwargs)
            contents = page.get("Contents", [])
            for item in contents:
                name = str(item["Key"])[len(prefix) :]
                if _s3_candidate(name) and int(item.get("Size", 0)) > 0:
                    found.append((name, str(item.get("ETag", "")).strip('"'), int(item["Size"])))
            if not page.get("IsTruncated") or not contents:
                break
            marker = str(page.get("NextMarker") or contents[-1]["Key"])
        taken = sum(self._take_s3(folder_id, bucket, prefix, *entry) for entry in sorted(found))
        self._note_idle(folder_id, time.monotonic())
        return taken

    def _take_s3(self, folder_id: int, bucket: str, prefix: str, name: str, etag: str, size: int) -> bool:
        """Claim, analyse and move one object; False when another server has it or it is gone."""
        from botocore.exceptions import ClientError

        if not self._claim(folder_id, name, etag):
            return False
        client, key = self._client(), prefix + name
        data: bytes | None = None
        if size <= self.services.settings.max_upload_bytes:
            try:
                response = client.get_object(Bucket=bucket, Key=key, IfMatch=etag)
                data = response["Body"].read()
            except Exception as exc:  # gone (another server took it) or S3 away: look again later
                self._unclaim(folder_id, name, etag)
                if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _S3_GONE:
                    return False
                raise
        try:
            reason = self._too_large(name) if data is None else self._analyze(folder_id, name, data)
        except Exception as exc:  # an unexpected failure must not lose the object or stop the watcher
            logger.exception("watched object s3://%s/%s could not be analysed", bucket, key)
            reason = f"{type(exc).__name__}: {exc}"
        done, rejected = (1, 0) if reason is None else (0, 1)
        try:
            self._move_s3(bucket, prefix, name, etag, reason)
        except Exception as exc:  # the object stays under the prefix, still claimed: not analysed twice
            logger.exception("watched object s3://%s/%s could not be moved", bucket, key)
            self._record(folder_id, processed=done, rejected=rejected, error=f"{type(exc).__name__}: {exc}")
            return True
        self._unclaim(folder_id, name, etag)
        self._record(folder_id, processed=done, rejected=rejected)
        return True

    def _move_s3(self, bucket: str, prefix: str, name: str, etag: str, reason: str | None) -> None:
        """Copy to done/ or rejected/ (with the reason beside it), then delete the original."""
        client, key = self._client(), prefix + name
        if reason is None:
            target = self._free_key(bucket, f"{prefix}done/{utcnow().strftime('%Y-%m-%d')}/{name}")
        else:
            target = self._free_key(bucket, f"{prefix}rejected/{name}")
            client.put_object(
                Bucket=bucket,
                Key=target + ".reason.txt",
                Body=(reason + "\n").encode("utf-8"),
                ContentType="text/plain; charset=utf-8",
            )
        client.copy_object(
            Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key}, CopySourceIfMatch=etag
        )
        client.delete_object(Bucket=bucket, Key=key)

    def _free_key(self, bucket: str, target: str) -> str:
        """`target`, or `name (2).ext` etc. when an object of that name is already there."""
        stem, dot, suffix = target.rpartition("/")[2].rpartition(".")
        if not dot:
            stem, suffix = suffix, ""
        folder = target.rpartition("/")[0]
        candidate = target
        for n in range(2, 1000):
            if not self._exists(bucket, candidate):
                return candidate
            candidate = f"{folder}/{stem} ({n}){dot}{suffix}"
        return f"{folder}/{stem}-{time.time_ns()}{dot}{suffix}"

    def _exists(self, bucket: str, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client().head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def _claim(self, folder_id: int, name: str, etag: str) -> bool:
        """Insert the claim row; False when another server inserted it first."""
        with self.services.session_factory() as session:
            session.add(WatchClaim(folder_id=folder_id, object_key=name, etag=etag))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
        return True

    def _unclaim(self, folder_id: int, name: str, etag: str) -> None:
        with self.services.session_factory() as session:
            session.execute(
                delete(WatchClaim).where(
                    WatchClaim.folder_id == folder_id, WatchClaim.object_key == name, WatchClaim.etag == etag
                )
            )
            session.commit()

    def _record(self, folder_id: int, *, processed: int = 0, rejected: int = 0, error: str = "") -> None:
        with self.services.session_factory() as session:
            # One UPDATE adding to the counts: servers finishing photos of one folder at once lose none.
            session.execute(
                update(WatchFolder)
                .where(WatchFolder.id == folder_id)
                .values(
                    processed=WatchFolder.processed + processed,
                    rejected=WatchFolder.rejected + rejected,
                    last_error=error[:2000],
                    last_scan_at=utcnow(),
                )
            )
            session.commit()
        self._noted[folder_id] = time.monotonic()
        if error:
            self._errored.add(folder_id)
        else:
            self._errored.discard(folder_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.scan_once()
            except Exception:  # the database may be briefly away; look again next time
                logger.warning("folder watcher could not scan", exc_info=True)


def _s3_candidate(name: str) -> bool:
    """A top-level object name under the prefix that is not a writer's temp name nor our own output."""
    return (
        bool(name)
        and "/" not in name
        and not name.startswith(_S3_SUBPREFIXES)
        and not name.startswith(".")
        and not name.lower().endswith(_WRITING_SUFFIXES)
        and not name.endswith(".reason.txt")
        and len(name) <= _MAX_NAME
    )


def _free_name(target: Path) -> Path:
    """`target`, or `name (2).ext` etc. when a file of that name is already there."""
    if not target.exists():
        return target
    for n in range(2, 10_000):
        candidate = target.with_name(f"{target.stem} ({n}){target.suffix}")
        if not candidate.exists():
            return candidate
    return target.with_name(f"{target.stem}-{time.time_ns()}{target.suffix}")
