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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .synthetic import SyntheticPeople, write_synthetic_dataset

__all__ = ["TESTBED_HEIGHT", "TESTBED_WIDTH", "TestbedSplit", "SPLITS", "testbed_split", "write_testbed_split"]

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
