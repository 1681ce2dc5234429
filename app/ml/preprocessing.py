"""Per-product image preprocessing shared by similar-image search and anomaly detection.

The same `apply_preprocessing` runs on gallery images and on query images, so a product's options must be
identical at build time and at query time; `PreprocessingOptions.key()` is stored next to each built
artifact and compared to detect stale indexes.

Steps run in a fixed order (only the enabled ones): grayscale -> smooth -> contrast -> equalize ->
normalize. Smoothing comes first so the contrast and equalisation steps do not amplify sensor noise;
normalisation comes last so the output has a fixed brightness/spread whatever ran before it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image, ImageFilter, ImageOps

_KEY_LETTERS = {"grayscale": "g", "contrast": "c", "equalize": "e", "smooth": "s", "normalize": "n"}
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}

# Autocontrast ignores this percentage of darkest/brightest pixels so a few specular highlights or dead
# pixels do not defeat the stretch.
CONTRAST_CUTOFF_PERCENT = 1.0
SMOOTH_RADIUS = 1.0
# Normalised images have this per-channel mean and standard deviation (in uint8 units); 3 std fit in range.
NORMALIZED_MEAN = 128.0
NORMALIZED_STD = 40.0


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    if value is None:
        return False
    raise ValueError(f"preprocessing option {name!r} must be a boolean, got {value!r}")


@dataclass(frozen=True)
class PreprocessingOptions:
    """Which preprocessing steps a product uses (all off by default).

    Args:
        grayscale: Drop colour (to luminance, then back to 3 channels).
        contrast: Autocontrast with a 1 % cutoff at both ends, preserving hue.
        equalize: Histogram equalisation of the luminance channel.
        smooth: Mild Gaussian blur (radius 1 px) against sensor noise and JPEG artefacts.
        normalize: Per-channel standardisation to a fixed mean and spread (removes exposure/gain changes).
    """

    grayscale: bool = False
    contrast: bool = False
    equalize: bool = False
    smooth: bool = False
    normalize: bool = False

    def key(self) -> str:
        """Stable short string such as "g0c1e0s0n0", stored with artifacts to detect staleness."""
        return "".join(f"{_KEY_LETTERS[f.name]}{int(getattr(self, f.name))}" for f in fields(self))

    @property
    def is_identity(self) -> bool:
        """True when no step is enabled (the image only gets converted to RGB)."""
        return not any(getattr(self, f.name) for f in fields(self))

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> PreprocessingOptions:
        """Build from a dict (settings JSON or form data); unknown keys are ignored, missing ones are off.

        Accepts booleans, 0/1 and the strings "true"/"false"/"on"/"off"/"1"/"0"/"yes"/"no".
        """
        kwargs = {f.name: _as_bool(f.name, values[f.name]) for f in fields(cls) if f.name in values}
        return cls(**kwargs)

    @classmethod
    def from_key(cls, key: str) -> PreprocessingOptions:
        """Inverse of `key()`."""
        flags: dict[str, bool] = {}
        for name, letter in _KEY_LETTERS.items():
            pos = key.find(letter)
            if pos < 0 or pos + 1 >= len(key) or key[pos + 1] not in "01":
                raise ValueError(f"not a preprocessing key: {key!r}")
            flags[name] = key[pos + 1] == "1"
        return cls(**flags)

    def to_dict(self) -> dict[str, bool]:
        """Plain dict for JSON settings."""
        return {f.name: bool(getattr(self, f.name)) for f in fields(self)}


def decode_image(data: bytes, max_side: int | None = None) -> Image.Image:
    """Decode uploaded bytes to an RGB image, applying the EXIF orientation phones write.

    Args:
        data: Encoded image (JPEG, PNG, BMP, TIFF, WebP ...).
        max_side: If set, JPEGs are decoded at a reduced scale (libjpeg DCT scaling, much faster for
            12-megapixel phone photos) whose longer side is still >= max_side; finish with
            `apply_preprocessing(..., max_side=...)` for an exact size.

    Raises:
        ValueError: When the bytes are not an image Pillow can read.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if max_side is not None and opened.format == "JPEG":
                opened.draft("RGB", (max_side, max_side))
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image: {exc}") from exc
    return image.convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on white: transparent regions must not turn black and look like a dark defect.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit/float industrial camera frames: scale the actual range to 8 bit instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if high <= low else (array - low) * (255.0 / (high - low))
        return Image.fromarray(np.round(scaled).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def _equalize_luminance(image: Image.Image) -> Image.Image:
    # Equalising R, G and B independently shifts hues; equalising only Y keeps colours plausible.
    y, cb, cr = image.convert("YCbCr").split()
    return Image.merge("YCbCr", (ImageOps.equalize(y), cb, cr)).convert("RGB")


def _normalize(image: Image.Image) -> Image.Image:
    array = np.asarray(image, dtype=np.float64)
    mean = array.mean(axis=(0, 1), keepdims=True)
    std = array.std(axis=(0, 1), keepdims=True)
    # Flat channels (std 0) map to the target mean instead of dividing by zero.
    z = np.divide(array - mean, std, out=np.zeros_like(array), where=std > 1e-6)
    out = np.clip(np.round(z * NORMALIZED_STD + NORMALIZED_MEAN), 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def apply_preprocessing(
    image: Image.Image, options: PreprocessingOptions, max_side: int | None = None
) -> Image.Image:
    """Apply a product's preprocessing to one image; deterministic, never modifies its input.

    Args:
        image: Any Pillow image (RGB, L, RGBA, P, 16-bit ...).
        options: The product's enabled steps.
        max_side: If set, first shrink (keeping the aspect ratio) so the longer side is at most this.
            The steps are then ~5x cheaper on camera-sized photos and the smoothing radius means the
            same thing whatever the camera resolution. The application should use one constant value
            (it is not part of `options.key()`).

    Returns:
        A new RGB image (same size, or shrunk to max_side).
    """
    out = _to_rgb(image)
    if max_side is not None and max(out.size) > max_side:
        scale = max_side / max(out.size)
        size = (max(1, round(out.width * scale)), max(1, round(out.height * scale)))
        out = out.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if options.grayscale:
        out = out.convert("L").convert("RGB")
    if options.smooth:
        out = out.filter(ImageFilter.GaussianBlur(radius=SMOOTH_RADIUS))
    if options.contrast:
        out = ImageOps.autocontrast(out, cutoff=CONTRAST_CUTOFF_PERCENT, preserve_tone=True)
    if options.equalize:
        out = _equalize_luminance(out)
    if options.normalize:
        out = _normalize(out)
    return out
