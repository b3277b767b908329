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
        if size != (w, h):
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            target = np.asarray(Image.fromarray(target).resize(size, Image.NEAREST))
        pixels = self._jitter(image.astype(np.float32), rng)
        pixels, target = self._pad(pixels, target, rng)
        y0 = int(rng.integers(0, pixels.shape[0] - crop_h + 1))
        x0 = int(rng.integers(0, pixels.shape[1] - crop_w + 1))
        pixels = pixels[y0:y0 + crop_h, x0:x0 + crop_w]
        target = target[y0:y0 + crop_h, x0:x0 + crop_w]
        if rng.random() < self.hflip:
            pixels, target = pixels[:, ::-1], target[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)
        x = normalize(x, self.mean, self.std)[0]
        return x, torch.from_numpy(np.array(target, dtype=np.int64))  # a copy: PIL arrays are read-only

    def _jitter(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast and saturation, each by a factor in ``1 +- color_jitter``."""
        j = self.color_jitter
        if j <= 0:
            return pixels
        gray = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        pixels = pixels * rng.uniform(1 - j, 1 + j)
        pixels = (pixels - gray.mean()) * rng.uniform(1 - j, 1 + j) + gray.mean()
        gray = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        pixels = gray[..., None] + (pixels - gray[..., None]) * rng.uniform(1 - j, 1 + j)
        return np.clip(pixels, 0, 255)

    def _pad(self, pixels: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Pad up to the crop, the image at a random place: the mean colour (0 after normalising) and the ignore label."""
        crop_h, crop_w = self.crop
        h, w = target.shape
        ph, pw = max(0, crop_h - h), max(0, crop_w - w)
        if ph == 0 and pw == 0:
            return pixels, target
        fill = np.array(self.mean, dtype=np.float32) * 255.0
        padded = np.empty((h + ph, w + pw, 3), dtype=np.float32)
        padded[...] = fill
        oy, ox = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        padded[oy:oy + h, ox:ox + w] = pixels
        padded_target = np.full((h + ph, w + pw), IGNORE_INDEX, dtype=np.uint8)
        padded_target[oy:oy + h, ox:ox + w] = target
        return padded, padded_target
