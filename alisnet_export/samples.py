"""Images the commands use: parity inputs, calibration inputs and the golden-vector photo.

An *image set* is given as files and folders, or as a named set:

* ``samples``: the built-in public-domain sample photos (``resources/sample_images``);
* ``testbed:SPLIT[:COUNT]``: the exact-ground-truth testbed (:mod:`.data.testbed`; ``heldout`` or
  ``calibration``), rendered on first use into the cache.

Each shipped checkpoint names its default parity set and its default calibration set in
``models/zoo.json`` (:func:`default_image_sets`); the two are disjoint, so a parity gate never
measures the images the int8 ranges were fitted on. Parity follows the paper's preprocessing: each
photo at the export height, and each photo cropped to the person (box from the float model's own
mask, +10% margin) at the same height.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from ._io import sha256_file
from .config import ModelConfig
from .errors import DataError
from .preprocess import IMAGE_SUFFIXES, load_rgb_image, mask_to_original, person_box, preprocess

__all__ = ["sample_image_paths", "image_paths", "ImageSet", "resolve_image_set", "default_image_sets",
           "calibration_warnings", "image_sets_for", "MIN_CALIBRATION_IMAGES", "parity_inputs", "calibration_inputs", "golden_source"]

#: fewer calibration images than this gets a warning: the activation ranges then fit a handful of photos
MIN_CALIBRATION_IMAGES = 16
#: the built-in photos, as a named set
SAMPLES = "samples"
TESTBED_PREFIX = "testbed:"
#: real street frames shipped for the real-photo demo model: ``street-frames:calibration`` (32 frames of its
#: training video range) and ``street-frames:heldout`` (8 frames it never trained on); resources/street_frames/
STREET_FRAMES_PREFIX = "street-frames:"
STREET_FRAMES_SPLITS = ("calibration", "heldout")
#: what a checkpoint that zoo.json does not describe uses: parity on the built-in photos, calibration on
#: generated people (disjoint by construction; pass --calibration-images from your own domain instead)
FALLBACK_PARITY_SET, FALLBACK_CALIBRATION_SET = SAMPLES, "testbed:calibration"


def sample_image_paths(folder: str = "sample_images") -> list[Path]:
    """The images shipped in ``resources/<folder>``."""
    found = resources.files("alisnet_export").joinpath(f"resources/{folder}")
    return sorted(Path(str(p)) for p in found.iterdir() if Path(str(p)).suffix.lower() in IMAGE_SUFFIXES)


def street_frame_paths(spec: str) -> list[Path]:
    """``street-frames:calibration`` or ``street-frames:heldout``; :class:`DataError` for another split."""
    split = spec[len(STREET_FRAMES_PREFIX):]
    if split not in STREET_FRAMES_SPLITS:
        raise DataError(f"{spec!r}: unknown street-frames split; choose "
                        + " or ".join(f"{STREET_FRAMES_PREFIX}{s}" for s in STREET_FRAMES_SPLITS))
    return sample_image_paths(f"street_frames/{split}")


def image_paths(images: Optional[Path | Sequence[Path]]) -> list[Path]:
    """Files of ``images`` (a folder, a file, or several), or the built-in samples when None."""
    if images is None:
        return sample_image_paths()
    items = [images] if isinstance(images, (str, Path)) else list(images)
    out: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{item}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif item.is_file():
            out.append(item)
        else:
            raise DataError(f"{item}: no such image file or folder")
    return out


@dataclass(frozen=True)
class ImageSet:
    """Resolved image files and how they were asked for (recorded in manifests)."""

    source: str  # "samples", "testbed:calibration:32", or the files/folders given
    paths: tuple[Path, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "images": len(self.paths), "files": [p.name for p in self.paths]}


def _named_set(spec: str) -> Optional[list[Path]]:
    """Files of a named set, or None when ``spec`` names none."""
    if spec == SAMPLES:
        return sample_image_paths()
    if spec.startswith(STREET_FRAMES_PREFIX):
        return street_frame_paths(spec)
    if spec.startswith(TESTBED_PREFIX):
        from .data.testbed import parse_testbed_spec, testbed_images

        return testbed_images(*parse_testbed_spec(spec))
    return None


def resolve_image_set(items: Optional[Sequence[Path | str]], *, default: str) -> ImageSet:
    """Files and folders, named sets (``samples``, ``street-frames:SPLIT``, ``testbed:SPLIT[:COUNT]``) or, when
    ``items`` is empty,
    the set named by ``default``."""
    items = [str(i) for i in items or ()] or [default]
    paths: list[Path] = []
    for item in items:
        named = _named_set(item)
        paths += named if named is not None else image_paths(Path(item))
    return ImageSet(", ".join(items), tuple(paths))


def default_image_sets(checkpoint_sha256: Optional[str]) -> tuple[str, str]:
    """``(parity set, calibration set)`` that ``models/zoo.json`` names for the checkpoint with this
    sha256; the fallback pair for any other checkpoint."""
    from .zoo import zoo_entries

    for entry in zoo_entries().values():
        if checkpoint_sha256 and entry.sha256 == checkpoint_sha256:
            return (entry.image_sets.get("parity", FALLBACK_PARITY_SET),
                    entry.image_sets.get("calibration", FALLBACK_CALIBRATION_SET))
    return FALLBACK_PARITY_SET, FALLBACK_CALIBRATION_SET


def calibration_warnings(calibration: ImageSet, parity: ImageSet) -> list[str]:
    """What is wrong with calibrating on ``calibration`` and checking parity on ``parity``: too few
    images, or images shared with the parity set (same file or same bytes)."""
    out = []
    if len(calibration.paths) < MIN_CALIBRATION_IMAGES:
        out.append(f"calibrating on {len(calibration.paths)} image(s) ({calibration.source}); fewer than "
                   f"{MIN_CALIBRATION_IMAGES} fit the int8 ranges to a handful of photos. Pass --calibration-images "
                   "with >= 32 images of the model's domain.")
    parity_digests = {sha256_file(p): p for p in parity.paths}
    shared = [p for p in calibration.paths if sha256_file(p) in parity_digests]
    if shared:
        out.append(f"{len(shared)} calibration image(s) are also parity images ({', '.join(p.name for p in shared[:3])}"
                   f"{'...' if len(shared) > 3 else ''}): the parity gate then measures the calibration set itself. "
                   "Calibrate and check on disjoint images.")
    return out


def image_sets_for(checkpoint_sha256: Optional[str], images: Sequence[Path | str], calibration_images: Sequence[Path | str],
                   *, calibrate: bool, warn: Callable[[str], None]) -> tuple[ImageSet, Optional[ImageSet]]:
    """The parity set and (when ``calibrate``) the calibration set of an export: what was given, else the
    checkpoint's defaults (:func:`default_image_sets`); each problem of :func:`calibration_warnings` goes to ``warn``."""
    parity_default, calibration_default = default_image_sets(checkpoint_sha256)
    parity = resolve_image_set(images, default=parity_default)
    if not calibrate:
        return parity, None
    calibration = resolve_image_set(calibration_images, default=calibration_default)
    for message in calibration_warnings(calibration, parity):
        warn(message)
    return parity, calibration


def parity_inputs(
    paths: Sequence[Path],
    config: ModelConfig,
    *,
    height: int,
    reference: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    person_crops: bool = True,
) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, (1, 3, H, W) float32)`` pairs: each photo whole, and cropped to the person when a
    ``reference`` model is given (its mask gives the box, as the paper's pipeline does)."""
    mean, std, margin = config.input.mean, config.input.std, config.input.crop_margin
    for path in paths:
        image = load_rgb_image(path)
        whole = preprocess(image, mean=mean, std=std, height=height)
        yield f"{path.stem}@{height}", whole.tensor.numpy()
        if person_crops and reference is not None:
            with torch.inference_mode():
                mask = mask_to_original(reference(whole.tensor), whole)
            box = _at_least_portrait(person_box(mask), mask.shape)
            if box is not None and (box[2] - box[0]) * (box[3] - box[1]) < 0.9 * mask.size:
                crop = preprocess(image, mean=mean, std=std, height=height, box=box, margin=margin)
                yield f"{path.stem}-person@{height}", crop.tensor.numpy()


#: the narrowest person crop parity uses (width / height): a side view's tight box can be 1:5, which at
#: a small --height is narrower than an artifact accepts; widening keeps the person and adds context
MIN_CROP_ASPECT = 0.5


def _at_least_portrait(box: Optional[tuple[int, int, int, int]], hw: tuple[int, int]) -> Optional[tuple[int, int, int, int]]:
    """``box`` widened about its centre to at least :data:`MIN_CROP_ASPECT`, within the image."""
    if box is None:
        return None
    x0, y0, x1, y1 = box
    width = min(hw[1], int(np.ceil((y1 - y0) * MIN_CROP_ASPECT)))
    if x1 - x0 >= width:
        return box
    x0 = max(0, min((x0 + x1 - width) // 2, hw[1] - width))
    return x0, y0, x0 + width, y1


def calibration_inputs(paths: Sequence[Path], config: ModelConfig, *, height: int, count: Optional[int] = None,
                       seed: int = 0) -> list[torch.Tensor]:
    """PTQ calibration inputs at ``height``: every photo once, then (up to ``count``, default
    :data:`MIN_CALIBRATION_IMAGES` or the number of photos, whichever is larger) varied views of them
    (random crops, flips, brightness)."""
    count = count or max(MIN_CALIBRATION_IMAGES, len(paths))
    rng = np.random.default_rng(seed)
    images = [load_rgb_image(p) for p in paths]
    if not images:
        raise DataError("calibration needs at least one image")
    out: list[torch.Tensor] = []
    for i in range(count):
        image = images[i % len(images)]
        h, w = image.shape[:2]
        if i >= len(images):  # the first pass is the untouched photos
            ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            image = image[y0:y0 + ch, x0:x0 + cw]
            if rng.random() < 0.5:
                image = image[:, ::-1]
            image = np.clip(image.astype(np.float32) * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
        out.append(preprocess(np.ascontiguousarray(image), mean=config.input.mean, std=config.input.std,
                              height=height).tensor)
    return out


def golden_source() -> tuple[str, np.ndarray]:
    """The photo crop the golden vectors start from: the astronaut's head and shoulders (400 x 300 px)."""
    path = next(p for p in sample_image_paths() if p.stem == "astronaut")
    return f"{path.name}[0:400, 60:360]", load_rgb_image(path)[0:400, 60:360]
