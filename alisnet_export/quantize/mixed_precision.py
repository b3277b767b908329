"""Mixed precision for the eager QNNPACK int8 model: chosen layers run in float, the rest stays int8.

Built by surgery on a converted int8 model (:func:`eager.convert`), not by re-calibrating: in eager
post-training quantization the observers see float activations whatever else is quantized, so the
ranges a layer's neighbours were calibrated with do not change when that layer goes back to float.

* :func:`keep_layers_float`: each named quantized conv/linear becomes a :class:`FloatIsland`
  (dequantize -> the float layer, BatchNorm folded -> quantize with the int8 layer's own output
  scale and zero point), so everything around it stays int8. Same effect as giving the module no
  qconfig with quant/dequant stubs around it, without a second calibration.
* :func:`only_layers_int8`: the reverse, on the fused float model: each named layer becomes an
  :class:`Int8Island` (quantize with the scale its input had in the int8 model -> the int8 layer ->
  dequantize); everything else is float.
* :func:`search_keep_float`: ``--keep-float auto``: adds layers to float, most helpful first, until
  the parity gate passes or the size budget would be exceeded; every step is recorded.

Only weighted layers (quantized Conv1d/Conv2d, fused with BN/ReLU, and Linear) can be kept float;
the int8 adds (``QFunctional``) and the quant stubs are reported by the debugger but stay int8.
"""

from __future__ import annotations

import copy
import io
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized import DeQuantize, Quantize

from . import eager

__all__ = [
    "FloatIsland",
    "Int8Island",
    "float_twin",
    "weighted_layers",
    "keep_layers_float",
    "only_layers_int8",
    "float_layer_extra_bytes",
    "lite_size_bytes",
    "SearchStep",
    "search_keep_float",
    "default_max_size",
    "auto_keep_float",
    "KeepFloat",
    "keep_float_for_export",
    "float_layer_names",
    "check_layer_names",
]

_QUANT_LINEAR = (torch.ao.nn.quantized.Linear,)


class FloatIsland(nn.Module):
    """A float layer inside an int8 model: dequantize, run ``module`` in float, quantize its output."""

    def __init__(self, module: nn.Module, scale: float, zero_point: int) -> None:
        super().__init__()
        self.dequant = DeQuantize()
        self.module = module
        self.quant = Quantize(float(scale), int(zero_point), torch.quint8)

    def forward(self, x: Tensor) -> Tensor:
        return self.quant(self.module(self.dequant(x)))


class Int8Island(nn.Module):
    """An int8 layer inside a float model: quantize its input as the int8 model did, run it, dequantize."""

    def __init__(self, module: nn.Module, scale: float, zero_point: int) -> None:
        super().__init__()
        self.quant = Quantize(float(scale), int(zero_point), torch.quint8)
        self.module = module
        self.dequant = DeQuantize()

    def forward(self, x: Tensor) -> Tensor:
        return self.dequant(self.module(self.quant(x)))


def float_twin(source: nn.Module) -> nn.Module:
    """``source`` (the float model int8 was quantized from) fused the way :func:`eager.prepare` fuses it
    (Conv-BN(-ReLU) folded), in eval mode and without observers: its modules have the int8 model's names."""
    twin = copy.deepcopy(source).eval()
    twin.fuse_model(is_qat=False)
    return twin


def _is_weighted(module: nn.Module) -> bool:
    return isinstance(module, (eager._QuantizedConv, *_QUANT_LINEAR))


def weighted_layers(converted: nn.Module) -> list[str]:
    """Names of the quantized conv/linear layers of a converted model (module order), the ones that can be kept float."""
    return [name for name, m in converted.named_modules() if name and _is_weighted(m)]


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _float_layer(float_source: nn.Module | Callable[[str], nn.Module], name: str) -> nn.Module:
    if callable(float_source) and not isinstance(float_source, nn.Module):
        return float_source(name)
    module = copy.deepcopy(float_source.get_submodule(name))
    to_float = getattr(module, "to_float", None)  # a QAT module (ConvBnReLU2d...): fold BN, drop fake-quant
    if to_float is not None and hasattr(module, "weight_fake_quant"):
        module = to_float()
    return module.eval()


def keep_layers_float(converted: nn.Module, float_source: nn.Module | Callable[[str], nn.Module],
                      names: Sequence[str]) -> nn.Module:
    """A copy of ``converted`` with each layer of ``names`` in float (a :class:`FloatIsland`).

    ``float_source``: the fused float model (:func:`float_twin`) or a QAT model with the same names,
    or a callable ``name -> float module``. Unknown or non-weighted names raise ``KeyError``/``ValueError``.
    """
    model = copy.deepcopy(converted)
    for name in names:
        try:
            quantized = model.get_submodule(name)
        except AttributeError:
            raise KeyError(f"no layer {name!r} in the int8 model") from None
        if not _is_weighted(quantized):
            raise ValueError(f"layer {name!r} ({type(quantized).__name__}) is not a quantized conv/linear; only those can be kept float")
        _set_module(model, name, FloatIsland(_float_layer(float_source, name), quantized.scale, quantized.zero_point))
    return model.eval()


def only_layers_int8(twin: nn.Module, converted: nn.Module, names: Sequence[str],
                     input_qparams: dict[str, tuple[float, int]]) -> nn.Module:
    """A copy of the fused float model ``twin`` where only the layers of ``names`` run int8 (each an
    :class:`Int8Island` quantizing its input with ``input_qparams[name]``, the scale and zero point its
    input had in the int8 model; see :func:`..debug.layer_errors`)."""
    model = copy.deepcopy(twin)
    for name in names:
        scale, zero_point = input_qparams[name]
        _set_module(model, name, Int8Island(copy.deepcopy(converted.get_submodule(name)), scale, zero_point))
    return model.eval()


def float_layer_extra_bytes(converted: nn.Module, name: str) -> int:
    """About how many bytes keeping ``name`` float adds: 4 instead of 1 byte per weight (fp32 vs int8)."""
    module = converted.get_submodule(name)
    weight = module.weight()
    return 3 * int(weight.numel())


def lite_size_bytes(model: nn.Module) -> int:
    """The size of ``model`` saved as a lite-interpreter .ptl, the way the .ptl exporter saves it."""
    from ..exporters.ptl import script_for_lite

    module = script_for_lite(model, fold_batchnorm=True)
    buffer = module._save_to_buffer_for_lite_interpreter()
    return len(buffer) if isinstance(buffer, (bytes, bytearray)) else len(io.BytesIO(buffer).getvalue())


def default_max_size(variant: str, int8_size: int) -> int:
    """``--max-size`` default: the paper's 4.0 MB for ALiSNet-MnasNet, else the all-int8 size + 1.5 MB."""
    return 4_000_000 if variant == "alisnet_mnasnet" else int8_size + 1_500_000


@dataclass
class SearchStep:
    """One step of ``--keep-float auto``: the layers in float so far and what they measured."""

    added: Optional[str]  # the layer this step added (None: the all-int8 start)
    float_layers: list[str]
    size_bytes: int
    mean_iou: float
    min_iou: float
    mean_boundary_px: float
    passed: bool
    benefit_iou: Optional[float] = None  # the added layer's own measured benefit (IoU recovered alone)
    note: str = ""
    accepted: bool = True  # False: with the layers before it, this layer lowered the mean IoU, so it was dropped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    steps: list[SearchStep] = field(default_factory=list)
    stop_reason: str = ""

    @property
    def final(self) -> SearchStep:
        """The last accepted step: the layers the search keeps float."""
        return [s for s in self.steps if s.accepted][-1]

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps], "stop_reason": self.stop_reason}


def search_keep_float(
    evaluate: Callable[[list[str]], Any],
    size_of: Callable[[list[str]], int],
    ranked: Sequence[tuple[str, float]],
    *,
    max_size: int,
    log: Callable[[str], None] = lambda m: None,
) -> SearchResult:
    """Greedy ``--keep-float auto``.

    ``evaluate(float_layers)`` -> a :class:`~..parity.ParityReport` of the model with those layers in
    float; ``size_of(float_layers)`` -> its .ptl size in bytes; ``ranked``: ``(layer, benefit)`` in
    order of measured benefit (IoU recovered when that layer alone is float), best first. Adds layers
    until the gate passes, the next layer would exceed ``max_size``, or no remaining layer helps. A layer
    that lowers the mean IoU together with the ones already float is dropped again (recorded, not kept).
    """
    result = SearchResult()

    def record(added: Optional[str], layers: list[str], benefit: Optional[float], size: int) -> SearchStep:
        report = evaluate(layers)
        s = report.summary()
        step = SearchStep(added, list(layers), size, s["mean_iou"], s["min_iou"], s["mean_boundary_px"],
                          report.passed, benefit)
        result.steps.append(step)
        log(f"keep-float step {len(result.steps) - 1}: {added or 'all int8'}: {size / 1e6:.2f} MB, "
            f"IoU mean {step.mean_iou:.4f} (min {step.min_iou:.4f}), contour {step.mean_boundary_px:.2f} px, "
            f"{'PASSED' if step.passed else 'failed'}")
        return step

    layers: list[str] = []
    step = record(None, layers, None, size_of(layers))
    if step.passed:
        result.stop_reason = "the all-int8 model passes the parity gate; nothing kept float"
        return result
    for name, benefit in ranked:
        if benefit <= 0:
            result.stop_reason = (f"no remaining layer improves the mask on its own (next: {name}, "
                                  f"IoU {benefit:+.4f}); the gate still fails")
            return result
        size = size_of(layers + [name])
        if size > max_size:
            result.stop_reason = (f"keeping {name} float too would make the .ptl {size / 1e6:.2f} MB, over the "
                                  f"{max_size / 1e6:.2f} MB budget (--max-size); the gate still fails")
            return result
        best = result.final
        step = record(name, layers + [name], benefit, size)
        if step.passed:
            result.stop_reason = f"the parity gate passes with {len(layers) + 1} layer(s) in float"
            return result
        if step.mean_iou <= best.mean_iou:
            step.accepted = False
            step.note = f"dropped: mean IoU {step.mean_iou:.4f} <= {best.mean_iou:.4f} without it"
            log(f"  {step.note}")
            continue
        layers = layers + [name]
    result.stop_reason = "every measured candidate was tried and the gate still fails"
    return result


def auto_keep_float(
    twin: nn.Module,
    converted: nn.Module,
    float_source: Any,
    reference_logits: Sequence[tuple[str, Any]],
    inputs: Sequence[Tensor],
    *,
    thresholds: Any,
    variant: str,
    max_size: Optional[int] = None,
    candidates: int = 8,
    log: Callable[[str], None] = lambda m: None,
) -> tuple[nn.Module, SearchResult, dict[str, Any]]:
    """``--keep-float auto`` end to end: rank the ``candidates`` layers of lowest isolated SQNR by the IoU
    each recovers alone in float (:func:`..debug.attribute_layers`), then :func:`search_keep_float` on
    ``inputs`` against the float logits ``reference_logits`` with the int8 ``thresholds``.

    Returns the chosen model, the search, and the record for the manifest (layers, why, every step).
    """
    from . import debug

    reports: dict[tuple[str, ...], Any] = {}
    sizes: dict[tuple[str, ...], int] = {}

    def model_for(layers: Sequence[str]) -> nn.Module:
        return keep_layers_float(converted, float_source, layers) if layers else converted

    def evaluate(layers: list[str]):
        key = tuple(layers)
        if key not in reports:
            reports[key] = debug.evaluate_model(model_for(layers), reference_logits, inputs, name="+".join(layers) or "int8",
                                                thresholds=thresholds)
        return reports[key]

    def size_of(layers: list[str]) -> int:
        key = tuple(layers)
        if key not in sizes:
            sizes[key] = lite_size_bytes(model_for(layers))
        return sizes[key]

    int8_size = size_of([])
    budget = max_size if max_size is not None else default_max_size(variant, int8_size)
    baseline = evaluate([])
    ranked: list[tuple[str, float]] = []
    attributions = []
    if not baseline.passed:
        log(f"measuring the {candidates} layers of lowest isolated SQNR, one at a time in float")
        errors = debug.layer_errors(twin, converted, inputs)
        worst = debug.worst_layers(errors, candidates)
        attributions = debug.attribute_layers(twin, converted, float_source, worst, reference_logits, inputs,
                                              baseline=baseline, reverse=False, progress=lambda n: log(f"  {n}"))
        ranked = sorted(((a.name, a.iou_recovered) for a in attributions), key=lambda t: -t[1])
    result = search_keep_float(evaluate, size_of, ranked, max_size=budget, log=log)
    final = result.final
    benefit = dict(ranked)
    record = {
        "mode": "auto",
        "layers": final.float_layers,
        "max_size_bytes": budget,
        "int8_size_bytes": int8_size,
        "why": {name: f"kept float by --keep-float auto: alone in float it recovered {benefit[name]:+.4f} mean IoU "
                      f"vs float on the parity images" for name in final.float_layers},
        "stop_reason": result.stop_reason,
        "steps": [s.to_dict() for s in result.steps],
        "candidates": [a.to_dict() for a in attributions],
    }
    return model_for(final.float_layers), result, record


def float_layer_names(model: nn.Module) -> list[str]:
    """Names of the conv/linear layers of a *float* model (module order): the names ``--keep-float`` takes in
    every format. They are the names of the int8 layers too (eager fusion keeps the conv's name)."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Linear)
    return [name for name, m in model.named_modules() if name and isinstance(m, kinds)]


def check_layer_names(layers: Sequence[str], known: Sequence[str]) -> None:
    """:class:`DataError` naming the ``layers`` that are not in ``known``, with examples of known ones."""
    unknown = [n for n in layers if n not in set(known)]
    if unknown:
        from ..errors import DataError

        raise DataError(f"--keep-float: not a quantized conv/linear layer of this model: {', '.join(unknown)} "
                        f"(`alisnet-export quant-report` lists them; e.g. {', '.join(sorted(known)[:3])})")


@dataclass(frozen=True)
class KeepFloat:
    """Which layers an int8 export keeps in float: the named ``layers``, or with ``auto`` those
    :func:`auto_keep_float` picks (among ``candidates`` measured layers, within ``max_size`` bytes;
    None: :func:`default_max_size`)."""

    layers: tuple[str, ...] = ()
    auto: bool = False
    candidates: int = 8
    max_size: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.auto == bool(self.layers):
            raise ValueError("keep-float: give either layer names or auto, not both or neither")
        if self.candidates < 1:
            raise ValueError("keep-float: candidates must be at least 1")

    @classmethod
    def parse(cls, text: str, *, candidates: int = 8, max_size: Optional[int] = None) -> "KeepFloat":
        """``"auto"`` or ``"LAYER,LAYER"`` (the command line's ``--keep-float``); :class:`ValueError` otherwise."""
        layers = [n.strip() for n in text.split(",") if n.strip()]
        if layers == ["auto"]:
            return cls(auto=True, candidates=candidates, max_size=max_size)
        if "auto" in layers or not layers:
            raise ValueError("--keep-float takes `auto` or a comma-separated list of layer names")
        if max_size is not None:
            raise ValueError("--max-size applies to --keep-float auto")
        return cls(layers=tuple(layers))


def keep_float_for_export(job: Any, spec: Optional[KeepFloat], source: nn.Module,
                          converted: nn.Module) -> tuple[nn.Module, Optional[dict[str, Any]]]:
    """The .ptl exporter's ``keep_float`` option applied to its converted int8 model; returns the model to
    script and the manifest's ``keep_float`` record (None: off). ``auto`` searches on the job's calibration
    images, never on the parity images that then judge the artifact, aiming at the job's gates."""
    if spec is None:
        return converted, None
    float_source = job.qat_model if job.qat_model is not None else float_twin(source)
    if not spec.auto:
        layers = list(spec.layers)
        check_layer_names(layers, weighted_layers(converted))
        job.log(f"keeping {len(layers)} layer(s) float (--keep-float): {', '.join(layers)}")
        return keep_layers_float(converted, float_source, layers), {
            "mode": "manual", "layers": layers, "why": {n: "asked for with --keep-float" for n in layers}}
    inputs = job.calibration_inputs()
    with torch.no_grad():
        reference_logits = [(f"calibration-{i}", job.reference(x).numpy()) for i, x in enumerate(inputs)]
    twin = float_twin(source) if job.qat_model is None else float_source
    model, _, record = auto_keep_float(twin, converted, float_source, reference_logits, inputs,
                                       thresholds=job.thresholds, variant=job.loaded.config.name,
                                       max_size=spec.max_size, candidates=spec.candidates, log=job.log)
    job.log(f"--keep-float auto: {record['stop_reason']}")
    return model, record
