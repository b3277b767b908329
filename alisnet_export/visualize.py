"""Overlay pictures: a mask on its photo, and where two masks disagree (people would rather look than read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .parity import contour

__all__ = ["mask_overlay", "disagreement_overlay", "comparison_panel", "save_png"]

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


def comparison_panel(image: np.ndarray, reference: np.ndarray, candidate: np.ndarray, *, margin: float = 0.1,
                     gap: int = 4) -> np.ndarray:
    """Three pictures side by side, cropped to the person (+ ``margin``): the reference (float) mask, the
    candidate (artifact) mask, and where they disagree (:func:`disagreement_overlay`)."""
    union = reference | candidate
    ys, xs = np.nonzero(union)
    h, w = union.shape
    if len(xs):
        my, mx = int((ys.max() - ys.min()) * margin), int((xs.max() - xs.min()) * margin)
        y0, y1 = max(0, ys.min() - my), min(h, ys.max() + 1 + my)
        x0, x1 = max(0, xs.min() - mx), min(w, xs.max() + 1 + mx)
    else:
        y0, y1, x0, x1 = 0, h, 0, w
    panels = [mask_overlay(image, reference), mask_overlay(image, candidate), disagreement_overlay(image, reference, candidate)]
    panels = [p[y0:y1, x0:x1] for p in panels]
    spacer = np.full((y1 - y0, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], spacer, panels[1], spacer, panels[2]], axis=1)
