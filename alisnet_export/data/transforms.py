"""Training augmentation: random scale, colour jitter, crop (with ignore padding), horizontal flip.

Randomness comes from the ``numpy.random.Generator`` passed in, never from global state, so the
training loop can give every ``(epoch, index)`` its own generator and a resumed or distributed
run sees exactly the same augmented samples as an uninterrupted single-process one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..modeling import IGNORE_INDEX
from ..preprocess import normalize

__all__ = ["TrainTransform", "to_target"]


def to_target(mask: np.ndarray) -> np.ndarray:
    """A bool mask or a 0/1/255 uint8 target -> uint8 target (1 = person, 0 = background, 255 = ignore)."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    target = mask.astype(np.uint8)
    bad = ~np.isin(target, (0, 1, IGNORE_INDEX))
    if bad.any():
        raise ValueError(f"targets may only hold 0, 1 and {IGNORE_INDEX}; found {np.unique(target[bad])[:5].tolist()}")
    return target


@dataclass(frozen=True)
class TrainTransform:
    """``(image uint8 (H, W, 3), mask) -> (normalised float (3, h, w), int64 target (h, w))`` at ``crop = (h, w)``.

    The image is first scaled so its height is ``crop[0]`` times a log-uniform factor from
    ``scale_range`` (so a portrait photo of any size shows the whole person at factor 1), then
    jittered, padded where smaller than the crop (target = 255, ignored by the loss), randomly
    cropped and flipped.
    """

    crop: tuple[int, int]
    mean: Sequence[float]
    std: Sequence[float]
    scale_range: tuple[float, float] = (0.75, 1.35)
    hflip: float = 0.5
    color_jitter: float = 0.25

    def __post_init__(self) -> None:
        h, w = self.crop
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ValueError(f"crop {h}x{w}: both sides must be positive multiples of 32 (the network's stride)")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range {self.scale_range} must satisfy 0 < low <= high")

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        crop_h, crop_w = self.crop
        target = to_target(mask)
        h, w = target.shape
        lo, hi = self.scale_range
        scale = crop_h / h * math.exp(rng.uniform(math.log(lo), math.log(hi)))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        jitter = self._jitter_factors(rng)
        # the crop window in the scaled image (padded where the scaled image is smaller than the crop)
        ph, pw = max(0, crop_h - size[1]), max(0, crop_w - size[0])
        oy, ox = (int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))) if ph or pw else (0, 0)
        y0 = int(rng.integers(0, size[1] + ph - crop_h + 1))
        x0 = int(rng.integers(0, size[0] + pw - crop_w + 1))
        # the part of the scaled image inside the window, resampled straight from the source pixels: the
        # same pixels as resizing the whole image and cropping, without resizing what the crop drops
        top, left = max(0, y0 - oy), max(0, x0 - ox)
        bottom, right = min(size[1], y0 - oy + crop_h), min(size[0], x0 - ox + crop_w)
        box = (left * w / size[0], top * h / size[1], right * w / size[0], bottom * h / size[1])
        part = (right - left, bottom - top)
        pixels = np.asarray(Image.fromarray(image).resize(part, Image.BILINEAR, box=box), dtype=np.float32)
        part_target = np.asarray(Image.fromarray(target).resize(part, Image.NEAREST, box=box))
        pixels = self._jitter(pixels, jitter)
        out = np.empty((crop_h, crop_w, 3), dtype=np.float32)
        out[...] = np.array(self.mean, dtype=np.float32) * 255.0  # padding: the mean colour (0 after normalising)
        out_target = np.full((crop_h, crop_w), IGNORE_INDEX, dtype=np.uint8)  # padding is ignored by the loss
        py, px = top + oy - y0, left + ox - x0
        out[py:py + part[1], px:px + part[0]] = pixels
        out_target[py:py + part[1], px:px + part[0]] = part_target
        if rng.random() < self.hflip:
            out, out_target = out[:, ::-1], out_target[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).unsqueeze(0)
        x = normalize(x, self.mean, self.std)[0]
        return x, torch.from_numpy(np.array(out_target, dtype=np.int64))  # a copy: PIL arrays are read-only

    def _jitter_factors(self, rng: np.random.Generator) -> tuple[float, float, float]:
        j = self.color_jitter
        if j <= 0:
            return 1.0, 1.0, 1.0
        return float(rng.uniform(1 - j, 1 + j)), float(rng.uniform(1 - j, 1 + j)), float(rng.uniform(1 - j, 1 + j))

    def _jitter(self, pixels: np.ndarray, factors: tuple[float, float, float]) -> np.ndarray:
        """Brightness, contrast and saturation, each by a factor in ``1 +- color_jitter``."""
        if factors == (1.0, 1.0, 1.0):
            return pixels
        brightness, contrast, saturation = factors
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        pixels = pixels * brightness
        mean = float((pixels @ weights).mean())
        pixels = (pixels - mean) * contrast + mean
        gray = pixels @ weights
        pixels = gray[..., None] + (pixels - gray[..., None]) * saturation
        return np.clip(pixels, 0, 255)
