"""Manual bodies: the shared read model (from the catalog schemas) plus indexing details."""

from __future__ import annotations

from app.catalog.schemas import ManualRead as _BaseManualRead


class ManualRead(_BaseManualRead):
    """A manual with its indexing status, chunk count and the job indexing it (after an upload)."""

    chunk_count: int = 0
    index_job_id: int | None = None


__all__ = ["ManualRead"]
