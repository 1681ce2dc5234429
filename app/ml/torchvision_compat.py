"""Make pure-Python torchvision importable next to a CPU torch wheel.

The only torchvision that fits the pinned CPU torch 2.13.0 is a CUDA build whose C++ extension does not
load, so `import torchvision` fails with "operator torchvision::nms does not exist" (and with it
open_clip, timm and anomalib). Declaring the two op schemas that torchvision registers fakes for at import
time lets its pure-Python parts (transforms, model definitions, feature extraction) load. Its C++ ops
(nms, roi_align, decoding) still do not work; DefectLens needs none of them. On a server whose
torchvision works, `torch.ops.torchvision.nms` exists and this module does nothing.

Import this module before anything that imports torchvision.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_library: torch.library.Library | None = None


def _has_nms() -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute lookup raises when the op is missing
    except (AttributeError, RuntimeError):
        return False
    return True


def ensure_torchvision_importable() -> bool:
    """Declare torchvision's missing op schemas when needed; return True if a fix was applied."""
    global _library
    if _library is not None or _has_nms():
        return False
    lib = torch.library.Library("torchvision", "DEF")  # type: ignore[no-untyped-call]
    lib.define("nms" + _SCHEMA)  # type: ignore[no-untyped-call]
    lib.define("qnms" + _SCHEMA)  # type: ignore[no-untyped-call]
    _library = lib
    logger.info("torchvision C++ ops unavailable; declared nms/qnms schemas for pure-Python torchvision")
    return True


ensure_torchvision_importable()
