"""Copy-paste compositing in portrait framing: person cut-outs on person-free backgrounds.

Shape shorthand: H, W = the output sample's height and width (portrait: H > W).

* :func:`cutouts_from_label` cuts every labelled person (a connected component of the mask that does
  not touch the image border) out of a photo or frame, with its soft alpha.
* :func:`portrait_crop` takes a randomly scaled, flipped H x W window of an image (and its mask),
  optionally centred near a person: backgrounds, labelled frames and photos go through it.
* :func:`composite_portrait` pastes 1-3 cut-outs, randomly scaled, placed and flipped, onto a portrait
  crop of a background. The label is ``pasted alpha > 0.5``: exactly the pixels where the person's
  colour dominates the blend, so image and mask agree by construction.

Every function takes a ``numpy.random.Generator``: the same seed gives the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["Cutout", "cutouts_from_label", "portrait_crop", "composite_portrait", "resize_rgb", "resize_alpha"]


@dataclass(frozen=True)
class Cutout:
    """One person (or a touching group) cut from a labelled image."""

    rgb: np.ndarray  # (h, w, 3) uint8
    alpha: np.ndarray  # (h, w) float32 in [0, 1]; alpha > 0.5 is the pseudo-label
    source: str
    max_upscale: float = 2.0  # low-resolution people get blurry beyond this


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 -> (H, W, 3) uint8, bilinear (PIL antialiases when shrinking)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if alpha.shape == (h, w):
        return alpha.astype(np.float32)
    out = Image.fromarray(np.ascontiguousarray(alpha, dtype=np.float32)).resize((w, h), Image.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def cutouts_from_label(image: np.ndarray, alpha: np.ndarray, mask: np.ndarray, source: str, *, min_height: int = 40,
                       pad: int = 3, max_upscale: float = 2.0) -> list[Cutout]:
    """The labelled people of ``image`` that are at least ``min_height`` tall and do not touch its border."""
    h, w = mask.shape
    components, _ = ndimage.label(mask)
    out: list[Cutout] = []
    for k, sl in enumerate(ndimage.find_objects(components), start=1):
        if sl is None:
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        if y1 - y0 < min_height or y0 == 0 or x0 == 0 or y1 == h or x1 == w:
            continue
        y0, x0, y1, x1 = max(0, y0 - pad), max(0, x0 - pad), min(h, y1 + pad), min(w, x1 + pad)
        own = ndimage.binary_dilation(components[y0:y1, x0:x1] == k, iterations=pad)
        soft = np.where(own, alpha[y0:y1, x0:x1], 0.0).astype(np.float32)
        out.append(Cutout(image[y0:y1, x0:x1].copy(), soft, source, max_upscale))
    return out


def portrait_crop(rng: np.random.Generator, image: np.ndarray, alpha: Optional[np.ndarray], size: tuple[int, int], *,
                  scale: Optional[float] = None, scale_range: tuple[float, float] = (0.5, 1.0),
                  near_person: bool = False, flip: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A random H x W window of ``image`` and its label (``alpha > 0.5``; empty when ``alpha`` is None).

    ``scale`` (output px per input px) fixes the zoom, e.g. the evaluation scale of a video frame;
    otherwise the window is the largest H:W window times a uniform factor from ``scale_range``. With
    ``near_person`` the window is centred near a random labelled pixel.
    """
    out_h, out_w = size
    h, w = image.shape[:2]
    if scale is None:
        fit = min(h / out_h, w / out_w)  # input px per output px of the largest window
        scale = 1.0 / (fit * rng.uniform(*scale_range))
    win_h, win_w = min(h, int(round(out_h / scale))), min(w, int(round(out_w / scale)))
    if near_person and alpha is not None and (alpha > 0.5).any():
        ys, xs = np.nonzero(alpha > 0.5)
        i = int(rng.integers(len(ys)))
        cy, cx = ys[i] + rng.normal(0, win_h * 0.1), xs[i] + rng.normal(0, win_w * 0.15)
        y0, x0 = int(np.clip(cy - win_h / 2, 0, h - win_h)), int(np.clip(cx - win_w / 2, 0, w - win_w))
    else:
        y0, x0 = int(rng.integers(0, h - win_h + 1)), int(rng.integers(0, w - win_w + 1))
    crop = resize_rgb(image[y0:y0 + win_h, x0:x0 + win_w], size)
    soft = (resize_alpha(alpha[y0:y0 + win_h, x0:x0 + win_w], size) if alpha is not None
            else np.zeros(size, dtype=np.float32))
    if rng.random() < flip:
        crop, soft = crop[:, ::-1], soft[:, ::-1]
    return np.ascontiguousarray(crop), np.ascontiguousarray(soft > 0.5)


def _recolor(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """Permute the colour channels and scale each (or turn grey): same shape and shading, other clothes."""
    if rng.random() < 0.25:
        return np.repeat((rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None], 3, axis=2)
    out = rgb[..., rng.permutation(3)] * rng.uniform(0.6, 1.4, size=3).astype(np.float32)
    return np.clip(out, 0, 255)


def _pick_count(rng: np.random.Generator, max_people: int) -> int:
    weights = np.array([0.6, 0.3, 0.1][:max_people])
    return int(rng.choice(np.arange(1, len(weights) + 1), p=weights / weights.sum()))


def composite_portrait(rng: np.random.Generator, background: np.ndarray, cutouts: Sequence[Cutout],
                       size: tuple[int, int], *, max_people: int = 3,
                       height_range: tuple[float, float] = (0.35, 1.15), max_upscale: Optional[float] = None,
                       recolor: float = 0.0,
                       top_range: Optional[tuple[float, float]] = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """1..``max_people`` cut-outs pasted onto a portrait crop of ``background``.

    Returns ``(image (H, W, 3) uint8, mask (H, W) bool, sources of the cut-outs pasted)``.

    A person's height is a uniform fraction ``height_range`` of H (above 1: cut by the bottom edge,
    the head-and-torso framing of portraits), capped at ``max_upscale`` times the cut-out's own size;
    the feet land between 55% and 120% of H. ``max_upscale`` overrides every cut-out's own cap (e.g. to
    show the video's small pedestrians at portrait size: blurry, but hundreds of body shapes and poses).
    With probability ``recolor`` a person's colours are remapped (channels permuted, gains, or grey), so
    the few large real people are not learnt by their clothes. ``top_range`` places the head's top at that
    fraction of H instead (the head-and-torso framing of a portrait).
    """
    if not cutouts:
        raise ValueError("composite_portrait needs at least one cut-out")
    out_h, out_w = size
    canvas, _ = portrait_crop(rng, background, None, size, scale_range=(0.4, 1.0))
    canvas = canvas.astype(np.float32)
    mask = np.zeros(size, dtype=bool)
    pasted: list[str] = []
    for _ in range(_pick_count(rng, max_people)):
        cut = cutouts[int(rng.integers(len(cutouts)))]
        ch, cw = cut.alpha.shape
        target_h = min(rng.uniform(*height_range) * out_h, (max_upscale or cut.max_upscale) * ch)
        th, tw = max(8, int(round(target_h))), max(4, int(round(cw * target_h / ch)))
        rgb, soft = resize_rgb(cut.rgb, (th, tw)).astype(np.float32), resize_alpha(cut.alpha, (th, tw))
        if rng.random() < recolor:
            rgb = _recolor(rng, rgb)
        if rng.random() < 0.5:
            rgb, soft = rgb[:, ::-1], soft[:, ::-1]
        rgb = np.clip(rgb * rng.uniform(0.85, 1.15), 0, 255)  # a little lighting mismatch, as in real photos
        if top_range is not None:  # portrait framing: the head near the top edge, the body cut by the bottom
            bottom = int(rng.uniform(*top_range) * out_h) + th
        else:
            bottom = int(rng.uniform(0.55, 1.2) * out_h)
        top, left = bottom - th, int(rng.uniform(*sorted((-0.25 * tw, out_w - 0.75 * tw))))  # wide poses: overlap
        ys, xs = slice(max(0, top), min(out_h, bottom)), slice(max(0, left), min(out_w, left + tw))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        cy, cx = slice(ys.start - top, ys.stop - top), slice(xs.start - left, xs.stop - left)
        a = soft[cy, cx][..., None]
        canvas[ys, xs] = canvas[ys, xs] * (1 - a) + rgb[cy, cx] * a
        mask[ys, xs] |= soft[cy, cx] > 0.5
        pasted.append(cut.source)
    return canvas.round().astype(np.uint8), mask, pasted
