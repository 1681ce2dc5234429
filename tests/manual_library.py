"""Shared helpers for manual-indexing and guidance tests: the real text engines, loaded once per process.

Kiwi + the packaged multilingual USE take ~5 s to load; every test app gets the same (read-only)
engines swapped into its registry instead of loading its own.
"""

from __future__ import annotations

import functools
from pathlib import Path

from app.core.services import Services
from app.demo.generator import DemoManifest, generate_demo_dataset
from app.manuals.indexing import MANUALS, ManualLibrary
from app.ml.retriever import KoreanTokenizer
from app.ml.text_embedder import UseTextEmbedder


@functools.cache
def _engines() -> tuple[UseTextEmbedder, KoreanTokenizer]:
    return UseTextEmbedder.load(), KoreanTokenizer()


def install_library(services: Services) -> ManualLibrary:
    """Put an empty library with the shared real engines into the app's registry."""
    embedder, tokenizer = _engines()
    library = ManualLibrary(embedder=embedder, tokenizer=tokenizer)
    services.models.swap(MANUALS, library)
    return library


@functools.cache
def demo_dataset(root: Path) -> DemoManifest:
    """The small demo data set (3 products, Korean PDF manuals), generated once per root."""
    return generate_demo_dataset(root, seed=0, size=64, normals_per_product=2, defects_per_type=1)
