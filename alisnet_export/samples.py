"""Images the commands use: parity inputs, calibration inputs and the golden-vector photo.

With no ``--images``, the built-in public-domain sample photos are used (``resources/sample_images``).
Parity follows the paper's preprocessing: each photo at the export height, and each photo cropped to
the person (box from the float model's own mask, +10% margin) at the same height.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from .config import ModelConfig
from .errors import DataError
from .preprocess import IMAGE_SUFFIXES, load_rgb_image, mask_to_original, person_box, preprocess

__all__ = ["sample_image_paths", "image_paths", "parity_inputs", "calibration_inputs", "golden_source"]


def sample_image_paths() -> list[Path]:
    folder = resources.files("alisnet_export").joinpath("resources/sample_images")
    return sorted(Path(str(p)) for p in folder.iterdir() if Path(str(p)).suffix.lower() in IMAGE_SUFFIXES)


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
            box = person_box(mask)
            if box is not None and (box[2] - box[0]) * (box[3] - box[1]) < 0.9 * mask.size:
                crop = preprocess(image, mean=mean, std=std, height=height, box=box, margin=margin)
                yield f"{path.stem}-person@{height}", crop.tensor.numpy()


def calibration_inputs(paths: Sequence[Path], config: ModelConfig, *, height: int, count: int = 16,
                       seed: int = 0) -> list[torch.Tensor]:
    """``count`` varied views of the photos (random crops, flips, brightness) for PTQ calibration."""
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
