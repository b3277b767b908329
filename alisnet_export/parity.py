"""Parity: does an artifact still compute what the float model computes?

The same preprocessed input goes to the float model and to the artifact's runner. Per image:

* ``max_abs_logit`` / ``mean_abs_logit``: |delta logit| over all pixels and classes
* ``max_abs_logit_outside_ties`` (float gates): the same outside PointRend's *tie zone*, the few
  pixels where the top-k point selection may legitimately differ between two computations that agree
  to within the gate's tolerance (:meth:`ALiSNet.tie_zone`). Top-k is discontinuous: a 1e-6 change of
  a near-tied uncertainty refines a different point, changing one pixel's logit by 0.1-1, and kernels
  of other runtimes (XNNPACK, onnxruntime, folded BatchNorm) always differ by ~1e-6. The zone is
  computed from the float model alone, so the artifact cannot widen it. ``flip_pixels`` counts the
  pixels inside it that differ by more than the tolerance, i.e. that PointRend refined differently
  (gated by ``max_flip_fraction``); ``tie_zone_pixels`` reports the zone's size.
* ``mask_iou``: IoU of the person masks (artifact vs float)
* ``pixel_agreement``: fraction of pixels with the same mask label
* ``boundary_mean_px`` / ``boundary_p95_px``: symmetric distance between the two mask contours, in
  input pixels (the product's currency: 2 px at 2k height is ~10 mm of chest circumference)
* ``width_drift_px``: silhouette width difference at several body heights (a proxy for the
  body-measurement error the masks feed)
* ``float_uncertain_fraction``: the fraction of the *float* person mask whose logit margin
  |fg - bg| is below :data:`UNCERTAIN_MARGIN` (1.0). Not a gate: it says how unsure the float model
  itself is. Where it is large, any few-percent logit error (int8) flips those pixels, so no int8
  model can match the float mask there (:func:`uncertain_fraction`)

Gates are per format/precision (:func:`default_thresholds`, from :data:`alisnet_export.formats.PRECISIONS`): float exports near-exact, int8 exports
by mask agreement and boundary pixels. A report passes only when every gate passes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from scipy import ndimage

from .formats import PRECISIONS

__all__ = [
    "BODY_HEIGHTS",
    "ImageMetrics",
    "Thresholds",
    "default_thresholds",
    "describe_logits",
    "GateResult",
    "ParityReport",
    "compare_logits",
    "boundary_distances",
    "contour",
    "width_profile",
    "run_parity",
    "UNCERTAIN_MARGIN",
    "uncertain_fraction",
    "uncertainty_note",
]

#: a float logit margin |fg - bg| below this is "unsure": int8's typical logit error is of this order
UNCERTAIN_MARGIN = 1.0
#: above this fraction of the float mask unsure, reports say plainly that int8 cannot match the float mask
UNCERTAIN_WARN_FRACTION = 0.3


def uncertain_fraction(logits: np.ndarray, margin: float = UNCERTAIN_MARGIN) -> tuple[float, np.ndarray]:
    """``(fraction, where)`` for float (1, K, H, W) logits: the fraction of the person mask (fg > bg) whose
    margin |fg - bg| is below ``margin``, and the (H, W) bool map of unsure pixels (inside or outside the mask)."""
    fg, bg = logits[0, 1].astype(np.float64), logits[0, 0].astype(np.float64)
    where = np.abs(fg - bg) < margin
    mask = fg > bg
    area = int(mask.sum())
    return (float((where & mask).sum() / area) if area else 0.0), where


def uncertainty_note(fractions: dict[str, float], margin: float = UNCERTAIN_MARGIN) -> str:
    """A plain sentence about the float model's own uncertainty on these images (empty when it is small)."""
    if not fractions:
        return ""
    worst = max(fractions, key=fractions.get)
    value = fractions[worst]
    if value < UNCERTAIN_WARN_FRACTION:
        return ""
    return (f"The float model itself is unsure here: {value:.0%} of its person mask on {worst} has a logit margin "
            f"|fg - bg| < {margin:g}. int8 moves logits by a few percent, so no int8 model can match the float mask "
            "there. Calibrate and check on images of the model's own domain, or improve the float model on images "
            "like these; do not read this IoU as a quantization defect.")

#: fractions of the person's height (from the top of the float mask's box) where widths are compared
BODY_HEIGHTS = (0.2, 0.35, 0.5, 0.65, 0.8)


def contour(mask: np.ndarray) -> np.ndarray:
    """The mask's 1-px inner contour (pixels of ``mask`` with a 4-neighbour outside it or at the border)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def boundary_distances(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Distances (px) from each contour pixel of either mask to the nearest contour pixel of the other.

    Empty vs empty gives no distances. Empty vs non-empty gives the image diagonal for every contour pixel:
    the largest distance there can be, finite so that means, percentiles and JSON reports stay valid.
    """
    ca, cb = contour(reference), contour(candidate)
    if not ca.any() and not cb.any():
        return np.zeros(0)
    if not ca.any() or not cb.any():
        return np.full(int(ca.sum() + cb.sum()), float(np.hypot(*reference.shape)))
    da = ndimage.distance_transform_edt(~cb)[ca]  # reference contour -> candidate contour
    db = ndimage.distance_transform_edt(~ca)[cb]
    return np.concatenate([da, db])


def width_profile(mask: np.ndarray, box_rows: tuple[int, int], fractions: Sequence[float] = BODY_HEIGHTS) -> list[int]:
    """Number of person pixels in the rows at ``fractions`` of ``box_rows`` = (top, bottom exclusive)."""
    top, bottom = box_rows
    rows = [min(bottom - 1, top + int(round(f * (bottom - top - 1)))) for f in fractions]
    return [int(mask[r].sum()) for r in rows]


@dataclass
class ImageMetrics:
    name: str
    height: int
    width: int
    max_abs_logit: float
    mean_abs_logit: float
    mask_iou: float
    pixel_agreement: float
    boundary_mean_px: float
    boundary_p95_px: float
    width_drift_px: list[int]
    reference_foreground: float
    candidate_foreground: float
    #: float gates: PointRend's tie zone (size; pixels in it that differ by more than the tolerance) and
    #: max |delta logit| outside it (None: not computed)
    tie_zone_pixels: Optional[int] = None
    flip_pixels: Optional[int] = None
    max_abs_logit_outside_ties: Optional[float] = None
    #: fraction of the float person mask with |fg - bg| < UNCERTAIN_MARGIN (the float model's own doubt)
    float_uncertain_fraction: Optional[float] = None

    @property
    def max_width_drift_px(self) -> int:
        return max(self.width_drift_px, default=0)


def compare_logits(name: str, reference: np.ndarray, candidate: np.ndarray,
                   tie_zone: Optional[np.ndarray] = None, tolerance: float = 0.0) -> ImageMetrics:
    """Metrics of ``candidate`` (1, K, H, W) logits against ``reference`` logits of the same shape.

    ``tie_zone`` (H, W) bool: PointRend's tie zone of the reference at ``tolerance`` (see the module
    docstring); pixels in it that differ by more than ``tolerance`` count as flips.
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"{name}: artifact output shape {candidate.shape} differs from float model's {reference.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    outside: Optional[float] = None
    flips: Optional[int] = None
    if tie_zone is not None:
        if tie_zone.shape != reference.shape[2:]:
            raise ValueError(f"{name}: tie zone {tie_zone.shape} does not match the logits {reference.shape}")
        kept = diff[0][:, ~tie_zone]
        outside = float(kept.max()) if kept.size else 0.0
        flips = int(((diff[0].max(axis=0) > tolerance) & tie_zone).sum())
    ref_mask = reference[0, 1] > reference[0, 0]
    cand_mask = candidate[0, 1] > candidate[0, 0]
    union = np.logical_or(ref_mask, cand_mask).sum()
    iou = 1.0 if union == 0 else float(np.logical_and(ref_mask, cand_mask).sum() / union)
    dist = boundary_distances(ref_mask, cand_mask)
    rows = np.nonzero(ref_mask.any(axis=1))[0]
    if len(rows):
        box = (int(rows[0]), int(rows[-1]) + 1)
        drift = [abs(a - b) for a, b in zip(width_profile(ref_mask, box), width_profile(cand_mask, box))]
    else:
        drift = []
    return ImageMetrics(
        name=name,
        height=int(reference.shape[2]),
        width=int(reference.shape[3]),
        max_abs_logit=float(diff.max()),
        mean_abs_logit=float(diff.mean()),
        mask_iou=iou,
        pixel_agreement=float((ref_mask == cand_mask).mean()),
        boundary_mean_px=float(dist.mean()) if len(dist) else 0.0,
        boundary_p95_px=float(np.percentile(dist, 95)) if len(dist) else 0.0,
        width_drift_px=drift,
        reference_foreground=float(ref_mask.mean()),
        candidate_foreground=float(cand_mask.mean()),
        tie_zone_pixels=None if tie_zone is None else int(tie_zone.sum()),
        flip_pixels=flips,
        max_abs_logit_outside_ties=outside,
        float_uncertain_fraction=uncertain_fraction(reference)[0],
    )


@dataclass(frozen=True)
class Thresholds:
    """Gates; ``None`` disables one. Per-image gates apply to every image, ``mean_*`` to the average."""

    max_abs_logit: Optional[float] = None
    #: with max_abs_logit: most pixels PointRend may refine differently (in its tie zone), as a fraction
    max_flip_fraction: Optional[float] = None
    min_mean_iou: Optional[float] = None
    min_image_iou: Optional[float] = None
    max_mean_boundary_px: Optional[float] = None
    max_image_boundary_p95_px: Optional[float] = None
    max_width_drift_px: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def describe_logits(summary: dict[str, Any]) -> str:
    """``max |dlogit| X`` for a one-line summary, with the tie-zone split when the float gate used it."""
    text = f"max |dlogit| {summary['max_abs_logit']:.3g}"
    if "max_abs_logit_outside_ties" in summary:
        text += (f" ({summary['max_abs_logit_outside_ties']:.3g} outside PointRend's tie zone, "
                 f"{summary['max_flip_fraction']:.3%} of pixels refined differently)")
    return text


def default_thresholds(precision: str) -> Thresholds:
    """The documented default gates of ``precision`` (README "Parity gates"; their home is the formats table,
    :data:`alisnet_export.formats.PRECISIONS`); override them with the commands' --min-mean-iou etc."""
    try:
        return Thresholds(**PRECISIONS[precision].gates)
    except KeyError:
        raise ValueError(f"no default parity thresholds for precision {precision!r}") from None


@dataclass
class GateResult:
    gate: str
    scope: str  # "mean" or an image name
    value: float
    limit: float
    passed: bool

    def describe(self) -> str:
        op = "<=" if self.gate.startswith("max") else ">="
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.scope}: {self.gate} {self.value:.6g} {op} {self.limit:.6g} {verdict}"


@dataclass
class ParityReport:
    artifact: str
    format: str
    precision: str
    thresholds: Thresholds
    images: list[ImageMetrics] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    #: image name -> (float mask, artifact mask), kept on request for overlay pictures (not serialised)
    masks: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return bool(self.images) and all(g.passed for g in self.gates)

    @property
    def failures(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> dict[str, Any]:
        ims = self.images
        if not ims:
            return {"images": 0}
        out = {
            "images": len(ims),
            "max_abs_logit": max(m.max_abs_logit for m in ims),
            "mean_abs_logit": float(np.mean([m.mean_abs_logit for m in ims])),
            "mean_iou": float(np.mean([m.mask_iou for m in ims])),
            "min_iou": min(m.mask_iou for m in ims),
            "mean_pixel_agreement": float(np.mean([m.pixel_agreement for m in ims])),
            "mean_boundary_px": float(np.mean([m.boundary_mean_px for m in ims])),
            "max_boundary_p95_px": max(m.boundary_p95_px for m in ims),
            "max_width_drift_px": max(m.max_width_drift_px for m in ims),
        }
        if all(m.max_abs_logit_outside_ties is not None for m in ims):
            out["max_abs_logit_outside_ties"] = max(m.max_abs_logit_outside_ties for m in ims)
            out["max_flip_fraction"] = max(m.flip_pixels / (m.height * m.width) for m in ims)
            out["max_tie_zone_fraction"] = max(m.tie_zone_pixels / (m.height * m.width) for m in ims)
        if all(m.float_uncertain_fraction is not None for m in ims):
            out["max_float_uncertain_fraction"] = max(m.float_uncertain_fraction for m in ims)
        return out

    def evaluate(self) -> "ParityReport":
        """(Re)compute the gate results from ``images`` and ``thresholds``."""
        t, ims, gates = self.thresholds, self.images, []

        def gate(name: str, scope: str, value: float, limit: Optional[float], upper: bool) -> None:
            if limit is None:
                return
            ok = (value <= limit) if upper else (value >= limit)
            gates.append(GateResult(name, scope, float(value), float(limit), bool(ok and not math.isnan(value))))

        for m in ims:
            if m.max_abs_logit_outside_ties is None:
                gate("max_abs_logit", m.name, m.max_abs_logit, t.max_abs_logit, True)
            else:
                gate("max_abs_logit_outside_ties", m.name, m.max_abs_logit_outside_ties, t.max_abs_logit, True)
                gate("max_flip_fraction", m.name, m.flip_pixels / (m.height * m.width), t.max_flip_fraction, True)
            gate("min_image_iou", m.name, m.mask_iou, t.min_image_iou, False)
            gate("max_image_boundary_p95_px", m.name, m.boundary_p95_px, t.max_image_boundary_p95_px, True)
            gate("max_width_drift_px", m.name, m.max_width_drift_px, t.max_width_drift_px, True)
        if ims:
            s = self.summary()
            gate("min_mean_iou", "mean", s["mean_iou"], t.min_mean_iou, False)
            gate("max_mean_boundary_px", "mean", s["mean_boundary_px"], t.max_mean_boundary_px, True)
        self.gates = gates
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "format": self.format,
            "precision": self.precision,
            "status": "passed" if self.passed else "failed",
            "thresholds": self.thresholds.to_dict(),
            "summary": self.summary(),
            "failures": [g.describe() for g in self.failures],
            "gates": [asdict(g) for g in self.gates],
            "images": [asdict(m) for m in self.images],
        }


@runtime_checkable
class TieZoneReference(Protocol):
    """A float reference that also knows PointRend's tie zone on an input (``pipeline.ReferenceOutputs``).
    A plain callable reference has none: the float ``max_abs_logit`` gate then applies everywhere."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def tie_zone(self, x: np.ndarray, margin: float) -> Optional[np.ndarray]: ...


def run_parity(
    reference: Callable[[np.ndarray], np.ndarray] | TieZoneReference,
    candidate: Callable[[np.ndarray], np.ndarray],
    inputs: Iterable[tuple[str, np.ndarray]],
    *,
    artifact: str,
    format: str,
    precision: str,
    thresholds: Optional[Thresholds] = None,
    progress: Optional[Callable[[str], None]] = None,
    keep_masks: bool = False,
) -> ParityReport:
    """Run ``reference`` and ``candidate`` on each ``(name, input)`` and gate the differences.

    When the thresholds gate ``max_abs_logit`` and ``reference`` is a :class:`TieZoneReference`
    (:class:`~alisnet_export.pipeline.ReferenceOutputs`), that gate applies outside PointRend's tie zone.
    """
    report = ParityReport(artifact, format, precision, thresholds or default_thresholds(precision))
    margin = report.thresholds.max_abs_logit
    tie_zone = reference.tie_zone if margin is not None and isinstance(reference, TieZoneReference) else None
    for name, x in inputs:
        if progress:
            progress(name)
        zone = tie_zone(x, margin) if tie_zone is not None else None  # first: its pass also gives the logits
        ref, cand = reference(x), candidate(x)
        report.images.append(compare_logits(name, ref, cand, zone, margin or 0.0))
        if keep_masks:
            report.masks[name] = (ref[0, 1] > ref[0, 0], cand[0, 1] > cand[0, 0])
    return report.evaluate()
