"""How a stored answer is shown: its text cut into plain and flagged (unsupported) pieces."""

from __future__ import annotations

from collections.abc import Sequence


def marked_segments(text: str, flagged: Sequence[str]) -> list[tuple[str, bool]]:
    """``text`` as (piece, is_unsupported) pairs, in order; the flagged sentences are the marked pieces."""
    segments: list[tuple[str, bool]] = []
    rest = text
    while rest:
        hits = [(rest.find(s), s) for s in flagged if s and s in rest]
        if not hits:
            segments.append((rest, False))
            break
        start, sentence = min(hits, key=lambda hit: (hit[0], -len(hit[1])))
        if start:
            segments.append((rest[:start], False))
        segments.append((sentence, True))
        rest = rest[start + len(sentence) :]
    return segments
