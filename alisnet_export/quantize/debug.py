"""Quantization debugger for the eager QNNPACK int8 model (the ``.ptl`` path): where does int8 lose the silhouette?

* :func:`layer_errors`: per quantized layer, in graph order, the SQNR (dB) and relative L2 error of its
  output against the same layer of the float model (forward hooks on the fused float model and on
  the converted int8 model, int8 outputs dequantized). The errors are *propagated*: each layer sees
  the int8 model's own (already perturbed) inputs, as on the phone.
* :func:`attribute_layers`: the same layers judged in the product's currency, mask IoU and contour
  distance against the float model's masks: with that one layer in float (everything else int8),
  and the reverse, only that layer in int8.

PointRend's point head runs twice per image (two subdivision steps) on points each model chose from
its own coarse logits; its layers' errors are accumulated over both calls, and where the two models
chose different points that error includes the choice, not only the arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..parity import ImageMetrics, ParityReport, Thresholds, compare_logits, default_thresholds
from . import eager
from .mixed_precision import keep_layers_float, only_layers_int8

__all__ = ["PowerSums", "conv_layer_error", "finite", "LayerError", "LayerAttribution", "QuantizedLayer", "quantized_layers", "layer_errors", "sqnr_db",
           "evaluate_model", "attribute_layers", "attribute_float_layers", "worst_layers"]


@dataclass(frozen=True)
class QuantizedLayer:
    name: str  # module name in the converted model (a QFunctional's add: NAME, hooked at NAME.activation_post_process)
    kind: str  # conv, linear, add, quantize, dequantize
    keepable: bool  # can be kept float with --keep-float


def _kind(module: nn.Module) -> Optional[str]:
    q = torch.ao.nn.quantized
    if isinstance(module, eager._QuantizedConv):
        return "conv"
    if isinstance(module, q.Linear):
        return "linear"
    if isinstance(module, q.QFunctional):
        return "add"
    if isinstance(module, q.Quantize):
        return "quantize"
    if isinstance(module, q.DeQuantize):
        return "dequantize"
    return None


def quantized_layers(converted: nn.Module) -> list[QuantizedLayer]:
    """The converted model's quantized layers (module order; :func:`layer_errors` reports them in graph order)."""
    out = []
    for name, module in converted.named_modules():
        kind = _kind(module) if name else None
        if kind is not None:
            out.append(QuantizedLayer(name, kind, kind in ("conv", "linear")))
    return out


def _hook_target(root: nn.Module, layer: QuantizedLayer) -> nn.Module:
    module = root.get_submodule(layer.name)
    return module.activation_post_process if layer.kind == "add" else module


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10 log10(signal / noise); +inf for no noise."""
    if noise_power <= 0:
        return math.inf
    if signal_power <= 0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


@dataclass
class LayerError:
    order: int  # position in the int8 model's execution order (first call)
    name: str
    kind: str
    keepable: bool
    sqnr_db: float  # propagated: the int8 model's output vs the float model's, each on its own inputs
    rel_l2: float  # ||int8 - float|| / ||float||, propagated
    max_abs: float
    calls: int
    #: isolated: this layer alone in int8, fed the float model's input (quantized as the int8 model
    #: quantizes it), vs the float layer: the error this layer adds by itself (conv/linear only)
    local_sqnr_db: Optional[float] = None
    local_rel_l2: Optional[float] = None
    input_scale: Optional[float] = None  # the int8 model's input quantization of this layer (per tensor)
    input_zero_point: Optional[int] = None
    output_scale: Optional[float] = None

    @property
    def rank_sqnr_db(self) -> float:
        """What :func:`worst_layers` ranks by: the isolated SQNR where there is one, else the propagated one."""
        return self.local_sqnr_db if self.local_sqnr_db is not None else self.sqnr_db

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sqnr_db"] = finite(self.sqnr_db)
        d["local_sqnr_db"] = finite(self.local_sqnr_db)
        d["rel_l2"] = finite(self.rel_l2)
        d["local_rel_l2"] = finite(self.local_rel_l2)
        return d


def finite(v: Optional[float]) -> Optional[float]:
    """``v`` as a float, or None where it is missing, nan or infinite (JSON has no nan)."""
    return None if v is None or not math.isfinite(v) else float(v)


def _as_float(t: Any) -> Optional[torch.Tensor]:
    if not isinstance(t, torch.Tensor):
        return None
    return (t.dequantize() if t.is_quantized else t).detach().float()


@torch.no_grad()
def layer_errors(twin: nn.Module, converted: nn.Module, inputs: Sequence[torch.Tensor],
                 progress: Callable[[int], None] | None = None) -> list[LayerError]:
    """SQNR and relative L2 of every quantized layer's output (``converted``, int8, dequantized) against
    the same layer of ``twin`` (the fused float model, :func:`..mixed_precision.float_twin`) on ``inputs``,
    in the int8 model's execution order; for conv/linear layers also the isolated error (the int8 layer
    on the float model's input). Needs the QNNPACK engine (selected here)."""
    eager.use_qnnpack()
    layers = quantized_layers(converted)

    acc = {l.name: PowerSums() for l in layers}
    local = {l.name: PowerSums() for l in layers if l.keepable}
    order: dict[str, int] = {}
    qparams: dict[str, tuple[float, int]] = {}
    saved: dict[str, list[torch.Tensor]] = {}  # the int8 model's outputs (kept quantized: 1 byte per value)
    pending_inputs: dict[str, list[torch.Tensor]] = {}

    def int8_pre_hook(name: str):
        def hook(module, args):
            x = args[0] if args else None
            if name not in qparams and isinstance(x, torch.Tensor) and x.is_quantized \
                    and x.qscheme() == torch.per_tensor_affine:
                qparams[name] = (float(x.q_scale()), int(x.q_zero_point()))
        return hook

    def int8_hook(name: str):
        def hook(module, args, output):
            order.setdefault(name, len(order))
            if isinstance(output, torch.Tensor):
                saved.setdefault(name, []).append(output.detach())
        return hook

    def float_pre_hook(name: str):
        def hook(module, args):
            if args and isinstance(args[0], torch.Tensor):
                pending_inputs.setdefault(name, []).append(args[0].detach())
        return hook

    def float_hook(name: str):
        def hook(module, args, output):
            ref = _as_float(output)
            queue = saved.get(name)
            if ref is not None and queue:
                out = _as_float(queue.pop(0))
                if out.shape == ref.shape:
                    acc[name].add(ref, out)
            if name in local:
                x = pending_inputs.get(name, [None]).pop(0) if pending_inputs.get(name) else None
                if x is not None and name in qparams and not x.is_quantized:
                    scale, zp = qparams[name]
                    q = torch.quantize_per_tensor(x.float(), scale, zp, torch.quint8)
                    alone = _as_float(converted.get_submodule(name)(q))
                    if alone is not None and alone.shape == ref.shape:
                        local[name].add(ref, alone)
        return hook

    handles = []
    try:
        for l in layers:
            handles.append(_hook_target(converted, l).register_forward_hook(int8_hook(l.name)))
            handles.append(converted.get_submodule(l.name).register_forward_pre_hook(int8_pre_hook(l.name)))
            handles.append(_hook_target(twin, l).register_forward_hook(float_hook(l.name)))
            if l.keepable:
                handles.append(twin.get_submodule(l.name).register_forward_pre_hook(float_pre_hook(l.name)))
        twin.eval()
        converted.eval()
        for i, x in enumerate(inputs):
            saved.clear()
            pending_inputs.clear()
            converted(x)
            twin(x)
            if progress:
                progress(i + 1)
    finally:
        for h in handles:
            h.remove()
        saved.clear()
        pending_inputs.clear()
    out = []
    for l in layers:
        a = acc[l.name]
        if not a.calls:
            continue
        module = converted.get_submodule(l.name)
        scale = getattr(module, "scale", None)
        in_q = qparams.get(l.name)
        b = local.get(l.name)
        has_local = b is not None and b.calls > 0
        out.append(LayerError(
            order=order.get(l.name, len(order)), name=l.name, kind=l.kind, keepable=l.keepable,
            sqnr_db=a.sqnr_db, rel_l2=a.rel_l2, max_abs=a.max_abs, calls=a.calls,
            local_sqnr_db=b.sqnr_db if has_local else None, local_rel_l2=b.rel_l2 if has_local else None,
            input_scale=in_q[0] if in_q else None, input_zero_point=in_q[1] if in_q else None,
            output_scale=float(scale) if isinstance(scale, (float, int)) or (isinstance(scale, torch.Tensor) and scale.numel() == 1) else None,
        ))
    return sorted(out, key=lambda e: e.order)


def evaluate_model(model: nn.Module, reference_logits: Sequence[tuple[str, np.ndarray]],
                   inputs: Sequence[torch.Tensor], *, name: str, thresholds: Optional[Thresholds] = None,
                   keep_masks: bool = False) -> ParityReport:
    """A parity report of an eager ``model`` against the float logits (same order as ``inputs``)."""
    eager.use_qnnpack()
    report = ParityReport(name, "eager", "int8", thresholds or default_thresholds("int8"))
    with torch.no_grad():
        for (image, ref), x in zip(reference_logits, inputs):
            cand = model(x).numpy()
            report.images.append(compare_logits(image, ref, cand))
            if keep_masks:
                report.masks[image] = (ref[0, 1] > ref[0, 0], cand[0, 1] > cand[0, 0])
    return report.evaluate()


@dataclass
class LayerAttribution:
    name: str
    sqnr_db: Optional[float]
    local_sqnr_db: Optional[float]
    #: that layer in float, everything else int8
    keep_float_mean_iou: float
    keep_float_min_iou: float
    keep_float_boundary_px: float
    #: only that layer in int8, everything else float
    only_int8_mean_iou: Optional[float]
    only_int8_boundary_px: Optional[float]
    iou_recovered: float  # keep_float_mean_iou - the all-int8 model's mean IoU

    @classmethod
    def measured(cls, layer: "LayerError", kept: dict[str, Any], only: Optional[dict[str, Any]],
                 base_iou: float) -> "LayerAttribution":
        """From the parity summaries of the model with ``layer`` alone float (``kept``) and alone int8 (``only``)."""
        return cls(name=layer.name, sqnr_db=finite(layer.sqnr_db), local_sqnr_db=finite(layer.local_sqnr_db),
                   keep_float_mean_iou=kept["mean_iou"], keep_float_min_iou=kept["min_iou"],
                   keep_float_boundary_px=kept["mean_boundary_px"],
                   only_int8_mean_iou=only["mean_iou"] if only else None,
                   only_int8_boundary_px=only["mean_boundary_px"] if only else None,
                   iou_recovered=kept["mean_iou"] - base_iou)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(ims: Sequence[ImageMetrics], attr: str) -> float:
    return float(np.mean([getattr(m, attr) for m in ims]))


def _attribute(layers: Sequence[LayerError], alone_float: Callable[[LayerError], ParityReport],
               alone_int8: Callable[[LayerError], Optional[ParityReport]], baseline: ParityReport,
               progress: Callable[[str], None] | None) -> list[LayerAttribution]:
    """Each keepable layer of ``layers`` judged with it alone in float and (where ``alone_int8`` gives a report)
    alone in int8; ``baseline``: the all-int8 model's report."""
    base_iou = baseline.summary()["mean_iou"]
    out = []
    for layer in layers:
        if not layer.keepable:
            continue
        if progress:
            progress(layer.name)
        kept, only = alone_float(layer), alone_int8(layer)
        out.append(LayerAttribution.measured(layer, kept.summary(), only.summary() if only else None, base_iou))
    return out


def attribute_layers(twin: nn.Module, converted: nn.Module, float_source: Any, layers: Sequence[LayerError],
                     reference_logits: Sequence[tuple[str, np.ndarray]], inputs: Sequence[torch.Tensor], *,
                     baseline: ParityReport, reverse: bool = True,
                     progress: Callable[[str], None] | None = None) -> list[LayerAttribution]:
    """For each keepable layer of ``layers``: mask IoU / contour distance vs float with that layer alone in
    float, and (``reverse``) with that layer alone in int8. ``baseline``: the all-int8 model's report."""
    qparams = {l.name: (l.input_scale, l.input_zero_point) for l in layers if l.input_scale is not None}

    def alone_float(layer: LayerError) -> ParityReport:
        return evaluate_model(keep_layers_float(converted, float_source, [layer.name]), reference_logits, inputs,
                              name=f"float:{layer.name}")

    def alone_int8(layer: LayerError) -> Optional[ParityReport]:
        if not (reverse and layer.name in qparams):
            return None
        return evaluate_model(only_layers_int8(twin, converted, [layer.name], qparams), reference_logits, inputs,
                              name=f"int8:{layer.name}")

    return _attribute(layers, alone_float, alone_int8, baseline, progress)


def attribute_float_layers(worst: Sequence[LayerError], evaluate: Callable[[list[str], str], ParityReport],
                           baseline: ParityReport, *, all_layers: Optional[Sequence[str]] = None,
                           progress: Callable[[str], None] | None = None) -> list[LayerAttribution]:
    """:func:`attribute_layers` for models rebuilt per layer set (PT2E, ONNX QDQ, the ``auto`` search):
    ``evaluate(float_layers, name)`` judges the int8 model with ``float_layers`` left float against the float
    model. For each keepable layer of ``worst``: that layer alone float, and, given ``all_layers`` (the keepable
    ones), every other of them float (only that layer int8)."""
    def alone_int8(layer: LayerError) -> Optional[ParityReport]:
        if all_layers is None:
            return None
        return evaluate([n for n in all_layers if n != layer.name], f"int8:{layer.name}")

    return _attribute(worst, lambda layer: evaluate([layer.name], f"float:{layer.name}"), alone_int8, baseline,
                      progress)


def worst_layers(errors: Sequence[LayerError], k: int, *, keepable_only: bool = True) -> list[LayerError]:
    """The ``k`` layers with the lowest isolated SQNR (:attr:`LayerError.rank_sqnr_db`; keepable ones only
    by default), worst first. Isolated, because the propagated SQNR of every layer after a bad one is bad too."""
    pool = [e for e in errors if e.keepable or not keepable_only]
    return sorted(pool, key=lambda e: e.rank_sqnr_db)[:k]


def _flat_float32(t: Any) -> torch.Tensor:
    """A numpy array or a (quantized) tensor as a flat float32 tensor, sharing memory where it can."""
    if isinstance(t, torch.Tensor):
        return _as_float(t).reshape(-1)
    return torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32)).reshape(-1)


class PowerSums:
    """Signal and noise power sums of one compared tensor over every call (SQNR over all images at once): what
    every debugger (eager, pt2e, ort) accumulates per layer. Each call sums in float32 with torch's cascade
    summation (as accurate as float64 here, ~1e-8 relative on a 1024 px activation of ~10 M values, at half the time
    of float64 copies), and the calls add up in Python floats."""

    def __init__(self) -> None:
        self.signal = self.noise = self.max_abs = 0.0
        self.calls = 0

    def add(self, ref: Any, out: Any) -> None:
        """One compared tensor: ``ref`` the float model's, ``out`` the quantized model's (numpy or torch, any shape,
        the same number of values)."""
        r = _flat_float32(ref)
        d = _flat_float32(out) - r
        self.signal += float((r * r).sum())
        self.noise += float((d * d).sum())
        self.max_abs = max(self.max_abs, float(d.abs().max()) if d.numel() else 0.0)
        self.calls += 1

    def merge(self, sums: tuple[float, float, float]) -> None:
        self.signal += sums[0]
        self.noise += sums[1]
        self.max_abs = max(self.max_abs, sums[2])
        self.calls += 1

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.signal, self.noise) if self.calls else math.nan

    @property
    def rel_l2(self) -> float:
        if not self.calls:
            return math.nan
        return math.sqrt(self.noise / self.signal) if self.signal > 0 else math.inf


def conv_layer_error(order: int, name: str, keepable: bool, prop: PowerSums, local: PowerSums, *,
                 input_q: Optional[tuple[float, int]] = None, output_scale: Optional[float] = None,
                 cls: type = None, **extra: Any) -> "LayerError":
    """A conv layer's :class:`LayerError` (``cls``: a subclass with ``extra`` fields) from its propagated (``prop``)
    and isolated (``local``) sums; the pt2e and ort debuggers build theirs with it."""
    cls = cls or LayerError
    return cls(order=order, name=name, kind="conv", keepable=keepable, sqnr_db=prop.sqnr_db, rel_l2=prop.rel_l2,
               max_abs=prop.max_abs, calls=max(prop.calls, local.calls),
               local_sqnr_db=local.sqnr_db if local.calls else None, local_rel_l2=local.rel_l2 if local.calls else None,
               input_scale=input_q[0] if input_q else None, input_zero_point=input_q[1] if input_q else None,
               output_scale=output_scale, **extra)
