"""Training and evaluation data: synthetic people, image/mask folders, COCO person annotations, augmentation.

Every dataset yields ``(image (H, W, 3) uint8 RGB, mask (H, W))``; the mask is bool, or uint8 with
0 / 1 and 255 for "ignore" (COCO crowd regions). :class:`TrainTransform` turns a pair into the
network's training input.
"""

from .datasets import CocoPersonDataset, SegmentationFolder
from .sources import CocoData, DataSource, FolderData, SyntheticData, TrainingData, open_training_data
from .synthetic import SyntheticPeople, SyntheticSample, render_sample, write_synthetic_dataset
from .transforms import TrainTransform, to_target

__all__ = [
    "CocoData",
    "CocoPersonDataset",
    "DataSource",
    "FolderData",
    "SegmentationFolder",
    "SyntheticPeople",
    "SyntheticData",
    "SyntheticSample",
    "TrainTransform",
    "TrainingData",
    "open_training_data",
    "render_sample",
    "to_target",
    "write_synthetic_dataset",
]
