"""Pre- and post-processing: the one spec the Python, Kotlin and Swift code all follow.

Spec version :data:`SPEC_VERSION` (documented in ``docs/bundle-contract.md`` section 2):

1. Decode to 8-bit RGB (grayscale, alpha-channel and tiny images are refused, not guessed at).
2. Optionally crop to the person box enlarged by ``crop_margin`` (10%) on each side, clipped to the image.
3. Resize to ``height`` rows (default 1024) and ``round(w * height / h / 32) * 32`` columns, so both are
   multiples of 32: bilinear with half-pixel centres, no antialiasing, computed in float32
   (``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False)``).
4. ``x = (v / 255 - mean[c]) / std[c]`` per RGB channel, NCHW float32.
5. Output: logits (1, 2, H, W); channel 1 is the person. ``mask = logit[1] > logit[0]``
   (softmax probability > 0.5). Masks go back to the original image by bilinear resize of the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.nn import functional as F

from .errors import DataError

__all__ = [
    "SPEC_VERSION",
    "MIN_IMAGE_SIDE",
    "Preprocessed",
    "load_rgb_image",
    "load_mask",
    "person_box",
    "crop_box",
    "target_size",
    "resize_rgb",
    "normalize",
    "preprocess",
    "logits_to_mask",
    "mask_to_original",
]

SPEC_VERSION = "1.0"
MIN_IMAGE_SIDE = 64
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def load_rgb_image(path: str | Path) -> np.ndarray:
    """Read an 8-bit RGB image as (H, W, 3) uint8; refuse other modes with a fix the user can apply."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                if "transparency" in im.info:
                    raise DataError(
                        f"{path}: palette image with transparency (an alpha channel); flatten it onto a background "
                        "and save as RGB, e.g. Image.open(p).convert('RGB').save(q)"
                    )
                im = im.convert("RGB")
                mode = "RGB"
            if mode in ("L", "LA", "1", "I", "I;16", "F"):
                raise DataError(
                    f"{path}: grayscale image (mode {mode}); ALiSNet needs 3-channel RGB. "
                    "Convert it, e.g. Image.open(p).convert('RGB').save(q), if a gray image is really intended."
                )
            if mode in ("RGBA", "RGBa", "PA"):
                raise DataError(
                    f"{path}: image has an alpha channel (mode {mode}); flatten it onto a background and save as RGB, "
                    "e.g. Image.open(p).convert('RGB').save(q)"
                )
            if mode != "RGB":
                raise DataError(f"{path}: unsupported colour mode {mode}; save the image as 8-bit RGB (JPEG or PNG)")
            arr = np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image PIL can read (expected JPEG, PNG, BMP, WebP or TIFF)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read image: {exc}") from None
    h, w = arr.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise DataError(
            f"{path}: image is {w}x{h}; the smaller side must be at least {MIN_IMAGE_SIDE} px for a person to be "
            "segmented meaningfully"
        )
    return arr


def load_mask(path: str | Path) -> np.ndarray:
    """Read a binary person mask as (H, W) bool: any non-zero value (or alpha, for RGBA) is the person."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA"):
                arr = np.asarray(im.getchannel("A"))
            else:
                arr = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such mask file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read mask: {exc}") from None
    return arr > 127 if arr.max() > 1 else arr > 0


def person_box(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    """Tight ``(x0, y0, x1, y1)`` box (x1, y1 exclusive) around the mask, or None if it is empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def crop_box(box: Sequence[int], image_hw: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """``box`` enlarged by ``margin`` of its size on each side (the paper uses 10%), clipped to the image."""
    x0, y0, x1, y1 = box
    h, w = image_hw
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return (max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my)), min(w, math.ceil(x1 + mx)), min(h, math.ceil(y1 + my)))


def target_size(h: int, w: int, height: int, divisor: int = 32) -> tuple[int, int]:
    """``(height, width)`` for an ``h x w`` image: height fixed, width keeps the aspect, both multiples of ``divisor``."""
    if height % divisor:
        raise DataError(f"target height {height} is not a multiple of {divisor}")
    width = max(divisor, int(round(w * height / h / divisor)) * divisor)
    return height, width


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, h, w) float32 in [0, 255], spec step 3."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Spec step 4 on a (N, 3, H, W) float tensor in [0, 255]."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x / 255.0 - m) / s


@dataclass
class Preprocessed:
    """A network input and what is needed to map its output back onto the original image."""

    tensor: Tensor  # (1, 3, H, W) normalised
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original image
    original_hw: tuple[int, int]


def preprocess(
    image: np.ndarray,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    height: int = 1024,
    box: Optional[Sequence[int]] = None,
    margin: float = 0.10,
) -> Preprocessed:
    """Spec steps 2-4: optional person-box crop, resize to ``height``, normalise."""
    h, w = image.shape[:2]
    crop = crop_box(box, (h, w), margin) if box is not None else (0, 0, w, h)
    x0, y0, x1, y1 = crop
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise DataError(f"person box {tuple(box) if box is not None else None} leaves an empty crop of a {w}x{h} image")
    cropped = image[y0:y1, x0:x1]
    size = target_size(y1 - y0, x1 - x0, height)
    return Preprocessed(normalize(resize_rgb(cropped, size), mean, std), crop, (h, w))


def logits_to_mask(logits: Tensor | np.ndarray) -> np.ndarray:
    """(1, 2, H, W) logits -> (H, W) bool person mask (spec step 5)."""
    arr = logits.detach().cpu().numpy() if isinstance(logits, Tensor) else np.asarray(logits)
    return arr[0, 1] > arr[0, 0]


def mask_to_original(logits: Tensor, pre: Preprocessed) -> np.ndarray:
    """Map network logits back to a full-size (H, W) bool mask of the original image."""
    x0, y0, x1, y1 = pre.crop
    resized = F.interpolate(logits.float(), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
    full = np.zeros(pre.original_hw, dtype=bool)
    full[y0:y1, x0:x1] = logits_to_mask(resized)
    return full
