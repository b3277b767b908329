"""Activation-range equalization before int8 quantization (a function-preserving rescaling).

int8 activations are quantized per tensor: one scale for all channels. In the ImageNet MobileNetV2
backbone, fine-tuned with ReLU instead of ReLU6 (torchvision's quantization recipe), the channels of one
tensor span very different ranges: after the first depthwise conv the largest channel reaches 28 while
the median channel stays under 3, so most channels get a tenth of the 256 levels. Measured on the demo
checkpoint, block by block, post-training int8 then drifts to 30-45% relative error in the backbone's
features and the masks fall apart (mask IoU 0.21 against float).

The fix is the rescaling of cross-layer equalization (Nagel et al., "Data-Free Quantization Through
Weight Equalization and Bias Correction", ICCV 2019), driven by measured activation ranges: for a chain
``BatchNorm2d -> ReLU -> Conv2d`` whose ReLU output feeds only that conv, divide channel ``i`` of the
BN's affine output by ``s_i > 0`` and multiply input channel ``i`` of the conv's weights by ``s_i``.
ReLU is positively homogeneous (``relu(x / s) = relu(x) / s``), so the network computes the same
function, in float, while every channel's range becomes ``r_i / s_i``. Nothing changes structurally
(only BN ``weight``/``bias`` and conv ``weight`` values), so the equalized float model goes through
every quantizer unchanged: eager QNNPACK (PTQ and QAT), PT2E for ExecuTorch, ONNX Runtime QDQ.

``s_i`` brings every channel to the tensor's median range. When the next conv is depthwise its weights
are per-channel already, so the scaling costs nothing there; when it mixes channels (a pointwise
projection, quantized per output channel) larger ``s_i`` widen that conv's weight rows, so the scale is
the square root of the full correction (half the activation imbalance on each side, as CLE balances
weights). ReLU6 is not homogeneous and is never rescaled.

:func:`equalize_activations` checks its own work: the rescaled model must reproduce the original's
outputs on the calibration inputs (relative error below 1e-4), otherwise it raises.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["EqualizedPair", "find_chains", "equalize_activations", "equalize_for_quantization"]

#: s_i is clamped to this range: a near-dead channel is not blown up
MAX_SCALE = 64.0
SELF_CHECK_INPUTS = 4  # calibration inputs the float-function self-check runs on


@dataclass
class EqualizedPair:
    bn: str
    conv: str
    channels: int
    depthwise: bool
    range_ratio_before: float  # max over channels / median channel range
    range_ratio_after: float


def _record(model: nn.Module, example: Tensor) -> tuple[list[tuple[str, nn.Module, int, int]], dict[int, int]]:
    """Forward ``example``; returns the leaf modules in call order as (name, module, input id, output id),
    and how many recorded modules consumed each tensor id."""
    calls: list[tuple[str, nn.Module, int, int]] = []
    consumers: dict[int, int] = {}
    handles = []
    keep: list[Tensor] = []  # keep tensors alive so ids stay unique during the pass

    def hook(name: str):
        def fn(mod: nn.Module, args: tuple, out: object) -> None:
            if not args or not isinstance(args[0], Tensor) or not isinstance(out, Tensor):
                return
            keep.extend([args[0], out])
            calls.append((name, mod, id(args[0]), id(out)))
            for a in args:
                if isinstance(a, Tensor):
                    consumers[id(a)] = consumers.get(id(a), 0) + 1
        return fn

    for name, mod in model.named_modules():
        if not list(mod.children()) or isinstance(mod, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)):
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return calls, consumers


def find_chains(model: nn.Module, example: Tensor) -> list[tuple[str, str, str]]:
    """``(bn, relu, conv)`` module names where the BN's output goes through the ReLU into that conv only."""
    calls, consumers = _record(model, example)
    chains = []
    for (bn_name, bn, _, bn_out), (relu_name, relu, relu_in, relu_out), (conv_name, conv, conv_in, _) in zip(
        calls, calls[1:], calls[2:]
    ):
        if not (type(bn) is nn.BatchNorm2d and type(relu) is nn.ReLU and type(conv) is nn.Conv2d):
            continue
        if relu_in != bn_out or conv_in != relu_out or not bn.affine:
            continue
        # the ReLU's output (the same tensor as the BN's when in place) must feed this conv and nothing else
        if relu_out == bn_out:
            if consumers.get(bn_out, 0) != 2:
                continue
        elif consumers.get(bn_out, 0) != 1 or consumers.get(relu_out, 0) != 1:
            continue
        if conv.in_channels != bn.num_features or conv.groups not in (1, conv.in_channels):
            continue
        chains.append((bn_name, relu_name, conv_name))
    return chains


@torch.no_grad()
def equalize_activations(model: nn.Module, inputs: Iterable[Tensor], *, tolerance: float = 1e-4) -> tuple[nn.Module, list[EqualizedPair]]:
    """An equalized copy of the float ``model`` (eval mode) and what was rescaled; ``model`` is untouched.

    ``inputs``: calibration batches (the same the quantizer will see). Raises ``RuntimeError`` if the copy
    does not reproduce ``model`` to ``tolerance`` (relative) on them.
    """
    inputs = list(inputs)
    if not inputs:
        raise ValueError("activation equalization needs at least one calibration input")
    model = model.eval()
    out = copy.deepcopy(model).eval()
    modules = dict(out.named_modules())
    chains = find_chains(out, inputs[0])
    ranges: dict[str, Tensor] = {}
    handles = []
    for _, relu_name, _ in chains:
        def fn(mod: nn.Module, args: tuple, y: Tensor, key: str = relu_name) -> None:
            r = y.detach().amax(dim=(0, 2, 3))
            ranges[key] = r if key not in ranges else torch.maximum(ranges[key], r)
        handles.append(modules[relu_name].register_forward_hook(fn))
    forward = (lambda m, x: m.forward_coarse(x)) if hasattr(model, "forward_coarse") else (lambda m, x: (m(x),))
    try:
        for x in inputs:
            forward(out, x)  # every chain is in the coarse network (PointRend has no BatchNorm): skip its cost
    finally:
        for h in handles:
            h.remove()
    pairs = []
    for bn_name, relu_name, conv_name in chains:
        bn: nn.BatchNorm2d = modules[bn_name]
        conv: nn.Conv2d = modules[conv_name]
        r = ranges[relu_name].double()
        live = r > 1e-6
        if int(live.sum()) < 2:
            continue
        target = r[live].median()
        depthwise = conv.groups == conv.in_channels and conv.groups > 1
        scale = torch.ones_like(r)
        scale[live] = r[live] / target
        if not depthwise:
            scale = scale.sqrt()
        scale = scale.clamp(1.0 / MAX_SCALE, MAX_SCALE)
        s = scale.to(bn.weight.dtype)
        bn.weight.div_(s)
        bn.bias.div_(s)
        if depthwise:
            conv.weight.mul_(s.view(-1, 1, 1, 1))
        else:
            conv.weight.mul_(s.view(1, -1, 1, 1))
        after = r / scale
        pairs.append(EqualizedPair(bn_name, conv_name, int(r.numel()), depthwise,
                                   float(r.max() / target), float(after.max() / after[live].median())))
    # compare before PointRend's top-k point selection (which turns 1e-7 into a few flipped points); the
    # rescaling is an identity of the function, so a few inputs check it as well as all of them
    for x in inputs[:SELF_CHECK_INPUTS]:
        err = max(float((r - g).norm() / r.norm().clamp_min(1e-12)) for r, g in zip(forward(model, x), forward(out, x)))
        if err > tolerance:
            raise RuntimeError(f"activation equalization changed the float model's output (relative error {err:.2e}); "
                               "this architecture has a ReLU output with another consumer. Quantize without it.")
    return out, pairs


def equalize_for_quantization(model: nn.Module, inputs: Sequence[Tensor], *, enabled: bool = True,
                              log=lambda message: None) -> tuple[nn.Module, dict]:
    """The model an int8 PTQ exporter should quantize, and the manifest's ``equalization`` record."""
    if not enabled:
        return model, {"applied": False, "reason": "disabled (--no-equalize)"}
    equalized, pairs = equalize_activations(model, inputs)
    if not pairs:
        return model, {"applied": False, "reason": "no BatchNorm -> ReLU -> Conv chain to rescale"}
    before = max(p.range_ratio_before for p in pairs)
    after = max(p.range_ratio_after for p in pairs)
    log(f"activation-range equalization: {len(pairs)} BN-ReLU-conv chains rescaled (worst channel range / median "
        f"{before:.1f} -> {after:.1f}); the float function is unchanged")
    return equalized, {"applied": True, "method": "activation-range equalization (CLE-style, ReLU-homogeneous)",
                       "chains": len(pairs), "max_range_ratio_before": round(before, 3),
                       "max_range_ratio_after": round(after, 3)}
