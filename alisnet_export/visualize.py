"""Overlay pictures: a mask on its photo, and where two masks disagree (people would rather look than read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .parity import contour

__all__ = ["mask_overlay", "disagreement_overlay", "save_png"]

_PERSON = np.array([0, 200, 255], dtype=np.float32)  # cyan tint
_EDGE = np.array([255, 255, 0], dtype=np.uint8)  # yellow contour


def mask_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The photo with the person tinted and the mask contour drawn 1 px wide."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * _PERSON
    out = out.clip(0, 255).astype(np.uint8)
    out[contour(mask)] = _EDGE
    return out


def disagreement_overlay(image: np.ndarray, reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Dimmed photo; green = both say person, red = only the reference (float), blue = only the candidate."""
    out = (image.astype(np.float32) * 0.35).astype(np.uint8)
    both = reference & candidate
    out[both] = (0.5 * out[both] + 0.5 * np.array([40, 160, 40])).astype(np.uint8)
    out[reference & ~candidate] = (255, 40, 40)
    out[candidate & ~reference] = (40, 90, 255)
    return out


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a uint8 RGB/L array (or a bool mask as 0/255) as PNG."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    Image.fromarray(array).save(path, format="PNG")
