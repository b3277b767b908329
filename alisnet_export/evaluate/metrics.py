"""Segmentation accuracy: the paper's per-image person IoU, and mIoU over {background, person}.

* ``foreground_iou_mean`` / ``_std``: IoU of the predicted and true person masks, per image, then
  averaged: the paper's metric (an image with no person and no prediction scores 1).
* ``miou``: the usual semantic-segmentation mIoU: intersection and union of each class summed
  over all pixels of all images, the per-class IoUs averaged over background and person.

Pixels labelled 255 (ignore) count for neither. Images go through the product's preprocessing
(:func:`alisnet_export.preprocess.preprocess`), so the numbers are those of the shipped input path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..modeling import IGNORE_INDEX
from ..preprocess import mask_to_original, preprocess

__all__ = ["SegmentationMetrics", "ConfusionCounts", "evaluate_miou"]


@dataclass(frozen=True)
class SegmentationMetrics:
    num_images: int
    foreground_iou_mean: float  # the paper's metric: per-image person IoU, averaged
    foreground_iou_std: float
    miou: float  # mean over {background, person} of the dataset-level class IoU
    iou_background: float
    iou_person: float
    pixel_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        return (f"mIoU {self.miou:.4f} (background {self.iou_background:.4f}, person {self.iou_person:.4f}); "
                f"per-image person IoU {self.foreground_iou_mean:.4f} +- {self.foreground_iou_std:.4f} "
                f"over {self.num_images} images")


class ConfusionCounts:
    """Accumulates per-image person IoUs and dataset-level pixel counts."""

    def __init__(self) -> None:
        self.per_image: list[float] = []
        self.tp = self.fp = self.fn = self.tn = 0

    def add(self, pred: np.ndarray, target: np.ndarray) -> float:
        """``pred`` (H, W) bool, ``target`` (H, W) bool or uint8 0/1/255. Returns this image's person IoU."""
        target = np.asarray(target)
        valid = target != IGNORE_INDEX if target.dtype != bool else np.ones(target.shape, dtype=bool)
        gt = (target == 1) & valid if target.dtype != bool else target
        pred = np.asarray(pred, dtype=bool) & valid
        tp = int(np.count_nonzero(pred & gt))
        fp = int(np.count_nonzero(pred & ~gt))
        fn = int(np.count_nonzero(~pred & gt))
        tn = int(np.count_nonzero(valid)) - tp - fp - fn
        self.tp, self.fp, self.fn, self.tn = self.tp + tp, self.fp + fp, self.fn + fn, self.tn + tn
        union = tp + fp + fn
        iou = 1.0 if union == 0 else tp / union
        self.per_image.append(iou)
        return iou

    def metrics(self) -> SegmentationMetrics:
        if not self.per_image:
            raise ValueError("no images were evaluated")
        person = self.tp / max(1, self.tp + self.fp + self.fn)
        background = self.tn / max(1, self.tn + self.fp + self.fn)
        total = self.tp + self.fp + self.fn + self.tn
        ious = np.array(self.per_image, dtype=np.float64)
        return SegmentationMetrics(
            num_images=len(ious), foreground_iou_mean=float(ious.mean()), foreground_iou_std=float(ious.std()),
            miou=(person + background) / 2, iou_background=background, iou_person=person,
            pixel_accuracy=(self.tp + self.tn) / max(1, total),
        )


def _predict_image(model: nn.Module, image: np.ndarray, mean: Sequence[float], std: Sequence[float],
                   height: Optional[int], device: torch.device) -> np.ndarray:
    h = height or max(32, int(round(image.shape[0] / 32)) * 32)
    pre = preprocess(image, mean=mean, std=std, height=h)
    logits = model(pre.tensor.to(device)).float().cpu()
    return mask_to_original(logits, pre)


@torch.inference_mode()
def evaluate_miou(model: nn.Module, data: Iterable[Any], *, height: Optional[int] = None,
                  mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                  max_images: Optional[int] = None, progress: bool = False) -> SegmentationMetrics:
    """Run the model (eval mode) over ``data`` and score it.

    ``data`` yields either ``(image (H, W, 3) uint8, mask)`` pairs (a dataset: each image is
    preprocessed at ``height``, default its own height rounded to a multiple of 32, and the mask is
    compared at the original resolution) or ``(images (N, 3, H, W) normalised float, targets (N, H, W))``
    batches (a training-style loader). ``mean``/``std`` default to the model's config.
    """
    from tqdm.auto import tqdm

    cfg_input = getattr(getattr(model, "config", None), "input", None)
    mean = mean or (cfg_input.mean if cfg_input else (0.485, 0.456, 0.406))
    std = std or (cfg_input.std if cfg_input else (0.229, 0.224, 0.225))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counts = ConfusionCounts()
    total = max_images if max_images is not None else (len(data) if hasattr(data, "__len__") else None)
    bar = tqdm(total=total, disable=not progress, desc="evaluate", unit="img", dynamic_ncols=True)
    try:
        for item in data:
            first, second = item[0], item[1]
            if isinstance(first, Tensor) and first.ndim == 4:  # a normalised batch
                logits = model(first.to(device)).float().cpu()
                if logits.shape[-2:] != second.shape[-2:]:
                    logits = F.interpolate(logits, size=second.shape[-2:], mode="bilinear", align_corners=False)
                preds = (logits[:, 1] > logits[:, 0]).numpy()
                for pred, target in zip(preds, second.numpy()):
                    counts.add(pred, target if target.dtype == bool else target.astype(np.uint8))
                    bar.update(1)
            else:
                counts.add(_predict_image(model, np.asarray(first), mean, std, height, device), np.asarray(second))
                bar.update(1)
            if max_images is not None and len(counts.per_image) >= max_images:
                break
    finally:
        bar.close()
        model.train(was_training)
    return counts.metrics()
