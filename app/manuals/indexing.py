"""Manual indexing: PDF -> chunks (DB rows) -> the product's ManualIndex in the registry "manuals".

The registry holds one immutable ManualLibrary (text engines + one ManualIndex per product). Writers
copy the product's index, update the copy, publish it as a new immutable version in the object storage
(`artifacts/manual_index/product-<id>/<version>/`, app.core.artifact_store), commit the rows and the artifact
row, then swap a new library in; a request that already took the old library keeps reading it untouched.
Other servers load the new version when they see the artifact row (the artifact watcher).

Several processes (servers, job workers) may write one product's index at the same moment. A writer
embeds first, then holds the product's lease (app.core.leases) while it reads the newest stored version,
merges its change into it, publishes and commits, and confirms the lease in that commit: two writers never
start from the same version, so neither update is lost, and a writer that died frees the lease when its
heartbeat stops.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.core import artifact_store, leases
from app.core.artifacts import current_artifacts, record_current_artifact
from app.core.errors import ConflictError
from app.core.jobs import JobCancelled, job_is_live
from app.core.services import Services
from app.db.base import db_now, utcnow
from app.db.tables import DeploymentJob, Manual, ManualChunk
from app.manuals.document import Limits, ManualFileError
from app.manuals.parse_worker import ProcessLimits, parse_bounded
from app.manuals.structure import KIND_LABELS, PART_KINDS, Structure, parse_structure
from app.ml.chunking import SECTION_SEP, section_kind
from app.ml.registry import RegistryKey
from app.ml.retriever import (
    INDEX_FILE,
    CrossEncoderReranker,
    IndexedChunk,
    IndexMismatchError,
    KoreanTokenizer,
    ManualIndex,
)
from app.ml.text_embedder import TextEmbedder, load_text_embedder

logger = logging.getLogger(__name__)

KIND = "manual_index"
Progress = Callable[[float, str], None]

# Index writers (upload jobs, rebuilds, deletes) of one process run one at a time: each starts from the
# library the previous one installed; readers never take it. Across processes, the product's lease orders
# the writers; this lock is always taken first, so threads of one process never wait on the lease.
_WRITE_LOCK = threading.Lock()
# How long a job waits for another process's hold on a product's lease (each hold is short: read, merge,
# publish, commit; a dead holder's lease expires after JOB_STALE_AFTER_S).
_JOB_LEASE_WAIT_S = 600.0


@dataclass(frozen=True)
class ManualLibrary:
    """The text engines and every product's manual index; replaced whole, never mutated."""

    embedder: TextEmbedder
    tokenizer: KoreanTokenizer
    reranker: CrossEncoderReranker | None = None
    indexes: Mapping[int, ManualIndex] = field(default_factory=dict)
    # Products whose saved index was built with another text embedder (rebuild needed).
    mismatched: frozenset[int] = frozenset()
    # product id -> checksum of the stored version its index was loaded from or published as.
    checksums: Mapping[int, str] = field(default_factory=dict)

    def index_for(self, product_id: int) -> ManualIndex | None:
        """The product's index, or None when it has no indexed manual."""
        return self.indexes.get(product_id)

    def with_index(self, product_id: int, index: ManualIndex | None, checksum: str = "") -> ManualLibrary:
        """A new library with the product's index replaced (None or empty removes it)."""
        indexes = dict(self.indexes)
        checksums = dict(self.checksums)
        checksums.pop(product_id, None)
        if index is None or len(index) == 0:
            indexes.pop(product_id, None)
        else:
            indexes[product_id] = index
            if checksum:
                checksums[product_id] = checksum
        return replace(self, indexes=indexes, mismatched=self.mismatched - {product_id}, checksums=checksums)

    def empty_index(self) -> ManualIndex:
        """A new index using this library's engines."""
        return ManualIndex(self.embedder, tokenizer=self.tokenizer, reranker=self.reranker)

    def describe(self) -> str:
        """Short status for /readyz."""
        chunks = sum(len(i) for i in self.indexes.values())
        return f"{self.embedder.embedder_id}: {len(self.indexes)} products, {chunks} chunks"


def product_dir(services: Services, product_id: int) -> Path:
    """Where a product's index was saved before versions were stored (read when no stored version exists)."""
    return services.settings.manual_store_path / f"product_{product_id}"


def scope_of(product_id: int) -> str:
    """The storage scope of a product's manual index versions."""
    return f"product-{product_id}"


@dataclass(frozen=True)
class _Stored:
    product_id: int
    path: str
    checksum: str


def _current_versions(session: Session) -> dict[int, _Stored]:
    rows = current_artifacts(session, KIND)
    return {pid: _Stored(pid, r.path, r.checksum) for pid, r in rows.items()}


def _load_stored(services: Services, library: ManualLibrary, stored: _Stored) -> ManualIndex:
    directory = artifact_store.fetch(services.storage, services.settings, stored.path, stored.checksum)
    return ManualIndex.load(
        directory, library.embedder, tokenizer=library.tokenizer, reranker=library.reranker
    )


def load_engines(services: Services) -> ManualLibrary:
    """Load the text embedder, the Korean tokenizer and (if its weights exist) a reranker; no indexes."""
    settings = services.settings
    embedder = load_text_embedder(
        settings.text_embedder or "use", settings.models_path, device=services.models.device
    )
    reranker = CrossEncoderReranker.find(settings.models_path, device=services.models.device)
    return ManualLibrary(embedder=embedder, tokenizer=KoreanTokenizer(), reranker=reranker)


def load_saved_indexes(services: Services, library: ManualLibrary) -> ManualLibrary:
    """``library`` with every product's current index (reads files only, embeds nothing).

    A product's current version comes from the object storage (fetched into the local cache, checksums
    verified); an index already loaded from that same version is kept as it is. Products without a stored
    version fall back to a folder saved under manual_store/ before versions were stored.
    """
    with services.session_factory() as session:
        current = _current_versions(session)
    indexes: dict[int, ManualIndex] = {}
    checksums: dict[int, str] = {}
    mismatched: set[int] = set()
    for product_id, stored in current.items():
        if not artifact_store.is_stored(stored.path, stored.checksum):
            continue
        kept = library.indexes.get(product_id)
        if kept is not None and library.checksums.get(product_id) == stored.checksum:
            indexes[product_id], checksums[product_id] = kept, stored.checksum
            continue
        try:
            indexes[product_id] = _load_stored(services, library, stored)
            checksums[product_id] = stored.checksum
            version = stored.path.rsplit("/", 1)[-1]
            artifact_store.prune_cache(services.settings, KIND, scope_of(product_id), {version})
        except IndexMismatchError as exc:
            logger.warning("manual index of product %s must be rebuilt: %s", product_id, exc)
            mismatched.add(product_id)
    root = services.settings.manual_store_path
    if root.is_dir():
        for directory in sorted(root.glob("product_*")):
            if not (directory / INDEX_FILE).is_file():
                continue
            try:
                product_id = int(directory.name.removeprefix("product_"))
            except ValueError:
                continue
            if product_id in checksums or product_id in mismatched:
                continue
            try:
                indexes[product_id] = ManualIndex.load(
                    directory, library.embedder, tokenizer=library.tokenizer, reranker=library.reranker
                )
            except IndexMismatchError as exc:
                logger.warning("manual index of product %s must be rebuilt: %s", product_id, exc)
                mismatched.add(product_id)
    return replace(library, indexes=indexes, mismatched=frozenset(mismatched), checksums=checksums)


def _stored_now(services: Services, product_id: int) -> _Stored | None:
    """The product's current version as committed now (a session of its own: no older snapshot)."""
    with services.session_factory() as fresh:
        return _current_versions(fresh).get(product_id)


def _latest(
    services: Services, library: ManualLibrary, product_id: int, stored: _Stored | None
) -> ManualIndex | None:
    """The product's current index: the live one, or the stored version another process wrote since."""
    if stored is None or not artifact_store.is_stored(stored.path, stored.checksum):
        return library.index_for(product_id)
    if library.checksums.get(product_id) == stored.checksum:
        return library.index_for(product_id)
    try:
        return _load_stored(services, library, stored)
    except IndexMismatchError:
        return None


def refresh(services: Services) -> None:
    """Load the versions other processes recorded since (keeps the engines and unchanged indexes)."""
    with _WRITE_LOCK:
        library: ManualLibrary | None = services.models.get(MANUALS)
        if library is None:
            return
        services.models.swap(MANUALS, load_saved_indexes(services, library))


def current_library(services: Services) -> ManualLibrary:
    """The library in the registry; loaded (engines + saved indexes) when the registry has none."""
    library = services.models.get(MANUALS)
    if library is None:
        library = load_saved_indexes(services, load_engines(services))
        services.models.swap(MANUALS, library)
    return library


MANUALS = RegistryKey[ManualLibrary]("manuals")


@dataclass(frozen=True)
class ParsedManual:
    """A manual read in the bounded parse process: its chunks, its structure and page count."""

    pieces: list[tuple[int, str, str, int]]
    structure: dict[str, Any]
    page_count: int


def _limits(services: Services) -> tuple[Limits, ProcessLimits]:
    s = services.settings
    return (
        Limits(
            max_bytes=s.max_manual_bytes,
            max_pages=s.max_manual_pages,
            max_decoded_bytes=s.max_manual_decoded_bytes,
        ),
        ProcessLimits(
            cpu_s=s.manual_parse_cpu_s,
            wall_s=s.manual_parse_wall_s,
            memory_bytes=s.manual_parse_memory_mb * 1024 * 1024,
        ),
    )


def _splitter() -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(
        chunk_size=500, chunk_overlap=80, separators=["\n\n", "\n", ". ", " ", ""]
    )


def structure_pieces(structure: Structure) -> list[tuple[int, str, str, int]]:
    """(page, "section > part", text, ordinal) chunks: one run per defect part and page, then the rest."""
    splitter = _splitter()
    out: list[tuple[int, str, str, int]] = []

    def emit(page: int, section: str, text: str) -> None:
        for piece in splitter.split_text(text):
            if piece.strip():
                out.append((page, section[:500], piece.strip(), len(out)))

    for block in structure.other:
        if block.lines:
            emit(block.page, _safe_label(block.heading), "\n".join(block.lines))
    for section in structure.sections:
        title = _safe_label(section.title)
        for desc in section.description:
            emit(desc.page, f"{title}{SECTION_SEP}증상", desc.text)
        for kind in PART_KINDS:
            # The manual's own word for the part when it reads as that part, else the plain one.
            label = _safe_label(section.labels.get(kind, ""))
            if section_kind(label) != kind:
                label = KIND_LABELS[kind]
            for part in section.parts.get(kind, []):
                emit(part.page, f"{title}{SECTION_SEP}{label}", part.text)
    return out


def _safe_label(label: str) -> str:
    return label.replace(">", "›").strip()


def parse_manual(data: bytes, services: Services) -> ParsedManual:
    """Read a PDF/DOCX in the bounded process and find its structure; ManualFileError when unusable."""
    limits, process = _limits(services)
    document = parse_bounded(data, limits, process)
    structure = parse_structure(document.lines)
    pieces = structure_pieces(structure)
    if not pieces:
        raise ManualFileError("no_text")
    return ParsedManual(
        pieces=pieces,
        structure={
            "kind": document.kind,
            "sections": [s.to_json() for s in structure.sections],
            "warnings": list(structure.warnings),
        },
        page_count=document.page_count,
    )


def failure_text(exc: BaseException) -> str:
    """What the manual row keeps as its error: a translation key for known reasons, else the message."""
    if isinstance(exc, ManualFileError):
        return f"manuals.reason.{exc.code}" + (f"|{exc.detail}" if exc.detail else "")
    return f"{type(exc).__name__}: {exc}"


def _index_chunks(manual: Manual, pieces: Iterable[tuple[int, str, str, int]]) -> list[IndexedChunk]:
    """Index chunks of one manual; the id "<manual id>-<ordinal>" names its ManualChunk row."""
    return [
        IndexedChunk(f"{manual.id}-{ordinal}", manual.id, manual.product_id, page, section[:500], text)
        for page, section, text, ordinal in pieces
    ]


def _write_chunks(session: Session, manual: Manual, pieces: Iterable[tuple[int, str, str, int]]) -> None:
    """Replace the manual's chunk rows (flushed, not committed)."""
    session.execute(delete(ManualChunk).where(ManualChunk.manual_id == manual.id))
    session.add_all(
        ManualChunk(
            manual_id=manual.id,
            product_id=manual.product_id,
            ordinal=ordinal,
            page=page,
            section=section[:500],
            text=text,
        )
        for page, section, text, ordinal in pieces
    )
    session.flush()


def _record_artifact(
    session: Session,
    services: Services,
    *,
    product_id: int,
    index: ManualIndex | None,
    job_id: int | None,
    published: artifact_store.Published | None,
) -> None:
    """Mark the product's previous artifact rows old and record the new version (none when emptied)."""
    emptied = index is None or len(index) == 0 or published is None
    record_current_artifact(
        session,
        kind=KIND,
        product_id=product_id,
        version=None if emptied or published is None else published.key.rsplit("/", 1)[-1],
        path=published.key if published is not None else "",
        checksum=published.checksum if published is not None else "",
        meta={}
        if index is None
        else {
            "embedder_id": index.embedder.embedder_id,
            "manual_ids": sorted(int(m) for m in index.manual_ids()),
            "chunks": len(index),
        },
        job_id=job_id,
        created_at=utcnow(),
    )


def _publish(services: Services, product_id: int, index: ManualIndex) -> artifact_store.Published | None:
    """Store the index as a new version (None when it is empty: the product then has no index)."""
    if len(index) == 0:
        return None
    version = utcnow().strftime("%Y%m%d%H%M%S%f")
    key = artifact_store.version_key(KIND, scope_of(product_id), version)
    directory = artifact_store.local_dir(services.settings, key)
    index.save(directory)
    return artifact_store.publish(services.storage, directory, key)


def _discard(services: Services, published: artifact_store.Published | None) -> None:
    """Delete a version that never became current (its commit failed)."""
    if published is None:
        return
    for key in list(services.storage.list(published.key + "/")):
        services.storage.delete(key)
    shutil.rmtree(artifact_store.local_dir(services.settings, published.key), ignore_errors=True)


def _commit_version(
    session: Session,
    services: Services,
    lease: leases.HeldLease,
    library: ManualLibrary | None,
    *,
    product_id: int,
    index: ManualIndex | None,
    job_id: int | None,
    write_rows: Callable[[], None],
) -> artifact_store.Published | None:
    """Store ``index`` as the product's new version and commit it with the rows ``write_rows`` changes, under
    the product's lease (``None``: the rows change, the current version stays). A failed commit deletes the
    version it stored; after the commit this process serves the new index at once."""
    published = _publish(services, product_id, index) if index is not None else None
    try:
        write_rows()
        if index is not None:
            _record_artifact(
                session, services, product_id=product_id, index=index, job_id=job_id, published=published
            )
        lease.confirm(session)
        session.commit()
    except BaseException:
        session.rollback()
        _discard(services, published)
        raise
    if library is not None and index is not None:
        checksum = published.checksum if published else ""
        services.models.swap(MANUALS, library.with_index(product_id, index, checksum))
    return published


def _prune(
    services: Services, product_id: int, published: artifact_store.Published | None, replaced: str
) -> None:
    """After a commit: drop the versions older than the one just replaced, and the pre-version folder."""
    shutil.rmtree(product_dir(services, product_id), ignore_errors=True)
    keep = {v for v in (published.key.rsplit("/", 1)[-1] if published else "", replaced) if v}
    if keep:
        artifact_store.prune(services.storage, services.settings, KIND, scope_of(product_id), keep)


def _version_of(stored: _Stored | None) -> str:
    return stored.path.rsplit("/", 1)[-1] if stored is not None and stored.checksum else ""


@contextmanager
def _product_lease(
    services: Services, product_id: int, *, wait_s: float, on_wait: Callable[[], None] | None = None
) -> Iterator[leases.HeldLease]:
    """Hold the product's index lease (the one writer of its index among all processes)."""
    settings = services.settings
    with leases.hold(
        services.session_factory,
        f"{KIND}:{scope_of(product_id)}",
        ttl_s=settings.job_stale_after_s,
        heartbeat_s=settings.job_heartbeat_s,
        wait_s=wait_s,
        on_wait=on_wait,
    ) as lease:
        yield lease


def _existing_manual_ids(services: Services, product_id: int) -> set[int]:
    """The product's manuals as committed now (another process may have added or deleted some)."""
    with services.session_factory() as fresh:
        return set(fresh.scalars(select(Manual.id).where(Manual.product_id == product_id)))


def reset_abandoned(session: Session, *, stale_after_s: float) -> list[int]:
    """Put the manuals left "indexing" by an indexer that no longer runs back to pending; their ids.

    A manual whose indexing job still runs in a live process (owner running, heartbeat fresh) is left as it
    is: another server or a job worker is indexing it right now and will finish it. Commits.
    """
    rows = session.execute(
        select(Manual.id, Manual.index_job_id, DeploymentJob)
        .outerjoin(DeploymentJob, Manual.index_job_id == DeploymentJob.id)
        .where(Manual.status == "indexing")
    ).all()
    reset: list[int] = []
    now = db_now(session)  # one read of the database's clock for every row
    for manual_id, job_id, job in rows:
        if job is not None and job_is_live(job, stale_after_s=stale_after_s, now=now):
            continue
        same_job = Manual.index_job_id.is_(None) if job_id is None else Manual.index_job_id == job_id
        # Only while nobody took the manual up again meanwhile (a new job writes its own id).
        done = session.execute(
            update(Manual)
            .where(Manual.id == manual_id, Manual.status == "indexing", same_job)
            .values(status="pending", error="")
        ).rowcount  # type: ignore[attr-defined]
        if done:
            reset.append(manual_id)
    session.commit()
    if reset:
        logger.info("manuals %s were left indexing by a stopped indexer: pending again", reset)
    return reset


def indexer_is_live(session: Session, manual: Manual, *, stale_after_s: float) -> bool:
    """True while the manual is being indexed by a job that runs in a live process."""
    if manual.status != "indexing" or manual.index_job_id is None:
        return False
    job = session.get(DeploymentJob, manual.index_job_id)
    return job is not None and job_is_live(job, stale_after_s=stale_after_s, now=db_now(session))


def _set_indexed(manual: Manual, parsed: ParsedManual) -> None:
    """Indexed, with what was understood; a manual without defect sections says so in its error."""
    manual.status, manual.indexed_at = "indexed", utcnow()
    manual.structure, manual.page_count = parsed.structure, parsed.page_count
    manual.error = "manuals.reason.no_sections" if "no_sections" in parsed.structure["warnings"] else ""


def _mark_failed(session: Session, manual_id: int, error: str) -> None:
    session.rollback()
    manual = session.get(Manual, manual_id)
    if manual is not None:
        manual.status, manual.error = "failed", error[:2000]
        session.commit()


def index_manual(
    session: Session,
    *,
    services: Services,
    manual_id: int,
    job_id: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Index one manual into its product's index (its old chunks are replaced); returns the chunk count.

    Status goes pending -> indexing -> indexed (or failed, with the error kept on the manual). The
    embedding runs outside any database transaction and before the product's lease is taken; under the
    lease the manual is merged into the newest stored version and the rows are written in one short commit.
    """
    report = progress or (lambda fraction, stage: None)
    manual = session.get(Manual, manual_id)
    if manual is None:
        raise LookupError(f"manual {manual_id} no longer exists")
    previous_status = manual.status
    manual.status, manual.error = "indexing", ""
    if job_id is not None:
        manual.index_job_id = job_id
    session.commit()
    product_id = manual.product_id
    try:
        report(0.1, "parse")
        parsed = parse_manual(services.storage.get(manual.object_key), services)
        pieces = parsed.pieces
        report(0.3, "embed")
        with _WRITE_LOCK:
            library = current_library(services)
            embedded = library.empty_index()
            embedded.add_manual(manual.id, _index_chunks(manual, pieces))
            report(0.8, "merge")
            with _product_lease(
                services, product_id, wait_s=_JOB_LEASE_WAIT_S, on_wait=lambda: report(0.8, "wait")
            ) as lease:
                if manual_id not in _existing_manual_ids(services, product_id):
                    raise LookupError(f"manual {manual_id} was deleted while it was being indexed")
                stored = _stored_now(services, product_id)
                existing = _latest(services, library, product_id, stored)
                index = existing.copy() if existing is not None else library.empty_index()
                index.add_embedded(manual.id, embedded)
                report(0.9, "save")

                def write_rows() -> None:
                    _write_chunks(session, manual, pieces)
                    _set_indexed(manual, parsed)

                published = _commit_version(
                    session,
                    services,
                    lease,
                    library,
                    product_id=product_id,
                    index=index,
                    job_id=job_id,
                    write_rows=write_rows,
                )
            _prune(services, product_id, published, _version_of(stored))
    except JobCancelled:
        session.rollback()
        row = session.get(Manual, manual_id)
        if row is not None:
            row.status = previous_status if previous_status != "indexing" else "pending"
            session.commit()
        raise
    except ManualFileError as exc:  # an unusable file: its reason is on the manual, no stack trace
        logger.warning("manual %s cannot be used: %s", manual_id, exc)
        _mark_failed(session, manual_id, failure_text(exc))
        raise
    except Exception as exc:
        logger.exception("indexing manual %s failed", manual_id)
        _mark_failed(session, manual_id, failure_text(exc))
        raise
    return len(pieces)


def rebuild_product(
    session: Session,
    *,
    services: Services,
    product_id: int,
    job_id: int | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Re-index every manual of a product from scratch, beside the live index, then swap it in.

    A manual whose PDF cannot be read is marked failed and left out; the others are indexed. A manual
    another process indexed or deleted while this ran is kept or left out as that process left it.
    Cancelling (JobCancelled from ``progress``) leaves the live index and the rows unchanged.
    """
    report = progress or (lambda fraction, stage: None)
    manuals = list(session.scalars(select(Manual).where(Manual.product_id == product_id).order_by(Manual.id)))
    parsed: dict[int, ParsedManual] = {}
    failed: dict[int, str] = {}
    for i, manual in enumerate(manuals):
        report(0.4 * i / max(1, len(manuals)), "parse")
        try:
            parsed[manual.id] = parse_manual(services.storage.get(manual.object_key), services)
        except Exception as exc:  # one unreadable manual must not block the product's others
            logger.exception("manual %s cannot be parsed", manual.id)
            failed[manual.id] = failure_text(exc)
    with _WRITE_LOCK:
        library = current_library(services)
        index = library.empty_index()
        for i, manual in enumerate(manuals):
            report(0.4 + 0.5 * i / max(1, len(manuals)), "embed")
            if manual.id in parsed:
                index.add_manual(manual.id, _index_chunks(manual, parsed[manual.id].pieces))
        report(0.92, "merge")
        with _product_lease(
            services, product_id, wait_s=_JOB_LEASE_WAIT_S, on_wait=lambda: report(0.92, "wait")
        ) as lease:
            present = _existing_manual_ids(services, product_id)
            rebuilt = {m.id for m in manuals}
            for gone in rebuilt - present:
                index.remove_manual(gone)
            stored = _stored_now(services, product_id)
            latest = _latest(services, library, product_id, stored)
            if latest is not None:
                for kept in latest.manual_ids():
                    if int(kept) in present - rebuilt:
                        index.add_embedded(kept, latest)
            report(0.95, "save")

            def write_rows() -> None:
                for manual in manuals:
                    if manual.id not in present:
                        continue
                    if manual.id in failed:
                        manual.status, manual.error = "failed", failed[manual.id][:2000]
                        session.execute(delete(ManualChunk).where(ManualChunk.manual_id == manual.id))
                    else:
                        _write_chunks(session, manual, parsed[manual.id].pieces)
                        _set_indexed(manual, parsed[manual.id])

            published = _commit_version(
                session,
                services,
                lease,
                library,
                product_id=product_id,
                index=index,
                job_id=job_id,
                write_rows=write_rows,
            )
        _prune(services, product_id, published, _version_of(stored))
    indexed = len(rebuilt & present) - len(failed.keys() & present)
    return {"manuals": indexed, "failed": len(failed.keys() & present), "chunks": len(index)}


def delete_manual(session: Session, *, services: Services, manual: Manual) -> None:
    """Delete the manual's row and chunk rows and drop its index entries; commits (pending changes too).

    The new index version is published before the commit and the registry swapped after it, so a failure
    leaves the manual in place and searchable. ConflictError when another process keeps the product's
    index lease for longer than a dead holder's lease takes to expire.
    """
    product_id, manual_id = manual.product_id, manual.id
    try:
        with (
            _WRITE_LOCK,
            _product_lease(services, product_id, wait_s=services.settings.job_stale_after_s + 5.0) as lease,
        ):
            library: ManualLibrary | None = services.models.get(MANUALS)
            stored = _stored_now(services, product_id)
            has_saved = stored is not None or (product_dir(services, product_id) / INDEX_FILE).is_file()
            if library is None and has_saved:
                library = current_library(services)
            existing = _latest(services, library, product_id, stored) if library is not None else None
            index: ManualIndex | None = None
            if existing is not None and str(manual_id) in existing.manual_ids():
                index = existing.copy()
                index.remove_manual(manual_id)

            def write_rows() -> None:
                session.execute(delete(ManualChunk).where(ManualChunk.manual_id == manual_id))
                session.delete(manual)

            published = _commit_version(
                session,
                services,
                lease,
                library,
                product_id=product_id,
                index=index,
                job_id=None,
                write_rows=write_rows,
            )
    except leases.LeaseUnavailableError as exc:  # raised only while waiting, before anything was written
        raise ConflictError("errors.manual_index_busy", id=manual_id) from exc
    if index is not None:
        _prune(services, product_id, published, _version_of(stored))
