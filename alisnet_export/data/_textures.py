"""Procedural textures for the synthetic-people generator: backgrounds, cloth, distractors, lighting.

Every function takes a ``numpy.random.Generator`` and returns float32 RGB in [0, 255] (or a [0, 1]
field); nothing here knows about people. Only numpy and PIL are used so a 256 x 192 scene takes a few
milliseconds.
"""

from __future__ import annotations

import colorsys
import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "random_colour",
    "smooth_noise",
    "random_background",
    "cloth_texture",
    "draw_distractors",
    "regular_polygon",
    "lighting_field",
    "BACKGROUND_KINDS",
]


def random_colour(rng: np.random.Generator, *, saturation: tuple[float, float] = (0.1, 0.9),
                  value: tuple[float, float] = (0.15, 0.95)) -> np.ndarray:
    """A random RGB colour (3,) in [0, 255], drawn uniformly in HSV."""
    h = rng.uniform(0, 1)
    s = rng.uniform(*saturation)
    v = rng.uniform(*value)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Value noise in [0, 1]: a random grid of about ``cells`` cells along the long side, bicubic-upsampled."""
    gh = max(2, int(round(cells * h / max(h, w))) + 1)
    gw = max(2, int(round(cells * w / max(h, w))) + 1)
    grid = (rng.uniform(0, 255, size=(gh, gw))).astype(np.uint8)
    field = np.asarray(Image.fromarray(grid, "L").resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
    return field


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def _rotated(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in a frame rotated by a random angle."""
    xs, ys = _coords(h, w)
    a = rng.uniform(0, math.pi)
    return xs * math.cos(a) + ys * math.sin(a), -xs * math.sin(a) + ys * math.cos(a)


def _mix(field: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    return c0 + field[..., None] * (c1 - c0)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    u, _ = _rotated(rng, h, w)
    u = (u - u.min()) / max(1e-6, float(u.max() - u.min()))
    return _mix(u, random_colour(rng), random_colour(rng))


def _stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    u, _ = _rotated(rng, h, w)
    period = rng.uniform(4, 40)
    wave = np.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi))
    field = (wave > rng.uniform(-0.5, 0.5)).astype(np.float32) if rng.random() < 0.6 else (wave + 1) / 2
    return _mix(field, random_colour(rng), random_colour(rng))


def _checker(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    u, v = _rotated(rng, h, w) if rng.random() < 0.5 else _coords(h, w)
    size = rng.uniform(6, 48)
    field = ((np.floor(u / size) + np.floor(v / size)) % 2).astype(np.float32)
    return _mix(field, random_colour(rng), random_colour(rng))


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    field = 0.6 * smooth_noise(rng, h, w, rng.uniform(2, 8)) + 0.4 * smooth_noise(rng, h, w, rng.uniform(10, 40))
    if rng.random() < 0.5:  # three-colour palette looks like foliage, stone, carpet...
        return np.where(field[..., None] < 0.5, _mix(field * 2, random_colour(rng), random_colour(rng)),
                        _mix(field * 2 - 1, random_colour(rng), random_colour(rng)))
    return _mix(field, random_colour(rng), random_colour(rng))


def _blobs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    canvas = Image.new("RGB", (w, h), tuple(int(c) for c in random_colour(rng)))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(4, 14)):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.05, 0.35) * w, rng.uniform(0.05, 0.35) * h
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=tuple(int(c) for c in random_colour(rng)))
    return np.asarray(canvas, dtype=np.float32)


def _shapes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A "room": a few big rectangles (walls, doors, shelves, windows) over a base colour."""
    canvas = Image.new("RGB", (w, h), tuple(int(c) for c in random_colour(rng)))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(2, 8)):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.8) * w, y0 + rng.uniform(0.1, 0.8) * h
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(c) for c in random_colour(rng)))
    if rng.random() < 0.5:  # a floor line, as in studio and street photos
        y = rng.uniform(0.6, 0.95) * h
        draw.rectangle((0, y, w, h), fill=tuple(int(c) for c in random_colour(rng)))
    return np.asarray(canvas, dtype=np.float32)


#: background generators, each (rng, h, w) -> (h, w, 3) float32 in [0, 255]
BACKGROUND_KINDS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "gradient": _gradient,
    "stripes": _stripes,
    "checker": _checker,
    "noise": _noise,
    "blobs": _blobs,
    "shapes": _shapes,
}


def random_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One background kind, often blended with a second one through a smooth random mask."""
    kinds = list(BACKGROUND_KINDS)
    base = BACKGROUND_KINDS[kinds[rng.integers(len(kinds))]](rng, h, w)
    if rng.random() < 0.5:
        other = BACKGROUND_KINDS[kinds[rng.integers(len(kinds))]](rng, h, w)
        alpha = np.clip((smooth_noise(rng, h, w, rng.uniform(1.5, 4)) - 0.5) * 4 + 0.5, 0, 1)
        base = base + alpha[..., None] * (other - base)
    return base


def cloth_texture(rng: np.random.Generator, h: int, w: int, colour: np.ndarray) -> np.ndarray:
    """A fabric pattern around ``colour``: plain, stripes, checks, dots or mottled, with soft folds."""
    second = random_colour(rng) if rng.random() < 0.6 else colour * rng.uniform(0.4, 0.8)
    kind = rng.choice(["plain", "plain", "stripes", "checks", "dots", "mottled"])
    xs, ys = _coords(h, w)
    if kind == "stripes":
        period = rng.uniform(3, 16)
        u = ys if rng.random() < 0.6 else xs
        field = (np.sin(2 * math.pi * u / period) > 0).astype(np.float32)
    elif kind == "checks":
        size = rng.uniform(3, 14)
        field = ((np.floor(xs / size) + np.floor(ys / size)) % 2).astype(np.float32) * rng.uniform(0.4, 1.0)
    elif kind == "dots":
        period = rng.uniform(5, 14)
        d = np.hypot((xs % period) - period / 2, (ys % period) - period / 2)
        field = (d < period * rng.uniform(0.15, 0.35)).astype(np.float32)
    elif kind == "mottled":
        field = smooth_noise(rng, h, w, rng.uniform(8, 30))
    else:
        field = np.zeros((h, w), dtype=np.float32)
    texture = _mix(field, colour.astype(np.float32), second.astype(np.float32))
    folds = 0.85 + 0.3 * smooth_noise(rng, h, w, rng.uniform(6, 16))  # fabric folds and shading
    return texture * folds[..., None]


def regular_polygon(cx: float, cy: float, rx: float, ry: float, n: int, angle: float = 0.0,
                    inner: float = 1.0) -> list[tuple[float, float]]:
    """Vertices of an ``n``-gon (``inner`` < 1 gives a star); with large ``n`` it is an ellipse."""
    pts = []
    steps = n * (2 if inner != 1.0 else 1)
    for k in range(steps):
        t = angle + 2 * math.pi * k / steps
        r = inner if (inner != 1.0 and k % 2) else 1.0
        pts.append((cx + rx * r * math.cos(t), cy + ry * r * math.sin(t)))
    return pts


def draw_distractors(rng: np.random.Generator, canvas: Image.Image, count: int,
                     scale: tuple[float, float] = (0.08, 0.35)) -> np.ndarray:
    """Draw ``count`` salient non-person objects on ``canvas`` (RGB, in place); returns their union mask.

    Some are deliberately body-part-like (rounded bars, ellipses the size of a head, poles) so the
    network has to learn the configuration of a person, not "any rounded blob".
    """
    w, h = canvas.size
    draw = ImageDraw.Draw(canvas)
    layer = Image.new("L", (w, h), 0)
    ldraw = ImageDraw.Draw(layer)
    for _ in range(count):
        colour = tuple(int(c) for c in random_colour(rng))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(*scale) * h
        kind = rng.integers(6)
        if kind == 0:  # box (furniture, bags)
            shape = regular_polygon(cx, cy, size * rng.uniform(0.3, 1.0), size * rng.uniform(0.3, 1.0), 4,
                                    rng.uniform(0, math.pi / 2))
        elif kind == 1:  # ellipse (balls, lamps, plates, head-sized blobs)
            shape = regular_polygon(cx, cy, size * rng.uniform(0.2, 0.6), size * rng.uniform(0.2, 0.6), 32)
        elif kind == 2:  # star / spiky polygon
            shape = regular_polygon(cx, cy, size * 0.5, size * 0.5, int(rng.integers(4, 8)), rng.uniform(0, math.pi),
                                    inner=rng.uniform(0.3, 0.7))
        elif kind == 3:  # irregular polygon (rocks, plants)
            shape = [(cx + size * 0.5 * math.cos(t) * rng.uniform(0.4, 1.0), cy + size * 0.5 * math.sin(t) * rng.uniform(0.4, 1.0))
                     for t in np.sort(rng.uniform(0, 2 * math.pi, size=int(rng.integers(5, 10))))]
        elif kind == 4:  # pole or rounded bar (limb-like)
            a = rng.uniform(-0.3, 0.3) + (math.pi / 2 if rng.random() < 0.7 else 0.0)
            half, r = size * rng.uniform(0.8, 2.0), size * rng.uniform(0.05, 0.15)
            dx, dy = math.cos(a) * half, math.sin(a) * half
            nx, ny = -math.sin(a) * r, math.cos(a) * r
            shape = [(cx - dx + nx, cy - dy + ny), (cx + dx + nx, cy + dy + ny), (cx + dx - nx, cy + dy - ny),
                     (cx - dx - nx, cy - dy - ny)]
        else:  # triangle (tents, signs)
            shape = regular_polygon(cx, cy, size * 0.5, size * 0.5, 3, rng.uniform(0, math.pi))
        draw.polygon(shape, fill=colour)
        ldraw.polygon(shape, fill=255)
    return np.asarray(layer) > 0


def lighting_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A multiplicative (h, w) light field: a directional gradient times a soft vignette/hot spot."""
    u, _ = _rotated(rng, h, w)
    u = (u - u.min()) / max(1e-6, float(u.max() - u.min()))
    strength = rng.uniform(0.0, 0.5)
    field = 1.0 - strength / 2 + strength * u
    xs, ys = _coords(h, w)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    spot = np.exp(-(((xs - cx) / w) ** 2 + ((ys - cy) / h) ** 2) * rng.uniform(1, 6))
    field = field * (1.0 + rng.uniform(-0.25, 0.35) * spot)
    return field * rng.uniform(0.7, 1.25)
