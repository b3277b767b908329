"""Where a training run's images come from: one small spec per kind of source, opened into datasets.

    SyntheticData(images=None)          generated people with exact masks, at the training crop size
    FolderData(root, cache_images)      ROOT/images/* + ROOT/masks/* of the same stems, or testbed:SPLIT[:N]
    CocoData(annotations, images)       COCO-style person annotations (instances merged, crowds ignored)

:func:`open_training_data` turns a spec into a :class:`DataSource`: the training set, an optional held-out
set (split off real data with a seeded permutation, generated with another seed stream for synthetic
data) and the one-line description recorded in the checkpoint. ``train-demo`` and ``qat`` use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import DataError

__all__ = ["SyntheticData", "FolderData", "CocoData", "TrainingData", "DataSource", "open_training_data",
           "split_held_out", "HELD_OUT_SEED_OFFSET"]

#: held-out synthetic images use another seed stream than the training images (``seed + this``)
HELD_OUT_SEED_OFFSET = 1_000_000


@dataclass(frozen=True)
class SyntheticData:
    """Generated synthetic people; ``images`` distinct ones (None: as many as the run asks for)."""

    images: Optional[int] = None


@dataclass(frozen=True)
class FolderData:
    """``root/images/NAME.*`` with binary masks ``root/masks/NAME.*``, or ``testbed:SPLIT[:N]``."""

    root: Path
    cache_images: bool = False  # keep decoded images in memory after their first use


@dataclass(frozen=True)
class CocoData:
    """COCO-style person annotations; ``images`` is the folder their file names are relative to."""

    annotations: Path
    images: Path


#: a path or ``testbed:...`` string means :class:`FolderData` of it
TrainingData = Union[SyntheticData, FolderData, CocoData, str, Path]


@dataclass
class DataSource:
    """What a data source hands the trainer."""

    train: Any  # a Dataset of (image uint8 (H, W, 3), mask) pairs
    held_out: Optional[Any]  # the same, never trained on; None when no images are held out
    trained_on: str  # for the checkpoint's meta


def split_held_out(dataset: Any, held_out: int, seed: int, name: str) -> tuple[Any, Optional[Any]]:
    """A seeded random split of a real dataset into (train, held-out)."""
    import torch
    from torch.utils.data import Subset

    if held_out == 0:
        return dataset, None
    if held_out >= len(dataset):
        raise DataError(f"{name}: has {len(dataset)} images, so --eval-images {held_out} leaves none to train on; "
                        "lower --eval-images.")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, order[held_out:]), Subset(dataset, order[:held_out])


def as_spec(data: TrainingData) -> Union[SyntheticData, FolderData, CocoData]:
    """``data`` as one of the three specs (a path or ``testbed:`` string becomes :class:`FolderData`)."""
    if isinstance(data, (SyntheticData, FolderData, CocoData)):
        return data
    if isinstance(data, (str, Path)):
        return FolderData(Path(data))
    raise TypeError(f"training data must be SyntheticData, FolderData, CocoData or a path, not {type(data).__name__}")


def open_training_data(data: TrainingData, *, crop: tuple[int, int], eval_images: int = 0, seed: int = 0,
                       synthetic_images: Optional[int] = None) -> DataSource:
    """Open ``data`` for training at ``crop`` (H, W), holding out ``eval_images`` images.

    ``synthetic_images``: how many synthetic images to generate when the spec does not say (the run's
    steps x batch size, so no image repeats)."""
    spec = as_spec(data)
    if isinstance(spec, SyntheticData):
        from . import SyntheticPeople

        h, w = crop
        count = spec.images or synthetic_images
        if not count:
            raise ValueError("SyntheticData needs a number of images (images=, or synthetic_images=)")
        train = SyntheticPeople(count, h, w, seed=seed)
        held = SyntheticPeople(eval_images, h, w, seed=seed + HELD_OUT_SEED_OFFSET) if eval_images else None
        return DataSource(train, held, f"synthetic people (alisnet_export.data.synthetic): {train.describe()}")
    if isinstance(spec, FolderData):
        from . import SegmentationFolder

        if str(spec.root).startswith("testbed:"):
            from .testbed import testbed_dataset

            folder = testbed_dataset(str(spec.root), cache=spec.cache_images)
        else:
            folder = SegmentationFolder(spec.root / "images", spec.root / "masks", cache=spec.cache_images)
        train, held = split_held_out(folder, eval_images, seed, str(spec.root))
        return DataSource(train, held, f"{len(train)} of {folder.describe()}")
    from . import CocoPersonDataset

    coco = CocoPersonDataset(spec.annotations, spec.images)
    train, held = split_held_out(coco, eval_images, seed, str(spec.annotations))
    return DataSource(train, held, f"{len(train)} of {coco.describe()} (person instances merged, crowds ignored)")
