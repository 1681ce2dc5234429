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
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.audit import record_audit
from app.core.errors import DomainError, InvalidInputError, NotFoundError
from app.core.i18n import translate
from app.core.services import Services
from app.db.base import utcnow
from app.db.tables import Product, User, WatchFolder

logger = logging.getLogger(__name__)

_WRITING_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".filepart", "~")
_MAX_NAME = 200
_NOTE_EVERY_S = 60.0


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
    session: Session, *, folder_in: WatchFolderCreate, roots: list[Path], actor_id: int | None
) -> WatchFolderRead:
    """Watch a folder (created if missing) inside the allowed roots."""
    path = Path(folder_in.path.strip()).expanduser()
    if not path.is_absolute():
        raise InvalidInputError("errors.watch_path_relative")
    resolved = path.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise InvalidInputError("errors.watch_path_outside", roots=", ".join(str(r) for r in roots))
    if session.get(Product, folder_in.product_id) is None:
        raise NotFoundError("errors.product_not_found", id=folder_in.product_id)
    user = session.scalar(select(User).where(User.username == folder_in.username.strip()))
    if user is None or not user.is_active:
        raise InvalidInputError("errors.watch_user_unknown", username=folder_in.username)
    taken = session.scalar(select(WatchFolder).where(WatchFolder.path == str(resolved)))
    if taken is not None:
        raise InvalidInputError("errors.watch_path_taken", path=str(resolved))
    try:
        for sub in (resolved, resolved / ".processing", resolved / "done", resolved / "rejected"):
            sub.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            "errors.watch_path_unusable", path=str(resolved), reason=exc.strerror
        ) from exc
    folder = WatchFolder(
        path=str(resolved), product_id=folder_in.product_id, user_id=user.id, settle_s=folder_in.settle_s
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
                (f.id, Path(f.path), f.settle_s)
                for f in session.scalars(select(WatchFolder).where(WatchFolder.is_active.is_(True)))
            ]
        taken = 0
        for folder_id, path, settle_s in folders:
            try:
                taken += self._scan_folder(folder_id, path, settle_s)
            except OSError as exc:
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
        if folder_id in self._errored or now - self._noted.get(folder_id, -math.inf) >= _NOTE_EVERY_S:
            self._record(folder_id)
        return len(ready)

    def _take(self, folder_id: int, folder: Path, photo: Path) -> None:
        claimed = folder / ".processing" / photo.name
        try:
            os.rename(photo, claimed)  # atomic: another server that renamed first wins
        except FileNotFoundError:
            return
        try:
            reason = self._analyze(folder_id, claimed)
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

    def _analyze(self, folder_id: int, photo: Path) -> str | None:
        """Analyse one photo as the folder's user; the reason it was refused, or None."""
        from app.inspection.analyze import analyze

        settings = self.services.settings
        data = photo.read_bytes() if photo.stat().st_size <= settings.max_upload_bytes else None
        if data is None:
            return translate(
                "errors.file_too_large", name=photo.name, limit_mb=settings.max_upload_bytes // 2**20
            )
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
                    file_name=photo.name,
                    product_id=folder.product_id,
                    top_k=5,
                    generator=None,
                    user=user,
                )
            except DomainError as exc:
                session.rollback()
                return translate(exc.message_key, **exc.params)
        return None

    def _record(self, folder_id: int, *, processed: int = 0, rejected: int = 0, error: str = "") -> None:
        with self.services.session_factory() as session:
            folder = session.get(WatchFolder, folder_id)
            if folder is None:
                return
            folder.processed += processed
            folder.rejected += rejected
            folder.last_error = error[:2000]
            folder.last_scan_at = utcnow()
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


def _free_name(target: Path) -> Path:
    """`target`, or `name (2).ext` etc. when a file of that name is already there."""
    if not target.exists():
        return target
    for n in range(2, 10_000):
        candidate = target.with_name(f"{target.stem} ({n}){target.suffix}")
        if not candidate.exists():
            return candidate
    return target.with_name(f"{target.stem}-{time.time_ns()}{target.suffix}")
