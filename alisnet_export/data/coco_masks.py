"""COCO segmentation decoding without pycocotools: polygons, uncompressed RLE and compressed RLE.

COCO run-length encoding (``pycocotools/maskApi.c``): the mask is flattened in column-major
(Fortran) order; ``counts`` alternate runs of 0s and 1s, starting with 0s. The compressed form
stores ``counts`` as an ASCII string: each count is written in 5-bit groups, least significant
first, as ``chr(48 + group)`` with bit 0x20 meaning "more groups follow" and bit 0x10 of the last
group the sign; from the fourth count on, the difference to the count two places back is stored.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["decode_rle_counts", "encode_rle_counts", "rle_to_mask", "mask_to_rle", "polygons_to_mask", "segmentation_to_mask"]


def decode_rle_counts(text: str | bytes) -> list[int]:
    """COCO's compressed ``counts`` string -> the list of run lengths (``rleFrString``)."""
    s = text.decode("ascii") if isinstance(text, bytes) else text
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError(f"compressed RLE string ends in the middle of a count: {s[:40]!r}")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"compressed RLE string has an invalid character {s[p]!r} at position {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)  # negative: sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_rle_counts(counts: Sequence[int]) -> str:
    """The inverse of :func:`decode_rle_counts` (``rleToString``), for writing COCO files and for tests."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """``{"size": [h, w], "counts": list | str}`` -> (h, w) bool."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    counts = decode_rle_counts(counts) if isinstance(counts, (str, bytes)) else [int(c) for c in counts]
    if any(c < 0 for c in counts):
        raise ValueError("RLE has a negative run length")
    if sum(counts) != h * w:
        raise ValueError(f"RLE run lengths sum to {sum(counts)}, but size {h}x{w} needs {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T  # column-major


def mask_to_rle(mask: np.ndarray, *, compressed: bool = True) -> dict[str, Any]:
    """(h, w) bool -> COCO RLE (``counts`` a string when ``compressed``, else a list of ints)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs  # counts always start with a run of 0s
    h, w = mask.shape
    return {"size": [h, w], "counts": encode_rle_counts(runs) if compressed else runs}


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (pixel coordinates) -> (h, w) bool union."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(f"a polygon needs an even number (>= 6) of coordinates, got {len(poly)}")
        draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly), 2)], fill=1)
    return np.asarray(canvas) > 0


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Any COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) -> (h, w) bool."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        mask = rle_to_mask(segmentation)
        if mask.shape != (height, width):
            raise ValueError(f"RLE size {list(mask.shape)} differs from the image size {[height, width]}")
        return mask
    raise ValueError(f"unknown segmentation format {type(segmentation).__name__}; expected polygons or RLE")
