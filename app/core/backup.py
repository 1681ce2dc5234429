"""Backup and restore of a whole instance: database rows, stored objects, built artifacts and manual indexes.

The archive is a plain tar (images and model files are compressed already):
- `db/<table>.jsonl`: every row of every table, read in one transaction (a consistent snapshot on SQLite and
  on InnoDB), values encoded from the ORM column types so that a SQLite backup restores into MariaDB and back;
- `vectors/<collection>/page-*.npz`: the rows of every gallery kept in Milvus (`app.core.backup_vectors`),
  those of the snapshot's images, read right after the rows;
- `objects/<key>`: every object of the configured store (local files or S3), listed after the rows were read,
  so every key a row names is there unless it was deleted meanwhile;
- `artifacts/...` and `manual_store/...`: the built galleries, memory banks and manual indexes, so the
  restored instance answers the same searches without a rebuild;
- `manifest.json` (last): format, schema revision, row and object counts and a SHA-256 of every member.

Restore fills an empty instance of the same schema revision: it migrates the target, refuses one that holds
anything, writes files and objects first and the rows in one transaction last, and removes what it wrote if
any step fails, so a failed restore leaves the instance as empty as it found it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import IO, Any

import sqlalchemy as sa

from app.core.artifact_store import cache_root
from app.core.backup_vectors import Snapshot, VectorRestore, dump_vectors
from app.core.config import Settings
from app.core.errors import InvalidInputError
from app.core.storage import ObjectStorage, make_storage
from app.db.base import Base

logger = logging.getLogger(__name__)

FORMAT = "defectlens-backup"
FORMAT_VERSION = 1
_MANIFEST = "manifest.json"
_INSERT_BATCH = 500
# Rows that only make sense on the server that wrote them: a restored instance starts with no live logins.
# watch_claim: in-flight claims of the old instance would block those S3 objects forever after a restore
_TRANSIENT_TABLES = frozenset({"auth_token", "login_attempt", "login_throttle", "watch_claim"})


@dataclass
class BackupReport:
    """What an archive holds (also the manifest's counts)."""

    schema_revision: str
    tables: dict[str, int] = field(default_factory=dict)
    objects: int = 0
    files: int = 0
    vectors: int = 0
    size_bytes: int = 0

    def summary(self) -> str:
        """One line for the command line."""
        rows = sum(self.tables.values())
        return (
            f"schema {self.schema_revision}: {rows} rows in {len(self.tables)} tables,"
            f" {self.objects} objects, {self.files} artifact/index files, {self.vectors} Milvus vectors"
        )


class _Writer:
    """Adds members to the tar and remembers each one's SHA-256 for the manifest."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.checksums: dict[str, str] = {}

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(datetime.now(UTC).timestamp())
        self.tar.addfile(info, io.BytesIO(data))
        self.checksums[name] = hashlib.sha256(data).hexdigest()


def current_revision(engine: sa.Engine) -> str:
    """The alembic revision the database is at ('' when it was never migrated)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return ""
        value = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return str(value or "")


def create_backup(settings: Settings, output: Path) -> BackupReport:
    """Write a consistent archive of the instance `settings` points at to `output` (atomically)."""
    storage = make_storage(settings)
    engine = sa.create_engine(settings.database_url)
    partial = output.with_name(output.name + ".partial")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = BackupReport(schema_revision=current_revision(engine))
        if not report.schema_revision:
            raise InvalidInputError("errors.backup_not_migrated")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            writer = _Writer(tar)
            snapshot = Snapshot()
            _dump_tables(engine, writer, report, snapshot)
            vectors = dump_vectors(settings, storage, snapshot, writer.add)
            report.vectors = sum(int(v["rows"]) for v in vectors.values())
            for key in storage.list(""):
                writer.add(f"objects/{key}", storage.get(key))
                report.objects += 1
            for prefix, root in _file_roots(settings):
                for path in _files_under(root, skip=cache_root(settings)):
                    writer.add(f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())
                    report.files += 1
            manifest = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "created_at": datetime.now(UTC).isoformat(),
                "schema_revision": report.schema_revision,
                "source": {"database": engine.dialect.name, "storage": storage.backend},
                "tables": report.tables,
                "objects": report.objects,
                "files": report.files,
                "vectors": vectors,
                "sha256": writer.checksums,
            }
            writer.add(_MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1).encode())
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
        engine.dispose()
    report.size_bytes = output.stat().st_size
    logger.info("backup written to %s: %s", output, report.summary())
    return report


def restore_backup(settings: Settings, archive: Path) -> BackupReport:
    """Fill the empty instance `settings` points at from `archive` (InvalidInputError if it cannot)."""
    from app.cli import run_migrations

    if not archive.is_file():
        raise InvalidInputError("errors.backup_archive_missing", path=str(archive))
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed in the finally below
    except (tarfile.TarError, OSError) as exc:
        raise InvalidInputError("errors.backup_archive_unreadable", reason=type(exc).__name__) from exc
    written_objects: list[str] = []
    written_files: list[Path] = []
    engine: sa.Engine | None = None
    vectors: VectorRestore | None = None
    try:
        manifest = _read_manifest(tar)
        run_migrations(settings)
        engine = sa.create_engine(settings.database_url)
        revision = current_revision(engine)
        if revision != manifest["schema_revision"]:
            raise InvalidInputError(
                "errors.backup_schema_mismatch", archive=manifest["schema_revision"], instance=revision
            )
        storage = make_storage(settings)
        _require_empty(engine, storage, settings)
        vectors = VectorRestore(settings, manifest.get("vectors") or {})
        vectors.require_empty()
        vectors.start()
        checksums: dict[str, str] = manifest["sha256"]
        report = BackupReport(schema_revision=revision)
        roots = dict(_file_roots(settings))
        for member in tar:
            if member.name == _MANIFEST or member.name.startswith("db/"):
                continue
            data = _read_member(tar, member, checksums)
            head, _, rest = member.name.partition("/")
            if head == "vectors":
                vectors.add_page(member.name, data)
            elif head == "objects":
                report.objects += 1
                if vectors.holds_object(rest, data):
                    continue
                storage.put(rest, data, "application/octet-stream")
                written_objects.append(rest)
            elif head in roots:
                if vectors.skips_file(head, rest):
                    continue
                target = _safe_join(roots[head], rest)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                written_files.append(target)
                report.files += 1
            else:
                raise InvalidInputError(
                    "errors.backup_archive_unreadable", reason=f"unexpected member {member.name}"
                )
        versions = vectors.finish(storage, written_objects)
        report.vectors = sum(p.rows for p in vectors.plans.values())
        _load_tables(engine, tar, checksums, report, versions)
    except BaseException:
        if vectors is not None:
            vectors.discard()
        cleanup = make_storage(settings) if written_objects else None
        for key in written_objects:
            _quietly(lambda key=key: cleanup.delete(key))  # type: ignore[union-attr]
        for path in written_files:
            path.unlink(missing_ok=True)
        raise
    finally:
        tar.close()
        if engine is not None:
            engine.dispose()
    logger.info("restored %s: %s", archive, report.summary())
    return report


# -- rows -------------------------------------------------------------------------------------------------


def _tables() -> list[sa.Table]:
    import app.db.tables  # noqa: F401 - registers every table on Base.metadata

    return [t for t in Base.metadata.sorted_tables if t.name not in _TRANSIENT_TABLES]


def _dump_tables(engine: sa.Engine, writer: _Writer, report: BackupReport, seen: Snapshot) -> None:
    if engine.dialect.name == "sqlite":
        # pysqlite opens no transaction for reads, so copy the file with SQLite's online backup (a consistent
        # snapshot even while the server writes) and read the copy.
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "snapshot.db"
            source = sqlite3.connect(str(engine.url.database))
            target = sqlite3.connect(str(copy))
            try:
                source.backup(target)
            finally:
                target.close()
                source.close()
            snapshot = sa.create_engine(f"sqlite:///{copy}")
            try:
                with snapshot.connect() as conn:
                    _dump_rows(conn, writer, report, seen)
            finally:
                snapshot.dispose()
        return
    # InnoDB: one REPEATABLE READ transaction reads every table from the same snapshot.
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        _dump_rows(conn, writer, report, seen)


def _dump_rows(conn: sa.Connection, writer: _Writer, report: BackupReport, seen: Snapshot) -> None:
    for table in _tables():
        buffer = io.StringIO()
        count = 0
        order = list(table.primary_key.columns) or list(table.columns)
        for row in conn.execute(sa.select(table).order_by(*order)).mappings():
            seen.observe(table.name, row)
            encoded = {name: _encode(value) for name, value in row.items()}
            buffer.write(json.dumps(encoded, ensure_ascii=False) + "\n")
            count += 1
        writer.add(f"db/{table.name}.jsonl", buffer.getvalue().encode())
        report.tables[table.name] = count


def _load_tables(
    engine: sa.Engine,
    tar: tarfile.TarFile,
    checksums: dict[str, str],
    report: BackupReport,
    versions: dict[str, str],
) -> None:
    """Insert every archived row in one transaction; `versions` gives re-published versions new checksums."""
    with engine.begin() as conn:
        if _is_mysql(engine):
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
        for table in _tables():
            name = f"db/{table.name}.jsonl"
            try:
                member = tar.getmember(name)
            except KeyError:
                report.tables[table.name] = 0
                continue
            lines = _read_member(tar, member, checksums).decode().splitlines()
            rows = [_decode_row(table, json.loads(line)) for line in lines if line]
            if table.name == "artifact":
                for row in rows:
                    row["checksum"] = versions.get(row["path"], row["checksum"])
            for start in range(0, len(rows), _INSERT_BATCH):
                conn.execute(table.insert(), rows[start : start + _INSERT_BATCH])
            report.tables[table.name] = len(rows)
        if _is_mysql(engine):
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")


def _decode_row(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    # Columns added by a later migration of the same revision cannot exist; unknown names are an error.
    unknown = set(values) - set(table.c.keys())
    if unknown:
        raise InvalidInputError("errors.backup_archive_unreadable", reason=f"{table.name}: {sorted(unknown)}")
    return {name: _decode(table.c[name], value) for name, value in values.items()}


def _python_type(column: sa.Column[Any]) -> type | None:
    column_type: sa.types.TypeEngine[Any] = column.type
    if isinstance(column_type, sa.types.TypeDecorator):
        column_type = column_type.impl_instance
    try:
        return column_type.python_type
    except NotImplementedError:
        return None


def _encode(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _decode(column: sa.Column[Any], value: Any) -> Any:
    if value is None:
        return None
    kind = _python_type(column)
    if kind is datetime:
        return datetime.fromisoformat(value)
    if kind is date:
        return date.fromisoformat(value)
    if kind is bytes:
        return base64.b64decode(value)
    if kind is Decimal:
        return Decimal(value)
    return value


def _is_mysql(engine: sa.Engine) -> bool:
    return engine.dialect.name in {"mysql", "mariadb"}


# -- files and checks -------------------------------------------------------------------------------------


def _file_roots(settings: Settings) -> list[tuple[str, Path]]:
    return [("artifacts", settings.artifacts_path), ("manual_store", settings.manual_store_path)]


def _files_under(root: Path, *, skip: Path) -> Iterator[Path]:
    """The files under `root` worth archiving. `skip` is the artifact cache: this server's copies of versions
    that are objects of the store (archived under `objects/`) and that a restored server fetches again."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        if path.is_relative_to(skip):
            continue
        # Skip in-flight temp files (dot-named, as the atomic writers make them) and links out of the tree.
        if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
            yield path


def _safe_join(root: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or any(p in {"", ".", ".."} for p in parts) or PurePosixPath(relative).is_absolute():
        raise InvalidInputError("errors.backup_archive_unreadable", reason=f"unsafe path {relative}")
    target = (root / Path(*parts)).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InvalidInputError("errors.backup_archive_unreadable", reason=f"unsafe path {relative}")
    return target


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.getmember(_MANIFEST)
        handle = tar.extractfile(member)
        if handle is None:
            raise KeyError(_MANIFEST)
        manifest: dict[str, Any] = json.loads(handle.read())
    except (KeyError, ValueError, tarfile.TarError) as exc:
        raise InvalidInputError("errors.backup_archive_unreadable", reason="manifest.json") from exc
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise InvalidInputError("errors.backup_archive_unreadable", reason="format")
    return manifest


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, checksums: dict[str, str]) -> bytes:
    if not member.isfile():
        raise InvalidInputError("errors.backup_archive_unreadable", reason=f"not a file: {member.name}")
    handle: IO[bytes] | None = tar.extractfile(member)
    if handle is None:
        raise InvalidInputError("errors.backup_archive_unreadable", reason=member.name)
    data = handle.read()
    if checksums.get(member.name) != hashlib.sha256(data).hexdigest():
        raise InvalidInputError("errors.backup_checksum_mismatch", member=member.name)
    return data


def _require_empty(engine: sa.Engine, storage: ObjectStorage, settings: Settings) -> None:
    with engine.connect() as conn:
        for table in _tables():
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            if count:
                raise InvalidInputError("errors.backup_target_not_empty", what=f"{table.name} ({count})")
    for key in storage.list(""):
        raise InvalidInputError("errors.backup_target_not_empty", what=f"object {key}")
    for prefix, root in _file_roots(settings):
        for path in _files_under(root, skip=cache_root(settings)):
            raise InvalidInputError(
                "errors.backup_target_not_empty", what=f"{prefix}/{path.relative_to(root)}"
            )


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception:  # cleanup after a failure must not hide the failure itself
        logger.warning("cleanup after a failed restore left something behind", exc_info=True)
