"""Manual bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class ManualRead(BaseModel):
    """An uploaded manual with its indexing status, chunk count and the job indexing it (after an upload)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    product_id: int
    file_name: str
    size_bytes: int
    page_count: int
    status: str
    error: str
    created_at: datetime
    indexed_at: datetime | None
    chunk_count: int = 0
    index_job_id: int | None = None
