"""Labels for people walking through a static-camera video (OpenCV's ``vtest.avi``).

The matting teacher is good on one or a few large subjects and poor on small pedestrians (run on a
whole 768x576 frame it finds almost nobody). For a static camera the moving pixels are the people, so:

1. background = per-pixel median of frames (the people move, so the median is the empty scene);
2. motion mask = pixels far from the background, minus cast shadows (darker than the background with
   the same chromaticity), cleaned by opening / closing / hole filling;
3. each moving blob is cropped with a margin and given to the teacher at ``crop_height`` rows; where the
   teacher's mask agrees with the blob (IoU >= ``agree_iou``) its mask, limited to a few pixels around
   the blob, is the label (it follows the silhouette better); otherwise the motion blob is.

``label_frame`` returns the binary label, a soft alpha for compositing, and per-blob provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..errors import DataError, EnvironmentProblem
from .teacher import MattingTeacher

__all__ = ["read_video_frames", "median_background", "motion_mask", "Blob", "FrameLabel", "label_frame"]


def read_video_frames(path: str | Path, indices: Optional[Sequence[int]] = None) -> list[np.ndarray]:
    """Decode a video into (H, W, 3) uint8 RGB frames (all, or those at ``indices``) with OpenCV."""
    path = Path(path)
    try:
        import cv2
    except ImportError:
        raise EnvironmentProblem("decoding the demo videos needs opencv-python-headless: run `make demo-data` "
                                 "(it installs the demo-data extra) or `pip install -e '.[demo-data]'`.") from None
    if not path.is_file():
        raise DataError(f"{path}: no such video; `make demo-data` fetches it (Debian opencv-doc).")
    wanted = None if indices is None else set(int(i) for i in indices)
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if wanted is None or index in wanted:
                frames.append(np.ascontiguousarray(frame[:, :, ::-1]))
            index += 1
    finally:
        capture.release()
    if not frames:
        raise DataError(f"{path}: OpenCV decoded no frames; the file is damaged or not a video: delete it and "
                        "fetch again (`make demo-data`).")
    if wanted is not None and len(frames) != len(wanted):
        raise DataError(f"{path}: has {index} frames; asked for frame(s) up to {max(wanted)}.")
    return frames


def median_background(frames: Sequence[np.ndarray]) -> np.ndarray:
    """The per-pixel median of ``frames``: the empty scene when people keep moving."""
    if not frames:
        raise ValueError("median_background needs at least one frame")
    return np.median(np.stack(frames), axis=0).round().astype(np.uint8)


def motion_mask(frame: np.ndarray, background: np.ndarray, *, threshold: float = 30.0,
                remove_shadows: bool = True) -> np.ndarray:
    """Pixels that differ from the background by more than ``threshold`` in some channel, minus shadows."""
    f = frame.astype(np.float32) + 1.0
    b = background.astype(np.float32) + 1.0
    moving = np.abs(f - b).max(axis=2) > threshold
    if remove_shadows:
        ratio = f.sum(axis=2) / b.sum(axis=2)
        chroma = np.abs(f / f.sum(axis=2, keepdims=True) - b / b.sum(axis=2, keepdims=True)).max(axis=2)
        moving &= ~((ratio > 0.5) & (ratio < 0.9) & (chroma < 0.02))
    moving = ndimage.binary_opening(moving, iterations=1)
    moving = ndimage.binary_closing(moving, iterations=2)
    return ndimage.binary_fill_holes(moving)


@dataclass(frozen=True)
class Blob:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the moving blob
    source: str  # "teacher" (teacher mask near the blob) or "motion" (the blob itself)
    agreement: float  # IoU of the teacher's mask and the blob (0 when the teacher was not asked)


@dataclass
class FrameLabel:
    mask: np.ndarray  # (H, W) bool: the pseudo-label
    alpha: np.ndarray  # (H, W) float32: soft version for compositing
    blobs: list[Blob] = field(default_factory=list)


def _crop_around(box: tuple[int, int, int, int], margin: float, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    h = (y1 - y0) * (1 + 2 * margin)
    w = max((x1 - x0) * (1 + 2 * margin), 0.5 * h)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (max(0, int(cx - w / 2)), max(0, int(cy - h / 2)), min(hw[1], int(np.ceil(cx + w / 2))),
            min(hw[0], int(np.ceil(cy + h / 2))))


def label_frame(frame: np.ndarray, background: np.ndarray, teacher: Optional[MattingTeacher], *,
                min_height: int = 30, min_area: int = 40, crop_height: int = 512, margin: float = 0.5,
                agree_iou: float = 0.6, gate_px: int = 4, threshold: float = 30.0) -> FrameLabel:
    """Label the people in one frame of a static-camera video (see the module docstring)."""
    hw = frame.shape[:2]
    moving = motion_mask(frame, background, threshold=threshold)
    components, _ = ndimage.label(moving)
    mask = np.zeros(hw, dtype=bool)
    alpha = np.zeros(hw, dtype=np.float32)
    blobs: list[Blob] = []
    for k, sl in enumerate(ndimage.find_objects(components), start=1):
        if sl is None:
            continue
        blob = components[sl] == k
        if blob.sum() < min_area:
            continue
        box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        source, agreement = "motion", 0.0
        cx0, cy0, cx1, cy1 = _crop_around(box, margin, hw)
        region = (slice(cy0, cy1), slice(cx0, cx1))
        here = components[region] == k
        label, soft = here, here.astype(np.float32)
        if teacher is not None and box[3] - box[1] >= min_height:
            crop_w = max(64, int(round((cx1 - cx0) * crop_height / (cy1 - cy0) / 32)) * 32)
            teacher_alpha = teacher.alpha(frame[region], size=(crop_height, crop_w))
            gate = ndimage.binary_dilation(here, iterations=gate_px)
            teacher_mask = (teacher_alpha > 0.5) & gate
            agreement = float((teacher_mask & here).sum() / max(1, (teacher_mask | here).sum()))
            if agreement >= agree_iou:
                source, label, soft = "teacher", teacher_mask, np.where(gate, teacher_alpha, 0.0)
        mask[region] |= label
        alpha[region] = np.maximum(alpha[region], soft)
        blobs.append(Blob(tuple(int(v) for v in box), source, round(agreement, 3)))
    return FrameLabel(mask, alpha, blobs)
