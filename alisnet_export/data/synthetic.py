"""Synthetic people with exact masks: the fast, license-free training and test data of the fixture model.

A sample is a person-like figure (:mod:`._figure`: front or side view, fashion-photo poses, portrait
framing) dressed in random fabrics, over a textured background with non-person distractor objects
(:mod:`._textures`), then "photographed": a lighting gradient, camera blur, sensor noise and
sometimes JPEG compression. The mask is the set of pixels the figure was drawn on (minus any
occluder drawn in front of it), so it is exact by construction: camera effects change pixel values,
never the label.

Everything is a pure function of ``(seed, index)``: sample ``i`` is the same whatever order or
process generates it, so data-loader workers and distributed ranks need no coordination.

    >>> ds = SyntheticPeople(1000, height=256, width=192, seed=0)
    >>> image, mask = ds[3]          # (256, 192, 3) uint8, (256, 192) bool
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageFilter
from torch.utils.data import Dataset

from ..errors import OutputError
from ._figure import HAIR, SHOES, SKIN, sample_figure, rasterize
from ._textures import cloth_texture, draw_distractors, lighting_field, random_background, random_colour, smooth_noise

__all__ = ["SyntheticSample", "render_sample", "SyntheticPeople", "write_synthetic_dataset"]

#: skin tones from light to dark (RGB); a sample interpolates between two neighbours and tints a little
_SKIN_TONES = np.array([[255, 224, 196], [241, 194, 157], [224, 172, 125], [198, 134, 90], [141, 85, 54], [90, 56, 37]],
                       dtype=np.float32)
_HAIR_COLOURS = np.array([[20, 16, 14], [60, 40, 28], [110, 72, 40], [200, 160, 100], [150, 60, 30], [170, 170, 170]],
                         dtype=np.float32)


@dataclass
class SyntheticSample:
    image: np.ndarray  # (H, W, 3) uint8: the final "photo"
    mask: np.ndarray  # (H, W) bool: exactly the person pixels
    view: str  # "front" or "side"
    scene: np.ndarray  # (H, W, 3) uint8: the same scene without the person, before camera effects
    regions: np.ndarray  # (H, W) uint8 body regions (see _figure.REGIONS); 0 where there is no person
    occluded: bool = False  # an object was drawn in front of the person (and cut out of the mask)


def _skin_colour(rng: np.random.Generator) -> np.ndarray:
    i = rng.integers(len(_SKIN_TONES) - 1)
    tone = _SKIN_TONES[i] + rng.uniform(0, 1) * (_SKIN_TONES[i + 1] - _SKIN_TONES[i])
    return np.clip(tone * rng.uniform(0.9, 1.1, size=3), 0, 255)


def _dress(rng: np.random.Generator, regions: np.ndarray) -> np.ndarray:
    """(H, W, 3) float person colours: skin, hair, top, bottom and shoes, each with its own texture."""
    h, w = regions.shape
    person = np.zeros((h, w, 3), dtype=np.float32)
    for region in np.unique(regions):
        if region == 0:
            continue
        if region == SKIN:
            texture = _skin_colour(rng) * (0.9 + 0.2 * smooth_noise(rng, h, w, 6))[..., None]
        elif region == HAIR:
            colour = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.8, 1.2)
            texture = colour * (0.8 + 0.4 * smooth_noise(rng, h, w, 30))[..., None]
        elif region == SHOES:
            texture = cloth_texture(rng, h, w, random_colour(rng, value=(0.05, 0.7)))
        else:
            texture = cloth_texture(rng, h, w, random_colour(rng))
        sel = regions == region
        person[sel] = texture[sel]
    return person


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Lighting, blur, sensor noise and JPEG: float (H, W, 3) -> uint8."""
    h, w = image.shape[:2]
    image = image * lighting_field(rng, h, w)[..., None]
    out = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    arr = np.asarray(out, dtype=np.float32)
    sigma = rng.uniform(0, 8)
    if sigma > 0.5:
        arr = arr + rng.normal(0, sigma, size=arr.shape).astype(np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=int(rng.integers(50, 96)))
        out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(out).copy()


def render_sample(rng: np.random.Generator, height: int, width: int, *, effects: bool = True,
                  side_probability: float = 0.4) -> SyntheticSample:
    """One synthetic photo and its exact mask. ``effects=False`` skips lighting, blur, noise and JPEG."""
    canvas = Image.fromarray(np.clip(random_background(rng, height, width), 0, 255).astype(np.uint8))
    draw_distractors(rng, canvas, int(rng.integers(0, 6)))
    background = np.asarray(canvas, dtype=np.float32)
    figure = sample_figure(rng, height, width, side_probability=side_probability)
    regions = rasterize(figure, height, width)
    mask = regions > 0
    composite = np.where(mask[..., None], _dress(rng, regions), background)
    scene = background
    occluded = rng.random() < 0.1
    if occluded:  # an object in front of the person: its pixels are not the person
        front = Image.fromarray(composite.astype(np.uint8))
        occluder = draw_distractors(rng, front, 1, scale=(0.2, 0.45))
        composite = np.asarray(front, dtype=np.float32)
        scene = np.where(occluder[..., None], composite, background)
        mask &= ~occluder
        regions = np.where(occluder, 0, regions).astype(np.uint8)
    image = _camera(rng, composite) if effects else composite.astype(np.uint8)
    return SyntheticSample(image, mask, figure.view, scene.astype(np.uint8), regions, occluded)


class SyntheticPeople(Dataset):
    """``num_images`` synthetic (image, mask) pairs; item ``i`` is a pure function of ``(seed, i)``.

    Items are ``(image (H, W, 3) uint8, mask (H, W) bool)``, the same contract as
    :class:`~alisnet_export.data.datasets.SegmentationFolder`.
    """

    def __init__(self, num_images: int, height: int = 256, width: int = 192, seed: int = 0, *,
                 effects: bool = True, side_probability: float = 0.4) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if height < 32 or width < 32:
            raise ValueError(f"synthetic images must be at least 32x32, got {height}x{width}")
        self.num_images = num_images
        self.height, self.width = height, width
        self.seed = seed
        self.effects = effects
        self.side_probability = side_probability

    def __len__(self) -> int:
        return self.num_images

    def sample(self, index: int) -> SyntheticSample:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} synthetic images")
        rng = np.random.default_rng([self.seed, index])
        return render_sample(rng, self.height, self.width, effects=self.effects, side_probability=self.side_probability)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.sample(int(index))
        return s.image, s.mask

    def describe(self) -> str:
        return f"{self.num_images} synthetic people {self.height}x{self.width} (seed {self.seed})"


def write_synthetic_dataset(out_dir: str | Path, num_images: int, height: int = 256, width: int = 192, seed: int = 0, *,
                            start: int = 0, force: bool = False, progress: Optional[Callable[[int], None]] = None) -> Path:
    """Write ``out_dir/images/NNNNNN.png`` and ``out_dir/masks/NNNNNN.png`` (0/255): the folder layout
    :class:`~alisnet_export.data.datasets.SegmentationFolder` reads. Returns ``out_dir``.

    ``start``: write images ``start .. start + num_images - 1`` of the seed stream (shards of one set, rendered
    by several processes into one folder; a shard with ``start > 0`` may add to a folder that holds files)."""
    out_dir = Path(out_dir)
    images, masks = out_dir / "images", out_dir / "masks"
    for folder in (images, masks):
        if start == 0 and folder.is_dir() and any(folder.iterdir()) and not force:
            raise OutputError(f"{folder}: already holds files; pass force=True (--force) or choose another folder.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{folder}: cannot create it: {exc.strerror}") from None
    data = SyntheticPeople(start + num_images, height, width, seed)
    for n, i in enumerate(range(start, start + num_images)):
        image, mask = data[i]
        Image.fromarray(image).save(images / f"{i:06d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"{i:06d}.png")
        if progress:
            progress(n + 1)
    return out_dir
