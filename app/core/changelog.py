"""The change log: catalog changes in one ordered table that every server applies to its live engines.

A server that registers or deletes an image (or changes preprocessing or model settings) appends a row;
every server polls the rows past the last id it applied and applies them one by one (O(1) each: a gallery
add or remove, never a rebuild). A gallery snapshot in the object storage records the last id it includes,
so a server that loads it replays only the rows after that.

Ids are given out when a row is inserted, not when it commits: a row with a lower id may become visible
after a higher one. The cursor remembers such holes for `GAP_TTL_S` and asks for them again, so a late
commit is still applied; appliers are idempotent (an add of an image already there, a remove of one
already gone, are skipped), so seeing a row twice is harmless.
"""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.db.tables import ChangeLog

IMAGE_ADDED = "image.added"
IMAGE_REMOVED = "image.removed"
PREPROCESSING_CHANGED = "preprocessing.changed"
MODEL_SETTINGS_CHANGED = "model_settings.changed"
# How long a hole in the ids is asked for again (a transaction still open that long is a stuck one).
GAP_TTL_S = 60.0
# Rows read per poll (the rest come at the next poll).
BATCH = 500

ORIGIN = f"server@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def record(
    session: Session,
    kind: str,
    *,
    product_id: int | None = None,
    entity_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> ChangeLog:
    """Add one row to the session (the caller commits, with the change itself when it can)."""
    row = ChangeLog(
        kind=kind, product_id=product_id, entity_id=entity_id, origin=ORIGIN, payload=payload or {}
    )
    session.add(row)
    return row


def last_id(session: Session) -> int:
    """The newest id in the log (0 when empty)."""
    return int(session.scalar(select(func.max(ChangeLog.id))) or 0)


def trim(session: Session, up_to_id: int) -> int:
    """Delete the rows up to `up_to_id` (a stored gallery version holds them all); returns how many."""
    result = session.execute(delete(ChangeLog).where(ChangeLog.id <= up_to_id))
    return int(getattr(result, "rowcount", 0) or 0)


def encode_vector(vector: np.ndarray | None) -> str | None:
    """A float32 vector as base64 (for a row's payload)."""
    if vector is None:
        return None
    return base64.b64encode(np.asarray(vector, dtype=np.float32).reshape(-1).tobytes()).decode("ascii")


def decode_vector(text: str | None) -> np.ndarray | None:
    """The vector `encode_vector` wrote."""
    if not text:
        return None
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()


@dataclass(frozen=True)
class Change:
    """One row as the appliers see it (detached from any session)."""

    id: int
    kind: str
    product_id: int | None
    entity_id: int | None
    origin: str
    payload: dict[str, Any]


@dataclass
class ChangeCursor:
    """How far one engine has applied the log: the highest id seen, and holes below it to ask again."""

    position: int = 0
    gaps: dict[int, float] = field(default_factory=dict)

    def poll(self, session: Session, *, limit: int = BATCH) -> list[Change]:
        """The rows not applied yet, in id order; advances the cursor past them."""
        now = time.monotonic()
        self.gaps = {i: t for i, t in self.gaps.items() if now - t < GAP_TTL_S}
        rows = list(
            session.scalars(
                select(ChangeLog).where(ChangeLog.id > self.position).order_by(ChangeLog.id).limit(limit)
            )
        )
        if self.gaps:
            rows += list(session.scalars(select(ChangeLog).where(ChangeLog.id.in_(sorted(self.gaps)))))
        found = {r.id for r in rows}
        newest = max((r.id for r in rows if r.id > self.position), default=self.position)
        for missing in range(self.position + 1, newest):
            if missing not in found:
                self.gaps.setdefault(missing, now)
        for seen in found:
            self.gaps.pop(seen, None)
        self.position = newest
        return [
            Change(r.id, r.kind, r.product_id, r.entity_id, r.origin, dict(r.payload or {}))
            for r in sorted(rows, key=lambda r: r.id)
        ]


def ids_of(changes: Sequence[Change], kind: str) -> list[int]:
    """The entity ids of the changes of one kind."""
    return [c.entity_id for c in changes if c.kind == kind and c.entity_id is not None]
