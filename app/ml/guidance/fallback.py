"""One fallback for every backend, plain or streamed: any failure, timeout or unparseable answer becomes the
extractive answer marked ``is_fallback`` with a machine-readable ``fallback_reason``."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from app.ml.guidance.extractive import ExtractiveGenerator
from app.ml.guidance.prompt import result_from_text
from app.ml.guidance.types import (
    Generator,
    GeneratorError,
    GuidanceRequest,
    GuidanceResult,
    StreamingGenerator,
)

logger = logging.getLogger(__name__)


def fallback_result(
    extractive: ExtractiveGenerator,
    request: GuidanceRequest,
    *,
    reason: str,
    requested: str,
    raw_text: str | None = None,
    started: float | None = None,
) -> GuidanceResult:
    """The extractive answer marked as a fallback for ``requested``."""
    res = extractive.generate(request)
    elapsed = int((time.perf_counter() - started) * 1000) if started is not None else res.elapsed_ms
    return dataclasses.replace(
        res,
        is_fallback=True,
        fallback_reason=reason,
        requested_generator=requested,
        raw_text=raw_text,
        elapsed_ms=elapsed,
    )


def _recover(
    error: BaseException | None,
    generator: Generator,
    request: GuidanceRequest,
    extractive: ExtractiveGenerator,
    *,
    started: float,
    written: str | None = None,
) -> GuidanceResult:
    """The fallback answer for a backend's failure (``written``: what a stream had sent before it)."""
    if isinstance(error, GeneratorError):
        logger.warning("generator %s failed: %s", generator.name, error)
        return fallback_result(
            extractive,
            request,
            reason=error.reason,
            requested=generator.name,
            raw_text=error.raw_text or written,
            started=started,
        )
    logger.error("generator %s crashed", generator.name, exc_info=error)
    return fallback_result(extractive, request, reason="error", requested=generator.name, started=started)


def generate_with_fallback(
    generator: Generator,
    request: GuidanceRequest,
    extractive: ExtractiveGenerator | None = None,
    timeout_s: float | None = None,
) -> GuidanceResult:
    """Run ``generator``; on error, timeout or unparseable output return the extractive answer.

    Args:
        generator: any backend.
        request: the inspection.
        extractive: the fallback (a default ExtractiveGenerator when None).
        timeout_s: overall wall-time limit for the backend (None = rely on the backend's own).

    Returns:
        The backend's result, or the extractive result with ``is_fallback=True`` and ``fallback_reason``.
    """
    extractive = extractive or ExtractiveGenerator()
    if isinstance(generator, ExtractiveGenerator):
        return generator.generate(request)
    t0 = time.perf_counter()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = generator.generate(request)
        except BaseException as exc:  # reported through the fallback
            box["error"] = exc

    # A daemon thread: a hung backend must not block the request (the thread ends on its own timeout).
    worker = threading.Thread(target=run, daemon=True, name=f"guidance-{generator.name}")
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        logger.warning("generator %s timed out after %.1fs", generator.name, timeout_s or 0.0)
        return fallback_result(extractive, request, reason="timeout", requested=generator.name, started=t0)
    if "result" in box:
        res: GuidanceResult = box["result"]
        return dataclasses.replace(res, elapsed_ms=int((time.perf_counter() - t0) * 1000))
    return _recover(box.get("error"), generator, request, extractive, started=t0)


def stream_with_fallback(
    generator: Generator,
    request: GuidanceRequest,
    extractive: ExtractiveGenerator | None = None,
    timeout_s: float = 120.0,
) -> Iterator[str | GuidanceResult]:
    """Text pieces as the backend writes them, then exactly one result (the parsed answer or the fallback).

    A backend that cannot stream (the extractive one) yields only its result, through
    :func:`generate_with_fallback`.

    Args:
        generator: any backend.
        request: the inspection.
        extractive: the fallback (a default ExtractiveGenerator when None).
        timeout_s: wall-time limit, checked after every piece.

    Yields:
        ``str`` pieces, then one :class:`GuidanceResult`.
    """
    extractive = extractive or ExtractiveGenerator()
    if isinstance(generator, ExtractiveGenerator) or not isinstance(generator, StreamingGenerator):
        yield generate_with_fallback(generator, request, extractive, timeout_s=timeout_s)
        return
    started = time.perf_counter()
    pieces: list[str] = []
    try:
        for piece in generator.stream(request):
            pieces.append(piece)
            yield piece
            if time.perf_counter() - started > timeout_s:
                raise GeneratorError("timeout", f"exceeded {timeout_s:.0f}s", "".join(pieces))
        elapsed = int((time.perf_counter() - started) * 1000)
        result = result_from_text("".join(pieces), request, generator=generator.name, elapsed_ms=elapsed)
    except Exception as exc:  # every failure is answered by the fallback
        result = _recover(exc, generator, request, extractive, started=started, written="".join(pieces))
    yield result
