"""Person-like figures for the synthetic generator: body parts as rounded polygons, front and side views.

Proportions are in *head heights* (``hh``), the unit figure drawing uses: an adult is 6.8-8 heads
tall, shoulders are about 2 heads wide, the crotch is at about 4 heads. Poses are those of fashion
size-and-fit photos (the paper's use case): standing, arms hanging at narrow angles from the body,
legs close together, with some variation (a hand on the hip, a small stride, a tilted head).

A figure is a list of :class:`Part` polygons in drawing order (back to front); each carries a body
*region* (skin, hair, top, bottom, shoes) so the composer can dress it. The person mask is exactly
the union of the rasterised parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ._textures import regular_polygon

__all__ = ["SKIN", "HAIR", "TOP", "BOTTOM", "SHOES", "REGIONS", "Part", "Figure", "sample_figure", "rasterize"]

SKIN, HAIR, TOP, BOTTOM, SHOES = 1, 2, 3, 4, 5
REGIONS = {"skin": SKIN, "hair": HAIR, "top": TOP, "bottom": BOTTOM, "shoes": SHOES}

Point = tuple[float, float]


@dataclass(frozen=True)
class Part:
    name: str
    region: int
    polygon: list[Point]


@dataclass
class Figure:
    view: str  # "front" or "side"
    parts: list[Part]
    head_height: float


def _deg(rng: np.random.Generator, lo: float, hi: float) -> float:
    return math.radians(rng.uniform(lo, hi))


def capsule(p: Point, q: Point, r0: float, r1: float, n: int = 8) -> list[Point]:
    """A limb segment: p -> q, half-width r0 at p and r1 at q, with rounded ends."""
    a = math.atan2(q[1] - p[1], q[0] - p[0])
    pts = []
    for k in range(n + 1):  # the q end, a half circle facing forward
        t = a - math.pi / 2 + math.pi * k / n
        pts.append((q[0] + r1 * math.cos(t), q[1] + r1 * math.sin(t)))
    for k in range(n + 1):  # the p end, a half circle facing backward
        t = a + math.pi / 2 + math.pi * k / n
        pts.append((p[0] + r0 * math.cos(t), p[1] + r0 * math.sin(t)))
    return pts


def ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 28) -> list[Point]:
    """An ellipse rotated by ``angle`` (radians) as a polygon."""
    ca, sa = math.cos(angle), math.sin(angle)
    pts = []
    for x, y in regular_polygon(0.0, 0.0, rx, ry, n):
        pts.append((cx + x * ca - y * sa, cy + x * sa + y * ca))
    return pts


def _along(p: Point, q: Point, t: float) -> Point:
    return (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))


def _limb_end(start: Point, length: float, angle_from_down: float) -> Point:
    """The end of a segment hanging from ``start`` at ``angle_from_down`` (radians, + is towards +x)."""
    return (start[0] + length * math.sin(angle_from_down), start[1] + length * math.cos(angle_from_down))


@dataclass(frozen=True)
class _Body:
    """Sampled proportions (pixels) shared by both views."""

    hh: float
    cx: float
    top: float
    height: float
    build: float
    shoulder_y: float
    waist_y: float
    hip_y: float
    crotch_y: float
    ankle_y: float


def _sample_body(rng: np.random.Generator, cx: float, top: float, height: float) -> _Body:
    hh = height / rng.uniform(6.8, 8.0)
    return _Body(
        hh=hh, cx=cx, top=top, height=height, build=rng.uniform(0.82, 1.22),
        shoulder_y=top + hh * rng.uniform(1.3, 1.45), waist_y=top + hh * rng.uniform(2.6, 2.9),
        hip_y=top + hh * rng.uniform(3.3, 3.6), crotch_y=top + hh * rng.uniform(3.75, 3.95),
        ankle_y=top + height - hh * 0.22,
    )


def _arm(rng: np.random.Generator, name: str, shoulder: Point, b: _Body, out_angle: float, bend: float,
         sleeve: float) -> list[Part]:
    """Upper arm + forearm + hand; ``sleeve`` in [0, 1] is how much of the arm the top covers."""
    hh = b.hh
    upper, fore = hh * rng.uniform(1.25, 1.45), hh * rng.uniform(1.05, 1.25)
    r_sh, r_el, r_wr = hh * rng.uniform(0.15, 0.2) * b.build, hh * rng.uniform(0.11, 0.13), hh * rng.uniform(0.08, 0.1)
    elbow = _limb_end(shoulder, upper, out_angle)
    wrist = _limb_end(elbow, fore, out_angle + bend)
    hand_angle = out_angle + bend + _deg(rng, -10, 10)
    hand_c = _limb_end(wrist, hh * 0.2, hand_angle)
    parts = [
        Part(f"{name}_upper_arm", SKIN, capsule(shoulder, elbow, r_sh, r_el)),
        Part(f"{name}_forearm", SKIN, capsule(elbow, wrist, r_el, r_wr)),
        Part(f"{name}_hand", SKIN, ellipse(hand_c[0], hand_c[1], hh * 0.1, hh * 0.22, -hand_angle)),
    ]
    if sleeve > 0:  # the top's sleeve is a slightly wider capsule over the covered length
        if sleeve <= 0.5:
            end = _along(shoulder, elbow, sleeve * 2)
            parts.append(Part(f"{name}_sleeve", TOP, capsule(shoulder, end, r_sh * 1.08, r_el * 1.15 + (r_sh - r_el) * (1 - sleeve * 2))))
        else:
            end = _along(elbow, wrist, (sleeve - 0.5) * 2)
            parts.append(Part(f"{name}_sleeve", TOP, capsule(shoulder, elbow, r_sh * 1.08, r_el * 1.1)))
            parts.append(Part(f"{name}_sleeve_lower", TOP, capsule(elbow, end, r_el * 1.1, r_wr * 1.2)))
    return parts


def _leg(rng: np.random.Generator, name: str, hip: Point, b: _Body, angle: float, knee_bend: float,
         trousers: float, foot: str, facing: int) -> list[Part]:
    """Thigh + shin + foot; ``trousers`` in [0, 1] is how much of the leg the bottom covers."""
    hh = b.hh
    length = (b.ankle_y - hip[1]) / math.cos(angle)
    knee = _limb_end(hip, length * 0.5, angle)
    ankle = _limb_end(knee, length * 0.5, angle + knee_bend)
    r_th, r_kn, r_an = hh * rng.uniform(0.28, 0.38) * b.build, hh * rng.uniform(0.16, 0.2), hh * rng.uniform(0.1, 0.12)
    parts = [Part(f"{name}_thigh", SKIN, capsule(hip, knee, r_th, r_kn)),
             Part(f"{name}_shin", SKIN, capsule(knee, ankle, r_kn, r_an))]
    if trousers > 0:
        if trousers <= 0.5:
            end = _along(hip, knee, trousers * 2)
            parts.append(Part(f"{name}_shorts", BOTTOM, capsule(hip, end, r_th * 1.06, r_th * 1.06)))
        else:
            end = _along(knee, ankle, (trousers - 0.5) * 2)
            flare = rng.uniform(1.05, 1.5)  # slim to wide trousers
            parts.append(Part(f"{name}_trouser_upper", BOTTOM, capsule(hip, knee, r_th * 1.06, r_kn * 1.15 * flare)))
            parts.append(Part(f"{name}_trouser_lower", BOTTOM, capsule(knee, end, r_kn * 1.15 * flare, r_an * 1.3 * flare)))
    if foot == "front":  # seen from the front: a short ellipse turned slightly outwards
        c = (ankle[0] + facing * hh * 0.04, ankle[1] + hh * 0.1)
        parts.append(Part(f"{name}_foot", SHOES, ellipse(c[0], c[1], hh * 0.15, hh * 0.12, facing * _deg(rng, 0, 20))))
    else:  # seen from the side: a long ellipse pointing where the person faces
        c = (ankle[0] + facing * hh * 0.22, ankle[1] + hh * 0.1)
        parts.append(Part(f"{name}_foot", SHOES, ellipse(c[0], c[1], hh * 0.42, hh * 0.12, _deg(rng, -5, 5))))
    return parts


def _hair(rng: np.random.Generator, head: tuple[float, float, float, float], b: _Body, back_dir: float) -> tuple[list[Part], list[Part]]:
    """``(behind_body, over_head)`` hair parts for one of a few styles."""
    hx, hy, rx, ry = head
    style = rng.choice(["short", "short", "long", "bun", "none"])
    behind: list[Part] = []
    over: list[Part] = []
    if style == "none":
        return behind, over
    cap = ellipse(hx + back_dir * rx * 0.12, hy - ry * rng.uniform(0.25, 0.4), rx * rng.uniform(1.03, 1.15),
                  ry * rng.uniform(0.6, 0.8))
    over.append(Part("hair", HAIR, cap))
    if style == "long":
        bottom = b.shoulder_y + b.hh * rng.uniform(0.2, 1.3)
        x0 = hx + back_dir * rx * 0.2
        half = rx * rng.uniform(1.05, 1.35)
        behind.append(Part("long_hair", HAIR, capsule((x0, hy), (x0, bottom), half, half * 0.8)))
    elif style == "bun":
        over.append(Part("hair_bun", HAIR, ellipse(hx + back_dir * rx * 0.6, hy - ry * 0.8, rx * 0.4, rx * 0.4)))
    return behind, over


def _front(rng: np.random.Generator, b: _Body) -> list[Part]:
    hh, cx = b.hh, b.cx
    sw = hh * rng.uniform(0.78, 1.0) * b.build  # half shoulder width
    ww, hw = hh * rng.uniform(0.45, 0.62) * b.build, hh * rng.uniform(0.6, 0.82) * b.build
    neck_w = hh * rng.uniform(0.2, 0.27) * b.build
    head = (cx + hh * rng.uniform(-0.05, 0.05), b.top + hh * 0.5, hh * rng.uniform(0.36, 0.42), hh * 0.5)
    tilt = _deg(rng, -8, 8)
    sy = b.shoulder_y
    left = [(cx - neck_w * 1.2, sy - hh * 0.12), (cx - sw * 0.75, sy - hh * 0.04), (cx - sw, sy + hh * 0.2),
            (cx - sw * 0.9, sy + hh * 0.8), (cx - ww, b.waist_y), (cx - hw, b.hip_y), (cx - hw * 0.92, b.crotch_y)]
    torso = left + [(2 * cx - x, y) for x, y in reversed(left)]
    sleeve = rng.choice([0.0, 0.3, 0.5, 0.8, 1.0, 1.0])
    trousers = rng.choice([0.0, 0.3, 1.0, 1.0, 1.0])
    skirt = rng.random() < 0.25
    if skirt:
        trousers = 0.0
    legs_out = (_deg(rng, 0, 7), _deg(rng, 0, 7))
    if rng.random() < 0.15:  # one leg stepped out
        legs_out = (legs_out[0] + _deg(rng, 4, 10), legs_out[1])
    parts: list[Part] = []
    behind, over = _hair(rng, head, b, 0.0)
    parts += behind
    for side, out in ((-1, legs_out[0]), (1, legs_out[1])):
        hip = (cx + side * hw * 0.48, b.hip_y)
        parts += _leg(rng, "left" if side < 0 else "right", hip, b, side * out, side * _deg(rng, -3, 3), trousers, "front", side)
    parts.append(Part("neck", SKIN, capsule((cx, head[1] + hh * 0.3), (cx, sy), neck_w, neck_w * 1.1)))
    parts.append(Part("torso", TOP, torso))
    if skirt:  # a skirt / dress hem: a trapezoid from the waist to around the knee
        hem_y = b.hip_y + hh * rng.uniform(0.6, 1.9)
        hem = hw * rng.uniform(1.05, 1.6)
        parts.append(Part("skirt", BOTTOM, [(cx - ww, b.waist_y), (cx + ww, b.waist_y), (cx + hem, hem_y), (cx - hem, hem_y)]))
    elif trousers > 0:
        parts.append(Part("waistband", BOTTOM, [(cx - ww * 1.02, b.waist_y + hh * 0.15), (cx + ww * 1.02, b.waist_y + hh * 0.15),
                                                (cx + hw * 1.02, b.hip_y), (cx + hw * 0.94, b.crotch_y),
                                                (cx - hw * 0.94, b.crotch_y), (cx - hw * 1.02, b.hip_y)]))
    for side in (-1, 1):
        shoulder = (cx + side * sw * 0.85, sy + hh * 0.22)
        out, bend = _deg(rng, 4, 20), _deg(rng, -6, 10)
        if rng.random() < 0.12:  # hand on the hip: elbow out, forearm back in
            out, bend = _deg(rng, 35, 55), -_deg(rng, 70, 100)
        parts += _arm(rng, "left" if side < 0 else "right", shoulder, b, side * out, side * bend, sleeve)
    parts.append(Part("head", SKIN, ellipse(head[0], head[1], head[2], head[3], tilt)))
    parts += over
    return parts


def _side(rng: np.random.Generator, b: _Body, facing: int) -> list[Part]:
    """Seen from the side, facing +x (``facing`` = 1) or -x (-1); only the near arm is fully visible."""
    hh, cx, f = b.hh, b.cx, facing
    d = hh * rng.uniform(0.32, 0.42) * b.build  # half body depth
    head = (cx + f * hh * rng.uniform(0.02, 0.12), b.top + hh * 0.5, hh * rng.uniform(0.42, 0.48), hh * 0.5)
    hx, hy, rx, ry = head
    sy = b.shoulder_y
    profile = [  # back line top to bottom, then the front line bottom to top, as (depth offset, y)
        (-0.6, sy - hh * 0.15), (-1.05, sy + hh * 0.15), (-1.0, b.waist_y - hh * 0.3), (-0.85, b.waist_y),
        (-1.25, b.hip_y), (-1.0, b.crotch_y + hh * 0.1), (0.85, b.crotch_y), (0.95, b.hip_y),
        (0.85 + rng.uniform(0, 0.3), b.waist_y), (1.25 * rng.uniform(0.9, 1.15), sy + hh * 0.6), (0.85, sy),
        (0.3, sy - hh * 0.15),
    ]
    torso = [(cx + f * k * d, y) for k, y in profile]
    sleeve = rng.choice([0.0, 0.3, 0.5, 0.8, 1.0, 1.0])
    trousers = rng.choice([0.0, 0.3, 1.0, 1.0, 1.0])
    skirt = rng.random() < 0.25
    if skirt:
        trousers = 0.0
    stride = _deg(rng, 0, 10)
    shoulder = (cx + f * d * 0.1, sy + hh * 0.25)
    parts: list[Part] = []
    behind, over = _hair(rng, head, b, -f)
    parts += behind
    if rng.random() < 0.5:  # the far arm, mostly hidden behind the torso
        parts += _arm(rng, "far", (shoulder[0] - f * d * 0.2, shoulder[1]), b, f * _deg(rng, -20, 25), f * _deg(rng, 0, 25), sleeve)
    for name, angle in (("far", -stride * 0.6), ("near", stride)):
        hip = (cx - f * d * 0.05, b.hip_y)
        parts += _leg(rng, name, hip, b, f * angle, -f * _deg(rng, 0, 6), trousers, "side", f)
    parts.append(Part("neck", SKIN, capsule((hx - f * rx * 0.2, hy + hh * 0.3), (cx + f * d * 0.1, sy), hh * 0.13, hh * 0.15)))
    parts.append(Part("torso", TOP, torso))
    if skirt:
        hem_y = b.hip_y + hh * rng.uniform(0.6, 1.9)
        hem = d * rng.uniform(1.3, 1.9)
        parts.append(Part("skirt", BOTTOM, [(cx - d * 0.9, b.waist_y), (cx + d * 0.9, b.waist_y), (cx + hem, hem_y), (cx - hem, hem_y)]))
    parts += _arm(rng, "near", shoulder, b, f * _deg(rng, -12, 15), f * _deg(rng, 0, 30), sleeve)
    nose = [(hx + f * rx * 0.85, hy - ry * 0.15), (hx + f * (rx + hh * 0.09), hy + ry * 0.12), (hx + f * rx * 0.85, hy + ry * 0.22)]
    parts.append(Part("head", SKIN, ellipse(hx, hy, rx, ry, _deg(rng, -6, 6))))
    parts.append(Part("nose", SKIN, nose))
    parts += over
    return parts


def sample_figure(rng: np.random.Generator, height: int, width: int, *, side_probability: float = 0.4) -> Figure:
    """A random standing person framed as in a portrait (size-and-fit) photo of ``height`` x ``width``."""
    if rng.random() < 0.15:  # zoomed in: feet (and sometimes the head) leave the frame
        fig_h = height * rng.uniform(1.0, 1.3)
        top = height * rng.uniform(-0.08, 0.06)
    else:
        fig_h = height * rng.uniform(0.72, 0.98)
        top = (height - fig_h) / 2 + height * rng.uniform(-0.05, 0.05)
    cx = width / 2 + width * rng.uniform(-0.1, 0.1)
    body = _sample_body(rng, cx, top, fig_h)
    if rng.random() < side_probability:
        return Figure("side", _side(rng, body, 1 if rng.random() < 0.5 else -1), body.hh)
    return Figure("front", _front(rng, body), body.hh)


def rasterize(figure: Figure, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 map of body regions (0 = not the person), later parts drawn over earlier ones."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for part in figure.parts:
        draw.polygon(part.polygon, fill=part.region)
    return np.asarray(canvas).copy()
