"""Eager-mode int8 quantization for the QNNPACK engine (the PyTorch-lite .ptl path).

Where int8 runs (the paper's deployment): backbone, Semantic-FPN head and the point-head MLP
(Conv1d-ReLU fused). Where float stays: PointRend's geometry between ``dequant_*`` and the point
head's ``quant_*`` stubs (upsampling of logits, top-k uncertainty, grid_sample, scatter):
quantized tensors have no ``abs``/``topk`` semantics worth trusting and ``scatter`` needs equal
dtypes (docs/design.md section 4.2).

Two ways in:
* PTQ: :func:`prepare` (observers), :func:`calibrate` on sample images, :func:`convert`.
* QAT: :func:`prepare` with ``qat=True`` (fake-quant), fine-tune with the training loop and the
  :func:`qat_schedule` hook (freeze BN statistics, then freeze the observers), :func:`convert`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.ao.quantization import (
    FakeQuantize,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PerChannelMinMaxObserver,
    QConfig,
    default_per_channel_weight_fake_quant,
    default_weight_fake_quant,
    disable_observer,
)

_QuantizedConv = torch.ao.nn.quantized.modules.conv._ConvNd  # also the fused ConvReLU modules

__all__ = [
    "ENGINE",
    "EagerQuantOptions",
    "use_qnnpack",
    "make_qconfig",
    "prepare",
    "calibrate",
    "convert",
    "qat_schedule",
    "disable_activation_observers",
    "describe_quantization",
]

ENGINE = "qnnpack"


@dataclass(frozen=True)
class EagerQuantOptions:
    """How the model is quantized; stored in QAT checkpoints so ``ptl`` rebuilds the same graph."""

    per_channel: bool = True  # per-output-channel weight scales (QNNPACK supports them for conv)
    quantize_point_head: bool = True  # int8 point MLP; its sampling geometry always stays float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def use_qnnpack() -> None:
    """Select the QNNPACK engine: the ARM kernels the lite runtime uses on phones (it also runs on x86)."""
    if ENGINE not in torch.backends.quantized.supported_engines:
        from ..errors import EnvironmentProblem

        raise EnvironmentProblem(f"this torch build has no {ENGINE} engine (has {torch.backends.quantized.supported_engines})")
    torch.backends.quantized.engine = ENGINE


def make_qconfig(*, qat: bool, per_channel: bool) -> QConfig:
    """QNNPACK: quint8 activations over the full 0..255 range (no reduce_range), qint8 symmetric weights."""
    if qat:
        act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                     dtype=torch.quint8, reduce_range=False)
        weight = default_per_channel_weight_fake_quant if per_channel else default_weight_fake_quant
    else:
        act = MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=False)
        weight = (PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
                  if per_channel else MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))
    return QConfig(activation=act, weight=weight)


def prepare(model: nn.Module, *, qat: bool, options: EagerQuantOptions = EagerQuantOptions()) -> nn.Module:
    """A fused, observed copy of the float ``model`` (``model`` itself is left untouched)."""
    use_qnnpack()
    prepared = copy.deepcopy(model)
    prepared.train(qat)
    prepared.fuse_model(is_qat=qat)
    prepared.qconfig = make_qconfig(qat=qat, per_channel=options.per_channel)
    point_rend = getattr(prepared, "point_rend", None)
    if point_rend is not None and not options.quantize_point_head:
        point_rend.point_head.qconfig = None
    if qat:
        torch.ao.quantization.prepare_qat(prepared, inplace=True)
    else:
        torch.ao.quantization.prepare(prepared, inplace=True)
    return prepared


@torch.no_grad()
def calibrate(prepared: nn.Module, inputs: Iterable[torch.Tensor], progress: Callable[[int], None] | None = None) -> int:
    """Run ``inputs`` through an observed model so the observers see real activation ranges."""
    prepared.eval()
    n = 0
    for x in inputs:
        prepared(x)
        n += 1
        if progress:
            progress(n)
    if n == 0:
        raise ValueError("calibration needs at least one input image")
    return n


def convert(prepared: nn.Module) -> nn.Module:
    """The int8 model (a converted copy, in eval mode)."""
    use_qnnpack()
    model = copy.deepcopy(prepared).eval()
    torch.ao.quantization.convert(model, inplace=True)
    return model


def disable_activation_observers(model: nn.Module) -> None:
    """Stop the activation ranges moving (weight quantizers keep following the weights)."""
    for name, module in model.named_modules():
        if isinstance(module, FakeQuantize) and not name.endswith("weight_fake_quant"):
            module.disable_observer()


def qat_schedule(*, freeze_bn_step: int, freeze_observer_step: int,
                 freeze_activation_observer_step: int | None = None) -> Callable[[int, nn.Module], None]:
    """A training hook: from ``freeze_bn_step`` BN uses its running statistics (no more updates);
    from ``freeze_activation_observer_step`` (default: with the others) the activation ranges stop
    moving, e.g. at step 0 when they start from calibrated ranges; from ``freeze_observer_step`` all
    quantization ranges stop moving, so the last steps fine-tune the weights against the exact int8
    grid that will ship."""

    def hook(step: int, model: nn.Module) -> None:
        if step == freeze_bn_step:
            model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        if step == freeze_activation_observer_step:
            disable_activation_observers(model)
        if step == freeze_observer_step:
            model.apply(disable_observer)

    return hook


def describe_quantization(model: nn.Module) -> dict[str, list[str]]:
    """Which top-level parts of a converted model hold int8 weights and which stayed float."""
    quantized, floating = set(), set()
    for name, module in model.named_modules():
        if not name or list(module.children()):
            continue
        top = ".".join(name.split(".")[:2]) if name.startswith("point_rend") else name.split(".")[0]
        if isinstance(module, (_QuantizedConv, torch.ao.nn.quantized.Linear)):
            quantized.add(top)
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            floating.add(top)
    return {"quantized_modules": sorted(quantized),
            "float_modules": sorted(floating | {"point_rend geometry (upsample, topk, grid_sample, scatter)"})}
