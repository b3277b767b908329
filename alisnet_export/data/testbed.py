"""The exact-ground-truth testbed: synthetic people at the paper's deployment size, in disjoint splits.

The paper's domain is people standing in front and side views, portrait framing, 1024 px height.
:mod:`.synthetic` draws that with exact masks, so int8-vs-float and model-vs-truth can be measured
without a labelling error in between. The testbed fixes how it is drawn and which seeds each split
uses, so a number measured on ``heldout`` means the same thing in a test, a README table and a note:

=============  ==================  ======  =====================================================
split          seed stream         images  used for
=============  ==================  ======  =====================================================
``train``      ``0``               1200    training the testbed model (crops and whole views)
``heldout``    ``1_000_000``       64      accuracy (person IoU vs exact masks) and parity
``calibration````2_000_000``       32      int8 calibration (never the parity images)
=============  ==================  ======  =====================================================

Images are 1024 x 768 (height x width), the height the paper resizes to. Each split is a pure
function of its seed stream and the image index (see :class:`~.synthetic.SyntheticPeople`), so a
split can be rendered again anywhere, bit for bit, and the three never share an image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from ..errors import OutputError
from .synthetic import SyntheticPeople, write_synthetic_dataset

__all__ = ["TESTBED_HEIGHT", "TESTBED_WIDTH", "TestbedSplit", "SPLITS", "testbed_split", "write_testbed_split",
           "cache_root", "testbed_images"]

TESTBED_HEIGHT, TESTBED_WIDTH = 1024, 768


@dataclass(frozen=True)
class TestbedSplit:
    name: str
    seed: int
    default_count: int
    purpose: str

    def dataset(self, count: Optional[int] = None, *, height: int = TESTBED_HEIGHT,
                width: int = TESTBED_WIDTH) -> SyntheticPeople:
        return SyntheticPeople(count or self.default_count, height, width, seed=self.seed)


SPLITS: dict[str, TestbedSplit] = {s.name: s for s in (
    TestbedSplit("train", 0, 1200, "training the testbed model"),
    TestbedSplit("heldout", 1_000_000, 64, "accuracy vs exact masks and int8 parity; never trained or calibrated on"),
    TestbedSplit("calibration", 2_000_000, 32, "int8 calibration; never the parity images"),
)}


def testbed_split(name: str) -> TestbedSplit:
    try:
        return SPLITS[name]
    except KeyError:
        raise ValueError(f"unknown testbed split {name!r}; choose one of {', '.join(SPLITS)}") from None


def write_testbed_split(name: str, out_dir: str | Path, count: Optional[int] = None, *, start: int = 0,
                        force: bool = False, progress: Optional[Callable[[int], None]] = None) -> Path:
    """Render split ``name`` (images ``start .. start+count-1``) into ``out_dir/images`` + ``out_dir/masks``."""
    split = testbed_split(name)
    return write_synthetic_dataset(out_dir, count or split.default_count, TESTBED_HEIGHT, TESTBED_WIDTH, seed=split.seed,
                                   start=start, force=force, progress=progress)


def cache_root() -> Path:
    """Where rendered testbed images are kept: ``$ALISNET_EXPORT_CACHE`` or ``~/.cache/alisnet-export``."""
    env = os.environ.get("ALISNET_EXPORT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "alisnet-export"


def testbed_images(name: str, count: Optional[int] = None, *, root: Optional[Path] = None,
                   progress: Optional[Callable[[int], None]] = None) -> list[Path]:
    """Image files ``0 .. count-1`` of split ``name``, rendered on first use into the cache
    (``ROOT/testbed/NAME/images`` + ``masks``, the folder layout ``--data`` and ``eval`` read).

    Each file is written to a temporary name and renamed, so concurrent or interrupted runs never
    leave a half-written image; files already there are reused (the split is deterministic)."""
    split = testbed_split(name)
    count = count or split.default_count
    folder = (root or cache_root()) / "testbed" / split.name
    images, masks = folder / "images", folder / "masks"
    try:
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the testbed cache: {exc.strerror}; set ALISNET_EXPORT_CACHE "
                          "to a writable folder.") from None
    data = split.dataset(count)
    out = []
    for i in range(count):
        image_path, mask_path = images / f"{i:06d}.png", masks / f"{i:06d}.png"
        if not (image_path.is_file() and mask_path.is_file()):
            image, mask = data[i]
            for path, array in ((mask_path, mask.astype(np.uint8) * 255), (image_path, image)):
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                Image.fromarray(array).save(tmp, format="PNG")
                os.replace(tmp, path)
        out.append(image_path)
        if progress:
            progress(i + 1)
    return out


def parse_testbed_spec(spec: str) -> tuple[str, Optional[int]]:
    """``"testbed:SPLIT[:COUNT]"`` -> ``(split, count or None)``; raises :class:`DataError` naming the form."""
    from ..errors import DataError

    parts = spec[len("testbed:"):].split(":") if spec.startswith("testbed:") else []
    if not parts or len(parts) > 2 or parts[0] not in SPLITS or (len(parts) == 2 and not parts[1].isdigit()) \
            or (len(parts) == 2 and int(parts[1]) == 0):
        raise DataError(f"{spec!r}: expected testbed:SPLIT or testbed:SPLIT:COUNT with SPLIT one of "
                        f"{', '.join(SPLITS)} and COUNT >= 1, e.g. testbed:calibration:32")
    return parts[0], int(parts[1]) if len(parts) == 2 else None


def testbed_dataset(spec: str, *, cache: bool = False):
    """A :class:`~.datasets.SegmentationFolder` over ``testbed:SPLIT[:COUNT]`` (rendered on first use): the
    form ``--data`` takes in ``train-demo``, ``qat`` and ``eval``."""
    from .datasets import SegmentationFolder

    name, count = parse_testbed_spec(spec)
    paths = testbed_images(name, count)
    root = paths[0].parent.parent
    folder = SegmentationFolder(root / "images", root / "masks", cache=cache, check_sizes=False)
    keep = {p.name for p in paths}
    folder.pairs = [pair for pair in folder.pairs if pair[0].name in keep]
    return folder
