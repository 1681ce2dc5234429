"""A finished job's one-line summary as a translation key with parameters, from its kind and stored result."""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Any

from app.core.reasons import Reason, ReasonParam


def _count(value: Any) -> int:
    """A count stored as a number, or the length of a stored list / mapping."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Sized) and not isinstance(value, str):
        return len(value)
    return 0


def job_summary(kind: str, result: Mapping[str, Any] | None) -> Reason | None:
    """What a job did, e.g. ``jobs.summary.anomaly_model`` with built / failed counts; None if nothing.

    Computed when shown, so jobs recorded before summaries existed read the same way. A result without
    the kind's fields (a handler of another shape) has no summary: the page lists its fields as they are.
    """
    if not result:
        return None
    params: dict[str, ReasonParam]
    if kind == "search_index" and "defect_images" in result:
        params = {
            "defect_images": _count(result.get("defect_images")),
            "normal_images": _count(result.get("normal_images")),
            "products": _count(result.get("products")),
            "skipped": _count(result.get("skipped_images")),
        }
        return Reason("jobs.summary.search_index", params)
    if kind == "anomaly_model" and "built" in result:
        params = {"built": _count(result.get("built")), "failed": _count(result.get("failed"))}
        return Reason("jobs.summary.anomaly_model", params)
    if kind == "manual_index" and "manual_id" in result:
        params = {"manual_id": _count(result.get("manual_id")), "chunks": _count(result.get("chunks"))}
        return Reason("jobs.summary.manual_one", params)
    if kind == "manual_index" and "manuals" in result:
        params = {key: _count(result.get(key)) for key in ("products", "manuals", "chunks", "failed")}
        return Reason("jobs.summary.manual_index", params)
    return None
