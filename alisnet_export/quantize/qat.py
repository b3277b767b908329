"""QAT checkpoints: a fake-quantized model plus the float model it was fine-tuned from.

Layout (a native checkpoint, readable with ``torch.load(weights_only=True)``)::

    {"model": <state dict of the prepared (fused, fake-quantized) model>,
     "config": {...}, "alisnet_export_version": str, "meta": {...},
     "qat": {"engine": "qnnpack", "options": {...EagerQuantOptions}, "steps": int, "data": str, ...},
     "reference_model": <float state dict the fine-tune started from: parity's reference>}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

import torch
from torch import nn

from ..checkpoint import LoadedCheckpoint, save_checkpoint
from ..config import ModelConfig
from ..errors import CheckpointError
from ..modeling import build_model
from . import eager

__all__ = ["save_qat_checkpoint", "load_qat_model", "seed_activation_ranges", "calibrated_start", "DistillationLoss",
           "agreement", "describe_agreement", "as_runner", "export_fidelity", "EXPORT_FIDELITY_MIN_IOU", "qat_steps",
           "schedule_steps", "convert_checked"]


def save_qat_checkpoint(path: Path, prepared: nn.Module, config: ModelConfig, *, reference: Mapping[str, torch.Tensor],
                        options: eager.EagerQuantOptions, info: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None,
                        force: bool = False) -> Path:
    qat = {"engine": eager.ENGINE, "options": options.to_dict(), **info}
    return save_checkpoint(path, prepared.state_dict(), config, meta=meta, qat=qat, force=force,
                           extra={"reference_model": {k: v.detach().cpu() for k, v in reference.items()}})


def load_qat_model(loaded: LoadedCheckpoint) -> tuple[nn.Module, nn.Module, eager.EagerQuantOptions]:
    """``(prepared QAT model in eval mode, float reference model, options)`` from a QAT checkpoint."""
    if not loaded.is_qat or loaded.reference_state_dict is None:
        raise CheckpointError(f"{loaded.path}: not a QAT checkpoint")
    try:
        options = eager.EagerQuantOptions(**loaded.qat.get("options", {}))
    except TypeError as exc:
        raise CheckpointError(f"{loaded.path}: unreadable QAT options {loaded.qat.get('options')}: {exc}") from None
    reference = build_model(loaded.config)
    reference.load_state_dict(loaded.reference_state_dict)
    prepared = eager.prepare(reference, qat=True, options=options)
    try:
        prepared.load_state_dict(loaded.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise CheckpointError(
            f"{loaded.path}: the QAT state does not fit config {loaded.config.name!r} with options {options}: "
            + " ".join(first[:3])
        ) from None
    return prepared.eval(), reference.eval(), options


# --------------------------------------------------------------------------------------------------
# The QAT recipe's parts: a calibrated start, a loss that keeps the float model's function, and the
# agreement measure that says whether QAT helped.
def seed_activation_ranges(qat_model: nn.Module, calibrated: nn.Module) -> int:
    """Start ``qat_model``'s activation fake-quantizers from the ranges a PTQ-``calibrated`` model (same
    float source, :func:`eager.prepare` with ``qat=False`` + :func:`eager.calibrate`) measured.

    Empty observers would otherwise take their first ranges from the first training crops, which are
    smaller than, and see fewer extremes than, the images the app runs at. Returns how many quantizers
    were seeded; raises if none match (the two models do not come from the same float model)."""
    from torch.ao.quantization import FakeQuantize

    observed = dict(calibrated.named_modules())
    seeded = 0
    for name, module in qat_model.named_modules():
        if not isinstance(module, FakeQuantize) or name.endswith("weight_fake_quant"):
            continue
        source = observed.get(name)
        if source is None or not hasattr(source, "min_val") or not torch.isfinite(source.min_val).all():
            continue
        observer = module.activation_post_process
        observer.min_val.resize_(source.min_val.shape).copy_(source.min_val)
        observer.max_val.resize_(source.max_val.shape).copy_(source.max_val)
        scale, zero_point = observer.calculate_qparams()
        module.scale.resize_(scale.shape).copy_(scale)
        module.zero_point.resize_(zero_point.shape).copy_(zero_point)
        seeded += 1
    if seeded == 0:
        raise ValueError("no activation quantizer of the QAT model matches a calibrated observer")
    return seeded


def calibrated_start(prepared: nn.Module, start: nn.Module, calibration: Sequence[torch.Tensor],
                     options: eager.EagerQuantOptions) -> tuple[int, nn.Module]:
    """Calibrate ``start`` (the float model ``prepared`` came from) post-training on ``calibration``, seed
    ``prepared``'s activation fake-quantizers from those ranges and freeze them.

    Returns ``(quantizers seeded, the PTQ int8 model)``: the int8 model PTQ would ship, the baseline QAT
    has to beat."""
    observed = eager.prepare(start, qat=False, options=options)
    eager.calibrate(observed, calibration)
    seeded = seed_activation_ranges(prepared, observed)
    eager.disable_activation_observers(prepared)  # from now on measuring must not move the calibrated ranges
    return seeded, eager.convert(observed)


def qat_steps(*, epochs: Optional[float], steps: Optional[int], num_images: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps for ``steps`` or ``epochs`` (passes over the training images, all ranks together)."""
    if steps is not None:
        return steps
    per_step = batch_size * world_size
    return max(1, math.ceil((epochs or 1.0) * num_images / per_step))


def schedule_steps(total: int, freeze_bn_at: float, freeze_observers_at: float) -> tuple[int, int]:
    """Steps at which BN statistics and then the observers freeze (fractions of the run, observers last).

    The observers always see at least one step: frozen at step 0 they would hold no ranges (a one-step run
    never freezes them)."""
    bn = min(total - 1, int(round(freeze_bn_at * total)))
    obs = min(total - 1, max(bn, int(round(freeze_observers_at * total))))
    return bn, max(1, obs)


def convert_checked(prepared: nn.Module) -> nn.Module:
    """The int8 model of a fine-tuned QAT model (moved to the CPU, eval mode), run once on a small input:
    a model that does not convert fails here, not at export time."""
    prepared.to("cpu").eval()
    try:
        int8 = eager.convert(prepared)
        with torch.inference_mode():
            int8(torch.zeros(1, 3, 64, 64))
    except Exception as exc:
        raise CheckpointError(f"the fine-tuned QAT model does not convert to int8: {str(exc).splitlines()[0]}") from exc
    return int8


class DistillationLoss(nn.Module):
    """``forward(images, targets) -> {name: loss}``: the QAT ``student`` learns the float ``teacher``'s logits.

    * ``loss_distill_coarse``: mean squared difference of the coarse logits (stride 4);
    * ``loss_distill_point``: the same for PointRend's point head, at points drawn where the teacher is
      least certain (the boundary, where int8 error moves the mask);
    * with ``gt_weight > 0``, the paper's loss on the ground truth as well (``targets``).

    Pulling the int8 model towards the float model's outputs, not only towards the labels, is what keeps
    the float accuracy: the float model is the function being deployed."""

    def __init__(self, student: nn.Module, teacher: nn.Module, *, gt_weight: float = 0.0,
                 point_loss_weight: float = 1.0) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.gt_weight = gt_weight
        self.point_loss_weight = point_loss_weight

    def train(self, mode: bool = True) -> "DistillationLoss":
        self.training = mode
        self.student.train(mode)
        self.teacher.eval()  # always: its BatchNorm statistics are the deployed model's
        return self

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch.nn.functional as F

        from ..modeling.point_rend import calculate_uncertainty, get_uncertain_point_coords_with_randomness, point_sample

        with torch.no_grad():
            t_coarse, t_features = self.teacher.forward_coarse(images)
        s_coarse, s_features = self.student.forward_coarse(images)
        losses = {"loss_distill_coarse": F.mse_loss(s_coarse, t_coarse)}
        s_pr, t_pr = getattr(self.student, "point_rend", None), getattr(self.teacher, "point_rend", None)
        if s_pr is not None and t_pr is not None:
            with torch.no_grad():
                coords = get_uncertain_point_coords_with_randomness(
                    t_coarse, calculate_uncertainty, t_pr.train_num_points, t_pr.oversample_ratio,
                    t_pr.importance_sample_ratio)
                t_points = t_pr.point_head(point_sample(t_features, coords), point_sample(t_coarse, coords))
            s_points = s_pr.point_head(point_sample(s_features, coords), point_sample(s_coarse, coords))
            losses["loss_distill_point"] = self.point_loss_weight * F.mse_loss(s_points, t_points)
        if self.gt_weight > 0:
            for k, v in self.student.losses(images, targets, point_loss_weight=self.point_loss_weight).items():
                losses[k] = self.gt_weight * v
        return losses


#: the int8 artifact must draw what the QAT model's own fake-quantized forward draws (mean mask IoU)
EXPORT_FIDELITY_MIN_IOU = 0.999


def agreement(reference: Callable[[np.ndarray], np.ndarray], candidate: Callable[[np.ndarray], np.ndarray],
              inputs: Sequence[tuple[str, np.ndarray]]) -> dict[str, float]:
    """How closely ``candidate``'s masks follow ``reference``'s on ``inputs`` ((name, (1, 3, H, W) float32)
    pairs); both map an input to (1, K, H, W) logits (a runner, or :func:`as_runner` of a module): mean and
    min mask IoU, mean contour distance in px (the parity gate's measures)."""
    from ..parity import compare_logits

    metrics = [compare_logits(name, reference(x), candidate(x)) for name, x in inputs]
    if not metrics:
        raise ValueError("agreement needs at least one input")
    return {"images": len(metrics),
            "mean_iou": float(sum(m.mask_iou for m in metrics) / len(metrics)),
            "min_iou": float(min(m.mask_iou for m in metrics)),
            "mean_boundary_px": float(sum(m.boundary_mean_px for m in metrics) / len(metrics))}


def describe_agreement(a: Mapping[str, float]) -> str:
    """One line for an :func:`agreement` result."""
    return f"mask IoU {a['mean_iou']:.4f} (min {a['min_iou']:.4f}), contour {a['mean_boundary_px']:.2f} px"


def as_runner(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` in eval mode as a numpy -> numpy logits function (leaves it in the mode it was in)."""

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        try:
            return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
        finally:
            model.train(was_training)

    return run


def export_fidelity(qat_model: nn.Module, artifact: Callable[[np.ndarray], np.ndarray],
                    inputs: Sequence[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """The int8 artifact against the QAT model it was converted from (fake-quantized forward): conversion
    and export must not change the mask (:data:`EXPORT_FIDELITY_MIN_IOU`)."""
    result = agreement(as_runner(qat_model), artifact, inputs)
    return {**result, "min_mean_iou": EXPORT_FIDELITY_MIN_IOU, "passed": result["mean_iou"] >= EXPORT_FIDELITY_MIN_IOU}
