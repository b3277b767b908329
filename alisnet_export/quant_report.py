"""``quant-report``: where int8 loses the silhouette, per layer, and how unsure the float model is anyway.

For each requested int8 path (``targets``: ``ptl``, ``pte``, ``onnx``), quantized exactly as its exporter
quantizes it (same calibration images, same equalization), on the parity photos:

* per quantized layer, in graph order: SQNR and relative L2 of its output vs the float model's, propagated
  (each model on its own inputs) and isolated (the int8 layer on the float model's input), each with its
  stack's own tools where they exist:

  - ``ptl`` (eager QNNPACK): forward hooks on the fused float twin and the converted model
    (:func:`.quantize.debug.layer_errors`);
  - ``pte`` (PT2E, XNNPACK quantizer): torchao's numeric debugger (``prepare_for_propagation_comparison``,
    ``extract_results_from_loggers``, ``compare_results``) on the float and the converted coarse graphs
    (:func:`pte_layer_errors`);
  - ``onnx`` (ONNX Runtime QDQ): ``onnxruntime.quantization.qdq_loss_debug`` activation and weight
    matching between the float and the QDQ model (:func:`onnx_layer_errors`);

* for the worst K layers (isolated SQNR): mask IoU and contour distance vs float with that layer alone
  in float, and with only that layer in int8;
* per image, the float model's own uncertainty (:func:`.parity.uncertain_fraction`) with a picture;
* ``report.json``, ``report.html`` with the plots and overlays of the worst images, written atomically.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ._io import atomic_write
from .parity import UNCERTAIN_MARGIN, ParityReport, Thresholds, uncertain_fraction, uncertainty_note
from .quantize import debug, eager, mixed_precision
from .verify.reports import denormalize, write_overlays
from .visualize import save_png

__all__ = ["PtlQuantModels", "build_ptl_int8", "ptl_quant_report", "uncertainty_picture", "write_quant_report",
           "REPORT_FILES", "TARGETS", "parse_targets", "report_files", "load_float_checkpoint",
           "run_quant_report", "ReportInputs", "OnnxLayerError", "onnx_layer_errors", "onnx_quant_report",
           "pte_layer_errors", "pte_quant_report"]

REPORT_FILES = ("report.json", "report.html", "layers.png")
#: the int8 paths the report debugs, in report order
TARGETS = ("ptl", "pte", "onnx")
TARGET_TITLES = {
    "ptl": "ptl int8 (eager QNNPACK)",
    "pte": "pte int8 (PT2E, XNNPACK quantizer; the converted PT2E module run in PyTorch)",
    "onnx": "onnx int8 (ONNX Runtime static QDQ)",
}


def parse_targets(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"ptl,onnx"`` -> ``("ptl", "onnx")`` (duplicates dropped, order kept); :class:`DataError` for unknown names."""
    from .errors import DataError

    wanted = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in wanted if t not in TARGETS]
    if unknown or not wanted:
        raise DataError(f"--targets: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(TARGETS)}")
    return tuple(dict.fromkeys(wanted))


def plot_file(target: str) -> str:
    """The per-layer plot of ``target`` (``layers.png`` for ptl, ``layers.TARGET.png`` for the others)."""
    return "layers.png" if target == "ptl" else f"layers.{target}.png"


def report_files(targets: Sequence[str]) -> tuple[str, ...]:
    """The fixed file names a report of ``targets`` writes (pictures named after images come on top)."""
    return ("report.json", "report.html", *(plot_file(t) for t in targets))


class PtlQuantModels:
    """The float model, its fused twin, and the converted int8 model of the .ptl path."""

    def __init__(self, source: nn.Module, twin: nn.Module, converted: nn.Module, equalization: dict[str, Any],
                 calibration_images: int) -> None:
        self.source, self.twin, self.converted = source, twin, converted
        self.equalization, self.calibration_images = equalization, calibration_images


def build_ptl_int8(reference: nn.Module, calibration: Sequence[torch.Tensor], *, equalize: bool = True,
                   options: eager.EagerQuantOptions = eager.EagerQuantOptions(),
                   log: Callable[[str], None] = lambda m: None) -> PtlQuantModels:
    """Quantize ``reference`` as ``alisnet-export ptl`` does (post-training): equalize, prepare, calibrate, convert."""
    from .quantize.equalize import equalize_for_quantization

    source, equalization = equalize_for_quantization(reference, list(calibration), enabled=equalize, log=log)
    prepared = eager.prepare(source, qat=False, options=options)
    n = eager.calibrate(prepared, calibration)
    return PtlQuantModels(source, mixed_precision.float_twin(source), eager.convert(prepared), equalization, n)


def uncertainty_picture(picture: np.ndarray, logits: np.ndarray, margin: float = UNCERTAIN_MARGIN) -> np.ndarray:
    """The photo dimmed; the float mask tinted green, its unsure pixels (|fg - bg| < margin) orange,
    unsure background pixels magenta."""
    _, where = uncertain_fraction(logits, margin)
    mask = logits[0, 1] > logits[0, 0]
    out = picture.astype(np.float32) * 0.4
    out[mask & ~where] = 0.5 * out[mask & ~where] + 0.5 * np.array([40, 170, 40])
    out[mask & where] = (255, 150, 0)
    out[~mask & where] = (200, 40, 200)
    return out.clip(0, 255).astype(np.uint8)


def ptl_quant_report(
    models: PtlQuantModels,
    inputs: Sequence[tuple[str, np.ndarray]],
    reference: nn.Module,
    *,
    top_k: int = 8,
    reverse: bool = True,
    thresholds: Optional[Thresholds] = None,
    log: Callable[[str], None] = lambda m: None,
) -> tuple[dict[str, Any], ParityReport, list[tuple[str, np.ndarray]]]:
    """The ptl section of the report (a JSON-ready dict), the all-int8 parity report (masks kept), and
    the float logits per image."""
    eager.use_qnnpack()
    timing: dict[str, float] = {}
    xs = [torch.from_numpy(x) for _, x in inputs]
    t = time.perf_counter()
    with torch.no_grad():
        reference_logits = [(name, reference(x).numpy()) for (name, _), x in zip(inputs, xs)]
    timing["float_model_s"] = time.perf_counter() - t
    t = time.perf_counter()
    baseline = debug.evaluate_model(models.converted, reference_logits, xs, name="ptl-int8", thresholds=thresholds,
                                     keep_masks=True)
    timing["int8_model_s"] = time.perf_counter() - t
    s = baseline.summary()
    log(f"all int8: mask IoU mean {s['mean_iou']:.4f} (min {s['min_iou']:.4f}), contour {s['mean_boundary_px']:.2f} px")
    t = time.perf_counter()
    errors = debug.layer_errors(models.twin, models.converted, xs)
    timing["layer_errors_s"] = time.perf_counter() - t
    worst = debug.worst_layers(errors, top_k)
    log(f"{len(errors)} quantized layers; worst isolated SQNR: "
        + ", ".join(f"{e.name} {e.rank_sqnr_db:.1f} dB" for e in worst[:5]))
    t = time.perf_counter()
    attributions = debug.attribute_layers(models.twin, models.converted, models.twin, worst, reference_logits, xs,
                                          baseline=baseline, reverse=reverse, progress=lambda n: log(f"  attributing {n}"))
    timing["attribution_s"] = time.perf_counter() - t
    section = _target_section("ptl", baseline, errors, worst, attributions, head={
        "scheme": "eager-ptq", "engine": eager.ENGINE, "calibration_images": models.calibration_images,
        "equalization": models.equalization,
    }, notes=[
        "sqnr_db is propagated (each model on its own inputs, as on the phone); local_sqnr_db is isolated (the "
        "int8 layer on the float model's input): the error the layer adds by itself. Worst layers are ranked by "
        "local_sqnr_db.",
        "PointRend's point-head layers run on the points each model chose from its own coarse logits; where the "
        "choices differ, their propagated SQNR measures the choice, not the arithmetic.",
    ], timing=timing)
    return section, baseline, reference_logits


# --------------------------------------------------------------------------- shared by the pte and onnx sections


@dataclass
class ReportInputs:
    """What every target's section is measured on: the float checkpoint and model, the measured images with
    the float model's logits on them, the calibration images (as ``calibration_inputs`` made them, before an
    exporter fits them into its size bounds), and the equalized float models built so far (shared by the
    targets whose fitted calibration inputs are the very same tensors)."""

    loaded: Any
    reference: nn.Module
    inputs: list[tuple[str, np.ndarray]]
    calibration: list[torch.Tensor]
    reference_logits: list[tuple[str, np.ndarray]] = field(default_factory=list)
    equalize: bool = True
    thresholds: Optional[Thresholds] = None
    sources: dict[tuple[int, ...], tuple[nn.Module, dict[str, Any]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.reference_logits:
            with torch.no_grad():
                self.reference_logits = [(name, self.reference(torch.from_numpy(x)).numpy()) for name, x in self.inputs]

    @property
    def xs(self) -> list[torch.Tensor]:
        return [torch.from_numpy(x) for _, x in self.inputs]

    def bounds_for(self, exporter: Any) -> Any:
        """``exporter``'s size bounds for this model, widened where needed to take every measured input (a .pte's
        default stops at 1024 x 1024, which a 1024 px-high landscape photo exceeds; the report exports nothing)."""
        from .exporters.base import SizeBounds

        default = exporter.default_bounds
        hs, ws = [x.shape[2] for _, x in self.inputs], [x.shape[3] for _, x in self.inputs]
        wanted = SizeBounds(default.min_hw, (max(default.max_hw[0], *hs), max(default.max_hw[1], *ws)),
                            default.min_pixels)
        return exporter.bounds_for(self.loaded.config, wanted)

    def job(self, bounds: Any, log: Callable[[str], None]) -> Any:
        """The int8 export job an exporter would get (calibration fitted into ``bounds`` by ``calibration_inputs``)."""
        from .exporters.base import ExportJob

        for name, x in self.inputs:
            bounds.check(x.shape[2], x.shape[3], what=f"measured input {name}")
        return ExportJob(self.loaded, self.reference, "int8", lambda: list(self.calibration), bounds, log=log)

    def quantization_source(self, job: Any, fitted: Sequence[torch.Tensor]) -> tuple[nn.Module, dict[str, Any]]:
        """``job.quantization_source(fitted)`` (equalization as the exporters do it), computed once per input set."""
        key = tuple(id(x) for x in fitted)
        if key not in self.sources:
            self.sources[key] = job.quantization_source(list(fitted), equalize=self.equalize)
        return self.sources[key]

    def evaluate(self, model: Callable[[torch.Tensor], torch.Tensor], name: str, *, keep_masks: bool = False) -> ParityReport:
        return debug.evaluate_model(model, self.reference_logits, self.xs, name=name, thresholds=self.thresholds,
                                    keep_masks=keep_masks)


def _finite(v: Optional[float]) -> Optional[float]:
    return None if v is None or not math.isfinite(v) else float(v)


def _attribute(worst: Sequence[debug.LayerError], layers: Sequence[str], build: Callable[[Sequence[str]], Any],
               evaluate: Callable[[Any, str], ParityReport], baseline: ParityReport, *, reverse: bool,
               log: Callable[[str], None]) -> list[debug.LayerAttribution]:
    """For each keepable layer of ``worst``: the model ``build(keep_float)`` with that layer float (and, with
    ``reverse``, with every other layer of ``layers`` float), judged by ``evaluate`` against the float logits."""
    base_iou = baseline.summary()["mean_iou"]
    out = []
    for layer in worst:
        if not layer.keepable:
            continue
        log(f"  attributing {layer.name}")
        kept = evaluate(build([layer.name]), f"float:{layer.name}").summary()
        only = evaluate(build([n for n in layers if n != layer.name]), f"int8:{layer.name}").summary() if reverse else None
        out.append(debug.LayerAttribution(
            name=layer.name, sqnr_db=_finite(layer.sqnr_db), local_sqnr_db=_finite(layer.local_sqnr_db),
            keep_float_mean_iou=kept["mean_iou"], keep_float_min_iou=kept["min_iou"],
            keep_float_boundary_px=kept["mean_boundary_px"],
            only_int8_mean_iou=only["mean_iou"] if only else None,
            only_int8_boundary_px=only["mean_boundary_px"] if only else None,
            iou_recovered=kept["mean_iou"] - base_iou,
        ))
    return out


def _target_section(target: str, baseline: ParityReport, errors: Sequence[debug.LayerError],
                    worst: Sequence[debug.LayerError], attributions: Sequence[debug.LayerAttribution], *,
                    head: dict[str, Any], notes: list[str], timing: dict[str, float]) -> dict[str, Any]:
    """A target's section, with the keys of the ptl section (``head``: what is particular to the target)."""
    s = baseline.summary()
    return {
        "target": target, **head,
        "int8": {**s, "passed": baseline.passed, "failures": [g.describe() for g in baseline.failures]},
        "per_image": [{"image": m.name, "mask_iou": m.mask_iou, "boundary_mean_px": m.boundary_mean_px,
                       "float_uncertain_fraction": m.float_uncertain_fraction} for m in baseline.images],
        "layers": [e.to_dict() for e in errors],
        "worst_layers": [e.name for e in worst],
        "attribution": [a.to_dict() for a in sorted(attributions, key=lambda a: -a.iou_recovered)],
        "notes": notes,
        "timing": timing,
    }


class _Powers:
    """Signal and noise power sums of one compared tensor over every call (SQNR over all images at once)."""

    def __init__(self) -> None:
        self.signal = self.noise = self.max_abs = 0.0
        self.calls = 0

    def add(self, ref: Any, out: Any) -> None:
        r = np.asarray(ref, dtype=np.float64).ravel()
        d = np.asarray(out, dtype=np.float64).ravel() - r
        self.signal += float(r @ r)
        self.noise += float(d @ d)
        self.max_abs = max(self.max_abs, float(np.abs(d).max()) if d.size else 0.0)
        self.calls += 1

    def merge(self, sums: tuple[float, float, float]) -> None:
        self.signal += sums[0]
        self.noise += sums[1]
        self.max_abs = max(self.max_abs, sums[2])
        self.calls += 1

    @property
    def sqnr_db(self) -> float:
        return debug.sqnr_db(self.signal, self.noise) if self.calls else math.nan

    @property
    def rel_l2(self) -> float:
        if not self.calls:
            return math.nan
        return math.sqrt(self.noise / self.signal) if self.signal > 0 else math.inf


def _layer_error(order: int, name: str, keepable: bool, prop: _Powers, local: _Powers, *,
                 input_q: Optional[tuple[float, int]] = None, output_scale: Optional[float] = None,
                 cls: type = debug.LayerError, **extra: Any) -> debug.LayerError:
    return cls(order=order, name=name, kind="conv", keepable=keepable, sqnr_db=prop.sqnr_db, rel_l2=prop.rel_l2,
               max_abs=prop.max_abs, calls=max(prop.calls, local.calls),
               local_sqnr_db=local.sqnr_db if local.calls else None, local_rel_l2=local.rel_l2 if local.calls else None,
               input_scale=input_q[0] if input_q else None, input_zero_point=input_q[1] if input_q else None,
               output_scale=output_scale, **extra)


# --------------------------------------------------------------------------- onnx (ONNX Runtime QDQ)

#: the float model's tensors qdq_loss_debug saves: every conv's input and output (ReLU folded into it in the QDQ graph)
ONNX_FLOAT_SAVED_OPS = ("Conv", "Relu")
#: the QDQ model's: every tensor before its QuantizeLinear and after its DequantizeLinear
ONNX_INT8_SAVED_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class OnnxLayerError(debug.LayerError):
    """A float conv layer's error in the QDQ model (all its Conv nodes together)."""

    nodes: list[str] = field(default_factory=list)  # the QDQ model's Conv nodes computing this layer
    #: the dequantized int8 weights vs the float weights (``create_weight_matching``; worst node)
    weight_sqnr_db: Optional[float] = None
    #: this layer's output (ReLU applied where QDQ folds it) before vs after its own QuantizeLinear/DequantizeLinear
    #: pair: the output rounding and clipping alone
    output_qdq_sqnr_db: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["weight_sqnr_db"] = _finite(self.weight_sqnr_db)
        d["output_qdq_sqnr_db"] = _finite(self.output_qdq_sqnr_db)
        return d


@dataclass
class _OnnxConv:
    """One quantized Conv node of the QDQ graph and the tensors that compare it with the float graph."""

    node: str
    layer: str
    keepable: bool
    input_act: Optional[str]  # the float tensor its int8 input is quantized from (a tensor of the float graph too)
    output_act: str  # its output before requantization (Relu folded in): the float graph has the same tensor
    output: str  # what the next layer reads: the output after its DequantizeLinear (output_act if not requantized)
    weight: Optional[str]  # the float weight initializer's name
    input_q: Optional[tuple[float, int]]
    output_scale: Optional[float]


def _onnx_convs(qdq: Any, layer_of: Mapping[str, str]) -> list[_OnnxConv]:
    """The QDQ model's quantized Conv nodes (graph order) with their tensors (``layer_of``: node -> float layer)."""
    from onnx import numpy_helper
    from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX

    inits = {i.name: i for i in qdq.graph.initializer}
    produced = {o: n for n in qdq.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in qdq.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def scalar(name: str) -> Optional[float]:
        return float(numpy_helper.to_array(inits[name]).reshape(-1)[0]) if name in inits else None

    def user(tensor: str, op: str) -> Any:
        return next((c for c in consumers.get(tensor, []) if c.op_type == op), None)

    out = []
    for n in qdq.graph.node:
        dq = produced.get(n.input[0]) if n.op_type == "Conv" else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue  # not a Conv, or a float one (nodes_to_exclude)
        q = produced.get(dq.input[0])
        quantized_input = q is not None and q.op_type == "QuantizeLinear"
        qo = user(n.output[0], "QuantizeLinear")
        dqo = user(qo.output[0], "DequantizeLinear") if qo is not None else None
        wdq = produced.get(n.input[1]) if len(n.input) > 1 else None
        weight = (wdq.input[0][:-len(TENSOR_NAME_QUANT_SUFFIX)] if wdq is not None and wdq.op_type == "DequantizeLinear"
                  and wdq.input[0].endswith(TENSOR_NAME_QUANT_SUFFIX) else None)
        zp = scalar(q.input[2]) if quantized_input and len(q.input) > 2 else 0.0
        scale = scalar(q.input[1]) if quantized_input else None
        out.append(_OnnxConv(
            node=n.name, layer=layer_of.get(n.name, n.name), keepable=n.name in layer_of,
            input_act=q.input[0] if quantized_input else None, output_act=n.output[0],
            output=dqo.output[0] if dqo is not None else n.output[0], weight=weight,
            input_q=(scale, int(zp or 0)) if scale is not None else None,
            output_scale=scalar(qo.input[1]) if qo is not None else None))
    return out


def _onnx_subgraph(model: Any, input_name: str, output_name: str) -> Any:
    """The nodes of ``model`` between tensor ``input_name`` and ``output_name`` as a model of their own (a
    layer's QuantizeLinear -> DequantizeLinear -> Conv -> QuantizeLinear -> DequantizeLinear, weights included)."""
    from onnx import TensorProto, helper

    inits = {i.name: i for i in model.graph.initializer}
    produced = {o: n for n in model.graph.node for o in n.output}
    keep: set[int] = set()
    used: set[str] = set()
    stack = [output_name]
    while stack:
        tensor = stack.pop()
        if not tensor or tensor == input_name:
            continue
        if tensor in inits:
            used.add(tensor)
            continue
        node = produced[tensor]
        if id(node) not in keep:
            keep.add(id(node))
            stack.extend(node.input)
    graph = helper.make_graph([n for n in model.graph.node if id(n) in keep], "isolated-layer",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, None)],
                              initializer=[inits[name] for name in sorted(used)])
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _ort_options() -> Any:
    """The session options qdq_loss_debug runs with (no graph optimization: Q/DQ computed as written), quiet."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return options


#: the suffix qdq_loss_debug gives the model outputs it adds (one per saved tensor)
_SAVED_SUFFIX = "_ReshapedSavedOutput"


def _keep_saved_shapes(path: Path) -> None:
    """qdq_loss_debug saves every tensor flattened (a Reshape to [-1]); the isolated check feeds the float
    model's conv inputs to int8 subgraphs, so here the saved tensors keep their shapes (Identity)."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.output[0].endswith(_SAVED_SUFFIX):
            del node.input[1:]
            node.op_type = "Identity"
    for out in model.graph.output:
        if out.name.endswith(_SAVED_SUFFIX):
            out.type.tensor_type.ClearField("shape")
    onnx.save(model, str(path))


@contextlib.contextmanager
def _workdir(prefix: str) -> Iterator[Path]:
    """The ONNX exporter's private working folder (the ORT tools write files into the cwd), with stdout sent to
    stderr (``--json`` owns stdout)."""
    from .exporters.onnx import private_workdir

    with private_workdir(prefix) as folder, contextlib.redirect_stdout(sys.stderr):
        yield folder


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(level)


def _power_sums(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> tuple[float, float, float]:
    """``compute_activation_error``'s ``err_func``: signal and noise power and max |error|, to sum over images."""
    p = _Powers()
    for r, o in zip(ref, out):
        p.add(r, o)
    return p.signal, p.noise, p.max_abs


def onnx_layer_errors(float_path: Path, qdq_path: Path, reference: nn.Module, inputs: Sequence[np.ndarray], *,
                      progress: Callable[[int], None] | None = None) -> list[OnnxLayerError]:
    """SQNR of every quantized float conv layer of the QDQ model ``qdq_path`` against the float ONNX model
    ``float_path`` (the model it was quantized from), on ``inputs``, in graph order; layer names from the
    exporter's module scopes (:func:`.exporters.onnx.conv_node_layers`, ``reference``: the float model).

    With ``onnxruntime.quantization.qdq_loss_debug``: both models augmented to output their intermediate
    tensors (``modify_model_output_intermediate_tensors``), run (``collect_activations``), matched by tensor name
    (``create_activation_matching``) and compared (``compute_activation_error``): the propagated error of each
    conv's requantized output against the float model's, and its output rounding alone; weights by
    ``create_weight_matching`` / ``compute_weight_error``. The isolated error: each layer's int8 subgraph
    (input QuantizeLinear to output DequantizeLinear) run on the float model's input to that layer."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import qdq_loss_debug as qdl

    from .exporters.onnx import conv_node_layers
    from .manifest import INPUT_NAME

    float_path, qdq_path = Path(float_path).resolve(), Path(qdq_path).resolve()
    qdq, float_model = onnx.load(str(qdq_path)), onnx.load(str(float_path), load_external_data=False)
    convs = _onnx_convs(qdq, conv_node_layers(float_model, reference))
    # the QDQ graph folds a conv's ReLU into its output QuantizeLinear (the tensor keeps the ReLU's name, holding the
    # conv's output): the rounding alone compares the ReLU of it with the dequantized output
    relu_outputs = {n.output[0] for n in float_model.graph.node if n.op_type == "Relu"}
    prop, local, rounding = ({c.layer: _Powers() for c in convs} for _ in range(3))
    options = _ort_options()
    with _workdir(".alisnet-quant-report-qdq-debug.") as work:
        with _quiet_root_logger():  # it logs an error for every bias duplicated per use (point head): not weights
            weight_sqnr = qdl.compute_weight_error(qdl.create_weight_matching(str(float_path), str(qdq_path)))
        saving_float, saving_int8 = work / "float.saving.onnx", work / "int8.saving.onnx"
        qdl.modify_model_output_intermediate_tensors(str(float_path), str(saving_float),
                                                     op_types_for_saving=list(ONNX_FLOAT_SAVED_OPS))
        _keep_saved_shapes(saving_float)
        qdl.modify_model_output_intermediate_tensors(str(qdq_path), str(saving_int8),
                                                     op_types_for_saving=list(ONNX_INT8_SAVED_OPS))
        isolated = {c.node: ort.InferenceSession(_onnx_subgraph(qdq, c.input_act, c.output).SerializeToString(), options,
                                                 providers=["CPUExecutionProvider"]) for c in convs if c.input_act}
        for i, x in enumerate(inputs):
            feed = [{INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}]
            floats = qdl.collect_activations(str(saving_float), feed, session_options=options)
            floats.setdefault(INPUT_NAME, [feed[0][INPUT_NAME]])
            matched = {k: v for k, v in qdl.create_activation_matching(
                qdl.collect_activations(str(saving_int8), feed, session_options=options), floats).items() if "float" in v}
            for name in relu_outputs & matched.keys():
                matched[name]["pre_qdq"] = [np.maximum(a, 0) for a in matched[name]["pre_qdq"]]
            errors = qdl.compute_activation_error(matched, err_func=_power_sums)
            for c in convs:
                if c.output_act in errors:
                    prop[c.layer].merge(errors[c.output_act]["xmodel_err"])
                    rounding[c.layer].merge(errors[c.output_act]["qdq_err"])
                if c.node in isolated and c.input_act in floats and c.output_act in floats:
                    alone = isolated[c.node].run(None, {c.input_act: floats[c.input_act][0]})[0]
                    local[c.layer].add(floats[c.output_act][0], alone)
            del floats, matched, errors
            if progress:
                progress(i + 1)
    first: dict[str, _OnnxConv] = {}
    nodes: dict[str, list[str]] = {}
    for c in convs:
        first.setdefault(c.layer, c)
        nodes.setdefault(c.layer, []).append(c.node)
    out = []
    for order, (layer, c) in enumerate(first.items()):
        weights = [weight_sqnr[w.weight] for w in convs if w.layer == layer and w.weight in weight_sqnr]
        out.append(_layer_error(order, layer, c.keepable, prop[layer], local[layer], input_q=c.input_q,
                                output_scale=c.output_scale, cls=OnnxLayerError, nodes=nodes[layer],
                                weight_sqnr_db=min(weights) if weights else None,
                                output_qdq_sqnr_db=rounding[layer].sqnr_db if rounding[layer].calls else None))
    return out


class _OrtModel:
    """An int8 ONNX model run as parity runs it (ONNX Runtime's CPU provider, default optimizations), called like
    an eager model."""

    def __init__(self, path: Path) -> None:
        from .runtimes.onnx_runner import OnnxRuntimeRunner

        self.runner = OnnxRuntimeRunner(path)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner.run(x.numpy()))


def onnx_quant_report(ctx: ReportInputs, *, top_k: int = 8, reverse: bool = True, per_channel: bool = True,
                      log: Callable[[str], None] = lambda m: None) -> tuple[dict[str, Any], ParityReport]:
    """The onnx section: the float model exported and QDQ-quantized as ``alisnet-export onnx`` does (same
    calibration, equalization and opset), per-layer errors (:func:`onnx_layer_errors`), and for the worst
    ``top_k`` layers the model requantized with that layer's Conv nodes excluded (``nodes_to_exclude``), run by
    ONNX Runtime; ``reverse``: also with every other layer's nodes excluded (only that layer int8)."""
    import onnx
    import onnxruntime

    from .exporters.onnx import DEFAULT_OPSET, OnnxExporter, conv_node_layers, export_float_onnx, quantize_qdq

    timing: dict[str, float] = {}
    t = time.perf_counter()
    job = ctx.job(ctx.bounds_for(OnnxExporter()), log)
    fitted = job.calibration_inputs()
    source, equalization = ctx.quantization_source(job, fitted)
    with tempfile.TemporaryDirectory(prefix=".alisnet-quant-report-onnx.") as folder:
        work = Path(folder)
        float_path, int8_path = work / "float.onnx", work / "int8.onnx"
        export_float_onnx(job, float_path, opset=DEFAULT_OPSET, model=source)
        nodes_of: dict[str, list[str]] = {}
        for node, layer in conv_node_layers(onnx.load(str(float_path), load_external_data=False), ctx.reference).items():
            nodes_of.setdefault(layer, []).append(node)
        counts = quantize_qdq(float_path, int8_path, fitted, per_channel=per_channel)
        timing["export_and_quantize_s"] = time.perf_counter() - t
        t = time.perf_counter()
        baseline = ctx.evaluate(_OrtModel(int8_path), "onnx-int8", keep_masks=True)
        timing["int8_model_s"] = time.perf_counter() - t
        s = baseline.summary()
        log(f"onnx all int8: mask IoU mean {s['mean_iou']:.4f} (min {s['min_iou']:.4f}), contour {s['mean_boundary_px']:.2f} px")
        t = time.perf_counter()
        errors = onnx_layer_errors(float_path, int8_path, ctx.reference, [x for _, x in ctx.inputs])
        timing["layer_errors_s"] = time.perf_counter() - t
        worst = debug.worst_layers(errors, top_k)
        log(f"onnx: {len(errors)} quantized conv layers; worst isolated SQNR: "
            + ", ".join(f"{e.name} {e.rank_sqnr_db:.1f} dB" for e in worst[:5]))

        def build(keep_float: Sequence[str]) -> _OrtModel:
            dest = work / "attribution.onnx"
            quantize_qdq(float_path, dest, fitted, per_channel=per_channel,
                         nodes_to_exclude=[n for layer in keep_float for n in nodes_of.get(layer, [])])
            return _OrtModel(dest)

        t = time.perf_counter()
        attributions = _attribute(worst, [e.name for e in errors if e.keepable], build,
                                  ctx.evaluate, baseline, reverse=reverse, log=log)
        timing["attribution_s"] = time.perf_counter() - t
    head = {"scheme": "ort-static-qdq", "backend": f"onnxruntime {onnxruntime.__version__}",
            "calibration_images": len(fitted), "equalization": equalization, "per_channel": per_channel,
            "opset": DEFAULT_OPSET, "quantization": counts, "reverse_attribution": reverse}
    notes = [
        "Per-layer errors by onnxruntime.quantization.qdq_loss_debug (float ONNX model vs the QDQ model, tensors "
        "matched by name, graph optimizations off so every QuantizeLinear/DequantizeLinear runs as written). "
        "sqnr_db: the layer's requantized output vs the float model's (propagated); local_sqnr_db: the layer's "
        "int8 subgraph run on the float model's input (isolated); weight_sqnr_db: its dequantized int8 weights; "
        "output_qdq_sqnr_db: its output rounding alone. Worst layers are ranked by local_sqnr_db.",
        "Mask IoU and contour px: ONNX Runtime with its default optimizations (QDQ fused into int8 kernels), as "
        "parity runs the artifact; each attribution requantizes the float model with that layer's Conv nodes in "
        "nodes_to_exclude" + (" (and, for 'only this layer int8', every other layer's)." if reverse else
                              "; the reverse attribution (only this layer int8) was skipped (--no-reverse)."),
        "PointRend's point-head layers run on the points each model chose from its own coarse logits; where the "
        "choices differ, their propagated SQNR measures the choice, not the arithmetic.",
    ]
    return _target_section("onnx", baseline, errors, worst, attributions, head=head, notes=notes, timing=timing), baseline


# --------------------------------------------------------------------------- pte (PT2E)

_RELUS = ("aten.relu.default", "aten.relu_.default", "aten.hardtanh.default", "aten.hardtanh_.default")
_BATCH_NORMS = ("aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default")


def _target_name(node: Any) -> str:
    return str(node.target) if node.op == "call_function" else ""


@dataclass
class _PteConv:
    """A quantized conv of the converted coarse graph: where its int8 output is read, and its float layer."""

    layer: str
    end: str  # the node whose debug handle names the output (the ReLU after the conv, else the conv)
    output: Optional[str]  # the dequantize node after it: what the next layer reads
    input_q: Optional[tuple[float, int]]
    output_scale: Optional[float]


def _module_path(node: Any, prefix: str = "model.") -> Optional[str]:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1]
    path = path[0] if isinstance(path, tuple) else str(path)
    return path[len(prefix):] if path.startswith(prefix) else path


def _pte_convs(converted: nn.Module) -> list[_PteConv]:
    """The converted graph's quantized convs in graph order (input from a dequantize node)."""
    def number(v: Any) -> Optional[float]:
        return float(v) if isinstance(v, (int, float)) else None

    out = []
    for n in converted.graph.nodes:
        if _target_name(n) != "aten.conv2d.default" or "dequantize_per_tensor" not in _target_name(n.args[0]):
            continue
        users = list(n.users)
        end = users[0] if len(users) == 1 and _target_name(users[0]) in _RELUS else n
        q = next((u for u in end.users if "quantize_per_tensor" in _target_name(u)
                  and "dequantize" not in _target_name(u)), None)
        dq = next((u for u in q.users if "dequantize_per_tensor" in _target_name(u)), None) if q is not None else None
        dq_in = n.args[0]
        scale, zp = number(dq_in.args[1]), number(dq_in.args[2])
        out.append(_PteConv(layer=_module_path(n) or n.name, end=end.name, output=dq.name if dq is not None else None,
                            input_q=(scale, int(zp)) if scale is not None and zp is not None else None,
                            output_scale=number(q.args[1]) if q is not None else None))
    return out


def _debug_names(logged: nn.Module) -> dict[str, str]:
    """Node name -> the name of its debug handle (its oldest ancestor in the exported graph), from the loggers
    ``prepare_for_propagation_comparison`` inserted."""
    from torchao.quantization.pt2e._numeric_debugger import OutputLogger

    return {m.node_name: m.debug_info.name for _, m in logged.named_children() if isinstance(m, OutputLogger)}


def _clear_loggers(logged: nn.Module) -> None:
    from torchao.quantization.pt2e._numeric_debugger import OutputLogger

    for _, m in logged.named_children():
        if isinstance(m, OutputLogger):
            m.stats.clear()


class _FloatInputs(torch.fx.Interpreter):
    """The converted graph run with every layer fed the float graph's value of its input: each activation quantize
    node quantizes the float graph's value of the same tensor (its producer's debug handle) for the layers after
    it, so each int8 layer sees the float model's input and its output error is the error it adds by itself. The
    ``watch`` dequantize nodes record what they dequantize from the graph's own value (the layer's int8 output)."""

    def __init__(self, graph_module: nn.Module, float_values: Mapping[str, torch.Tensor], debug_name: Mapping[str, str],
                 watch: set[str]) -> None:
        super().__init__(graph_module)
        self.float_values, self.debug_name, self.watch = float_values, debug_name, watch
        self.own: dict[str, torch.Tensor] = {}  # quantize node -> its output from the graph's own value
        self.recorded: dict[str, torch.Tensor] = {}

    def run_node(self, n: Any) -> Any:
        name = _target_name(n)
        if "dequantize_per_tensor" in name and n.name in self.watch and isinstance(n.args[0], torch.fx.Node) \
                and n.args[0].name in self.own:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            self.recorded[n.name] = n.target(self.own[n.args[0].name], *args[1:], **kwargs)
        elif "quantize_per_tensor" in name and "dequantize" not in name and isinstance(n.args[0], torch.fx.Node) \
                and n.args[0].op != "placeholder":
            value = self.float_values.get(self.debug_name.get(n.args[0].name, ""))
            if isinstance(value, torch.Tensor):
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                if value.shape == args[0].shape:
                    self.own[n.name] = n.target(*args, **kwargs)
                    return n.target(value.to(args[0].dtype), *args[1:], **kwargs)
        result = super().run_node(n)
        if n.name in self.watch and n.name not in self.recorded:
            self.recorded[n.name] = result
        return result


@torch.no_grad()
def pte_layer_errors(float_graph: nn.Module, converted: nn.Module, inputs: Sequence[torch.Tensor], *,
                     keepable: Optional[Sequence[str]] = None,
                     progress: Callable[[int], None] | None = None) -> list[debug.LayerError]:
    """SQNR of every quantized conv of ``converted`` (the PT2E-converted coarse graph) against ``float_graph`` (the
    exported float coarse graph it was quantized from, :func:`.exporters.pte.export_coarse`) on ``inputs``, in
    graph order, named by the exporter graph's ``nn_module_stack`` (``model.`` stripped: the float layer names).

    torchao's numeric debugger logs every node of both graphs (``prepare_for_propagation_comparison``,
    ``extract_results_from_loggers``) and pairs them by debug handle (``compare_results``): the propagated
    error. Handles are matched by name (the two graphs come from two exports of the same model, whose
    node names agree), and a conv followed by BatchNorm in the float graph is compared after the BatchNorm
    (PT2E folds it into the conv). Isolated error: the converted graph re-run with each activation's quantize
    node fed the float graph's value (:class:`_FloatInputs`)."""
    from torchao.quantization.pt2e import compare_results, extract_results_from_loggers, prepare_for_propagation_comparison

    float_logged = prepare_for_propagation_comparison(float_graph)
    int8_logged = prepare_for_propagation_comparison(converted)
    float_handle, int8_handle = _debug_names(float_logged), _debug_names(int8_logged)
    folded = {}
    for n in float_graph.graph.nodes:
        users = list(n.users)
        if _target_name(n) == "aten.conv2d.default" and len(users) == 1 and _target_name(users[0]) in _BATCH_NORMS:
            folded[float_handle.get(n.name)] = float_handle.get(users[0].name)
    convs = _pte_convs(converted)
    keys = {c.layer: int8_handle.get(c.end) for c in convs}
    prop = {c.layer: _Powers() for c in convs}
    local = {c.layer: _Powers() for c in convs}
    try:
        for i, x in enumerate(inputs):
            float_logged(x)
            int8_logged(x)
            ref = {info.name: value for info, value in extract_results_from_loggers(float_logged).items()}
            for conv, bn in folded.items():
                if bn in ref:
                    ref[conv] = ref[bn]
            act = {info.name: value for info, value in extract_results_from_loggers(int8_logged).items()}
            wanted = {k for k in keys.values() if k in ref and k in act}
            comparisons = compare_results({k: ref[k] for k in wanted}, {k: act[k] for k in wanted})
            forced = _FloatInputs(converted, {k: v[2][0] for k, v in ref.items() if v[2]}, int8_handle,
                                  {c.output for c in convs if c.output})
            forced.run(x)
            for c in convs:
                key = keys[c.layer]
                for r in (comparisons[key].results if key in comparisons else []):
                    prop[c.layer].add(r.ref, r.actual)
                if key in ref and c.output in forced.recorded:
                    local[c.layer].add(ref[key][2][0], forced.recorded[c.output])
            _clear_loggers(float_logged)
            _clear_loggers(int8_logged)
            if progress:
                progress(i + 1)
    finally:
        _clear_loggers(float_logged)
        _clear_loggers(int8_logged)
    allowed = set(keepable) if keepable is not None else None
    return [_layer_error(order, c.layer, allowed is None or c.layer in allowed, prop[c.layer], local[c.layer],
                         input_q=c.input_q, output_scale=c.output_scale) for order, c in enumerate(convs)]


def pte_quant_report(ctx: ReportInputs, *, top_k: int = 8, reverse: bool = True, per_channel: bool = True,
                     log: Callable[[str], None] = lambda m: None) -> tuple[dict[str, Any], ParityReport]:
    """The pte section: backbone + head PT2E-quantized as ``alisnet-export pte`` does (same calibration,
    equalization, example input and size bounds; PointRend float), run as the converted PT2E module in PyTorch
    (not lowered to ExecuTorch); per-layer errors (:func:`pte_layer_errors`); for the worst ``top_k`` layers the
    model requantized with that layer left unannotated (``quantize_coarse_pt2e(keep_float=...)``), and with
    ``reverse`` with every other conv layer unannotated (only that layer int8)."""
    from .exporters.pte import PteExporter, export_coarse, export_example, quantize_coarse_pt2e
    from .quantize.mixed_precision import float_layer_names

    timing: dict[str, float] = {}
    t = time.perf_counter()
    bounds = ctx.bounds_for(PteExporter())
    job = ctx.job(bounds, log)
    fitted = job.calibration_inputs()
    source, equalization = ctx.quantization_source(job, fitted)
    example = export_example(bounds, job.example_hw)

    def build(keep_float: Sequence[str]) -> nn.Module:
        return quantize_coarse_pt2e(source, example, bounds, fitted, per_channel=per_channel, keep_float=tuple(keep_float))

    model = build(())
    timing["quantize_s"] = time.perf_counter() - t
    t = time.perf_counter()
    baseline = ctx.evaluate(model, "pte-int8", keep_masks=True)
    timing["int8_model_s"] = time.perf_counter() - t
    s = baseline.summary()
    log(f"pte all int8: mask IoU mean {s['mean_iou']:.4f} (min {s['min_iou']:.4f}), contour {s['mean_boundary_px']:.2f} px")
    t = time.perf_counter()
    keepable = [n for n in float_layer_names(ctx.reference) if not n.startswith("point_rend.")]
    errors = pte_layer_errors(export_coarse(source, example, bounds), model.coarse, ctx.xs, keepable=keepable)
    timing["layer_errors_s"] = time.perf_counter() - t
    worst = debug.worst_layers(errors, top_k)
    log(f"pte: {len(errors)} quantized conv layers; worst isolated SQNR: "
        + ", ".join(f"{e.name} {e.rank_sqnr_db:.1f} dB" for e in worst[:5]))
    t = time.perf_counter()
    attributions = _attribute(worst, [e.name for e in errors if e.keepable], build,
                              ctx.evaluate, baseline, reverse=reverse, log=log)
    timing["attribution_s"] = time.perf_counter() - t
    head = {"scheme": "pt2e-ptq", "backend": "xnnpack quantizer (converted PT2E module run in PyTorch, not lowered)",
            "calibration_images": len(fitted), "equalization": equalization, "per_channel": per_channel,
            "quantized_modules": ["backbone", "head"], "reverse_attribution": reverse}
    notes = [
        "Per-layer errors by torchao's PT2E numeric debugger (prepare_for_propagation_comparison, "
        "extract_results_from_loggers, compare_results) between the exported float coarse graph and the converted "
        "one; debug handles matched by node name (two exports of the same model), a conv's BatchNorm folded as "
        "PT2E folds it. sqnr_db: the layer's dequantized int8 output vs the float model's (propagated); "
        "local_sqnr_db: the converted graph with every quantize node fed the float model's value (isolated). "
        "Worst layers are ranked by local_sqnr_db.",
        "PointRend stays float in a .pte; only backbone and head convs are listed.",
        "Mask IoU and contour px: the converted PT2E module (reference int8 arithmetic in PyTorch); the lowered "
        "XNNPACK program may differ by rounding." + ("" if reverse else
                                                     " The reverse attribution (only this layer int8) was skipped (--no-reverse)."),
    ]
    return _target_section("pte", baseline, errors, worst, attributions, head=head, notes=notes, timing=timing), baseline


def _plot_layers(path: Path, section: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = section["layers"]
    att = section["attribution"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 8), gridspec_kw={"height_ratios": [3, 2]})
    x = np.arange(len(layers))
    prop = [l["sqnr_db"] if l["sqnr_db"] is not None else np.nan for l in layers]
    loc = [l["local_sqnr_db"] if l["local_sqnr_db"] is not None else np.nan for l in layers]
    ax1.plot(x, prop, "-", color="#888", label="propagated SQNR (int8 model vs float)")
    ax1.plot(x, loc, "o", ms=3, color="#1f77b4", label="isolated SQNR (this layer alone int8)")
    if any(l.get("weight_sqnr_db") is not None for l in layers):
        ax1.plot(x, [l["weight_sqnr_db"] if l.get("weight_sqnr_db") is not None else np.nan for l in layers], "x", ms=3,
                 color="#9467bd", label="weight SQNR (int8 weights vs float)")
    worst = set(section["worst_layers"])
    for i, l in enumerate(layers):
        if l["name"] in worst and l["local_sqnr_db"] is not None:
            ax1.plot(i, l["local_sqnr_db"], "o", ms=7, mfc="none", mec="#d62728")
            ax1.annotate(l["name"], (i, l["local_sqnr_db"]), fontsize=6, rotation=30, color="#d62728")
    ax1.set_xlabel("quantized layer, graph order")
    ax1.set_ylabel("SQNR (dB)")
    ax1.set_title(f"{TARGET_TITLES.get(section['target'], section['target'])}: per-layer error vs float")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    names = [a["name"] for a in att]
    y = np.arange(len(att))
    ax2.barh(y - 0.2, [a["iou_recovered"] for a in att], height=0.4, color="#2ca02c",
             label="IoU recovered with this layer alone float")
    lost = [(1.0 - a["only_int8_mean_iou"]) if a["only_int8_mean_iou"] is not None else 0.0 for a in att]
    ax2.barh(y + 0.2, [-v for v in lost], height=0.4, color="#d62728", label="IoU lost with only this layer int8")
    ax2.set_yticks(y, names, fontsize=7)
    ax2.axvline(0, color="k", lw=0.8)
    ax2.set_xlabel("mean mask IoU vs float (change)")
    ax2.legend(fontsize=8, loc="lower right")
    ax2.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"), force=True)
    plt.close(fig)


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return format(v, spec)


#: extra per-layer columns of the HTML table, shown where a target's layers have them
_EXTRA_COLUMNS = (("weight_sqnr_db", "weight SQNR dB"), ("output_qdq_sqnr_db", "output rounding SQNR dB"))


def _html_target(target: str, sec: dict[str, Any], overlays: list[dict[str, Any]], plot: str) -> list[str]:
    e = html.escape
    s = sec["int8"]
    parts = [f"<h2>{e(TARGET_TITLES.get(target, target))}</h2><p>all int8: mask IoU mean {s['mean_iou']:.4f} (min "
             f"{s['min_iou']:.4f}), contour {s['mean_boundary_px']:.2f} px mean, gate "
             f"{'PASSED' if s['passed'] else 'FAILED'}</p><img class='wide' src='{e(plot)}'>"]
    parts.append("<h3>Attribution (worst layers by isolated SQNR)</h3><table><tr><th>layer</th><th>isolated SQNR dB</th>"
                 "<th>propagated SQNR dB</th><th>IoU, this layer float</th><th>contour px</th><th>IoU recovered</th>"
                 "<th>IoU, only this layer int8</th><th>contour px</th></tr>")
    for a in sec["attribution"]:
        parts.append(f"<tr><td>{e(a['name'])}</td><td>{_fmt(a['local_sqnr_db'], '.1f')}</td><td>{_fmt(a['sqnr_db'], '.1f')}</td>"
                     f"<td>{a['keep_float_mean_iou']:.4f}</td><td>{a['keep_float_boundary_px']:.2f}</td>"
                     f"<td>{a['iou_recovered']:+.4f}</td><td>{_fmt(a['only_int8_mean_iou'], '.4f')}</td>"
                     f"<td>{_fmt(a['only_int8_boundary_px'])}</td></tr>")
    parts.append(f"</table><h3>Worst images, {e(target)} all int8</h3>")
    for item in overlays:
        f = item["files"]
        parts.append(f"<h4>{e(item['image'])}: IoU {item['iou']:.4f}, contour {item['boundary_mean_px']:.2f} px</h4>"
                     "<p>float mask | int8 mask | disagreement (red: only float, blue: only int8)</p>"
                     f"<img src='{e(f['float'])}'><img src='{e(f['artifact'])}'><img src='{e(f['diff'])}'>")
    extra = [(k, label) for k, label in _EXTRA_COLUMNS if any(k in l for l in sec["layers"])]
    parts.append(f"<h3>Every quantized layer of {e(target)} (graph order)</h3><table><tr><th>#</th><th>layer</th>"
                 "<th>kind</th><th>SQNR dB</th><th>isolated SQNR dB</th>"
                 + "".join(f"<th>{label}</th>" for _, label in extra) + "<th>rel. L2</th><th>calls</th></tr>")
    for l in sec["layers"]:
        parts.append(f"<tr><td>{l['order']}</td><td>{e(l['name'])}</td><td>{l['kind']}</td><td>{_fmt(l['sqnr_db'], '.1f')}</td>"
                     f"<td>{_fmt(l['local_sqnr_db'], '.1f')}</td>" + "".join(f"<td>{_fmt(l.get(k), '.1f')}</td>" for k, _ in extra)
                     + f"<td>{_fmt(l['rel_l2'], '.3g')}</td><td>{l['calls']}</td></tr>")
    parts.append("</table>")
    parts += [f"<p><small>{e(n)}</small></p>" for n in sec["notes"]]
    return parts


def _html(report: dict[str, Any], overlays: Mapping[str, list[dict[str, Any]]]) -> str:
    e = html.escape
    targets = list(report["targets"])
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Quantization report</title><style>",
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}",
             "td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}.warn{color:#b00;font-weight:bold}",
             "img{max-width:32%;margin-right:1%;border:1px solid #999}img.wide{max-width:100%}</style></head><body>",
             "<h1>Quantization report</h1><ul>"]
    for k in ("checkpoint", "variant", "height", "images", "seconds"):
        parts.append(f"<li><b>{k}</b>: {e(str(report[k]))}</li>")
    parts.append("</ul>")
    if report["uncertainty"]["note"]:
        parts.append(f"<p class='warn'>{e(report['uncertainty']['note'])}</p>")
    parts.append("<h2>Summary</h2><table><tr><th>target</th><th>all-int8 mask IoU (mean / min)</th><th>contour px</th>"
                 "<th>gate</th><th>worst layers (isolated SQNR dB)</th></tr>")
    for t in targets:
        sec = report["targets"][t]
        s, by_name = sec["int8"], {l["name"]: l for l in sec["layers"]}
        worst = ", ".join(f"{n} ({_fmt(by_name[n]['local_sqnr_db'], '.1f')})" for n in sec["worst_layers"][:3])
        parts.append(f"<tr><td>{e(t)}</td><td>{s['mean_iou']:.4f} / {s['min_iou']:.4f}</td><td>{s['mean_boundary_px']:.2f}</td>"
                     f"<td>{'PASSED' if s['passed'] else 'FAILED'}</td><td>{e(worst)}</td></tr>")
    parts.append("</table>")
    for t in targets:
        parts += _html_target(t, report["targets"][t], overlays.get(t, []), report["files"]["targets"][t]["plot"])
    parts.append("<h2>Float-model uncertainty</h2><p>Orange: float person pixels with |fg - bg| &lt; "
                 f"{UNCERTAIN_MARGIN:g} (int8 cannot be expected to agree there); magenta: unsure background; "
                 "green: confident person.</p><table><tr><th>image</th><th>unsure share of the float mask</th>"
                 + "".join(f"<th>{e(t)} int8 IoU</th>" for t in targets) + "</tr>")
    ious = {t: {m["image"]: m["mask_iou"] for m in report["targets"][t]["per_image"]} for t in targets}
    for name, fraction in report["uncertainty"]["float_uncertain_fraction"].items():
        parts.append(f"<tr><td>{e(name)}</td><td>{fraction:.1%}</td>"
                     + "".join(f"<td>{_fmt(ious[t].get(name), '.4f')}</td>" for t in targets) + "</tr>")
    parts.append("</table>")
    for name, file in report["uncertainty"]["pictures"].items():
        parts.append(f"<img src='{e(file)}' title='{e(name)}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_quant_report(out_dir: Path, report: dict[str, Any], baseline: ParityReport | Mapping[str, ParityReport],
                       reference_logits: Sequence[tuple[str, np.ndarray]], inputs: Sequence[tuple[str, np.ndarray]],
                       mean: Sequence[float], std: Sequence[float], *, worst: int = 3) -> dict[str, Path]:
    """Write report.json, report.html, one per-layer plot per target (:func:`plot_file`), the uncertainty pictures
    and the overlays into ``out_dir`` (each file atomically); fills ``report["uncertainty"]`` and
    ``report["files"]`` (``plot`` and ``overlays``: the first target's; ``targets``: each target's).
    ``baseline``: each target's all-int8 parity report (masks kept), or the ptl one."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    baselines = {"ptl": baseline} if isinstance(baseline, ParityReport) else dict(baseline)
    pictures = {name: denormalize(x, mean, std) for name, x in inputs}
    fractions, files = {}, {}
    for name, logits in reference_logits:
        fractions[name] = uncertain_fraction(logits)[0]
        file = f"unsure.{name}.png".replace("@", "_").replace("/", "_")
        image = uncertainty_picture(pictures[name], logits)
        atomic_write(out_dir / file, lambda p, im=image: save_png(im, p), force=True)
        files[name] = file
    report["uncertainty"] = {"margin": UNCERTAIN_MARGIN, "float_uncertain_fraction": fractions,
                             "note": uncertainty_note(fractions), "pictures": files}
    overlays, per_target = {}, {}
    for target, section in report["targets"].items():
        overlays[target] = write_overlays(baselines[target], pictures, out_dir, worst=worst)
        _plot_layers(out_dir / plot_file(target), section)
        per_target[target] = {"plot": plot_file(target), "overlays": overlays[target]}
    first = next(iter(report["targets"]))
    paths = {"json": out_dir / "report.json", "html": out_dir / "report.html", "plot": out_dir / plot_file(first)}
    report["files"] = {k: p.name for k, p in paths.items()}
    report["files"]["overlays"] = overlays[first]
    report["files"]["targets"] = per_target
    page = _html(report, overlays)
    text = json.dumps(report, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)) + "\n"
    atomic_write(paths["html"], lambda p: p.write_text(page, encoding="utf-8"), force=True)
    atomic_write(paths["json"], lambda p: p.write_text(text, encoding="utf-8"), force=True)
    return paths


def load_float_checkpoint(ckpt: Optional[str | Path], config: Optional[str] = None,
                          pointrend: Optional[bool] = None) -> Any:
    """The float checkpoint to debug (default: the embedded default); a QAT checkpoint is refused."""
    from .checkpoint import load_checkpoint
    from .errors import DataError
    from .zoo import default_checkpoint

    loaded = load_checkpoint(Path(ckpt) if ckpt is not None else default_checkpoint().path, config, pointrend=pointrend)
    if loaded.is_qat:
        raise DataError(f"{loaded.path}: a QAT checkpoint; quant-report debugs post-training quantization of a float "
                        "checkpoint (pass the float checkpoint the QAT started from)")
    return loaded


def run_quant_report(loaded: Any, out_dir: Path, *, targets: str | Sequence[str] = ("ptl",),
                     images: Sequence[str | Path] = (), calibration_images: Sequence[str | Path] = (),
                     height: int = 1024, calibration_height: Optional[int] = None, top_k: int = 8, reverse: bool = True,
                     person_crops: bool = True, equalize: bool = True, log: Callable[[str], None] = lambda m: None,
                     warn: Callable[[str], None] = lambda m: None) -> tuple[dict[str, Any], dict[str, Path]]:
    """The whole report for the int8 paths ``targets`` (:data:`TARGETS`) of ``loaded`` (a float checkpoint): quantize
    it as each exporter does, calibrating on ``calibration_images`` at ``calibration_height`` (default: the
    checkpoint's calibration set, at ``height``), measure it on ``images`` (default: its parity set) at ``height``,
    and write the files into ``out_dir`` (:func:`write_quant_report`). Returns ``(report, files)``."""
    from .samples import calibration_inputs, image_sets_for, parity_inputs

    start = time.perf_counter()
    targets = parse_targets(targets)
    cfg, reference = loaded.config, loaded.build_model()
    measured, calibration_set = image_sets_for(loaded.sha256, images, calibration_images, calibrate=True, warn=warn)
    inputs = list(parity_inputs(list(measured.paths), cfg, height=height, reference=reference, person_crops=person_crops))
    calibration = calibration_inputs(list(calibration_set.paths), cfg, height=calibration_height or height)
    ctx = ReportInputs(loaded, reference, inputs, calibration, equalize=equalize)
    log(f"{len(calibration)} calibration images; measuring {len(inputs)} images; targets {', '.join(targets)}")
    sections, baselines = {}, {}
    for target in targets:
        log(f"{target}:")
        if target == "ptl":
            models = build_ptl_int8(reference, calibration, equalize=equalize, log=log)
            ctx.sources.setdefault(tuple(id(x) for x in calibration), (models.source, models.equalization))
            sections[target], baselines[target], _ = ptl_quant_report(models, inputs, reference, top_k=top_k,
                                                                       reverse=reverse, log=log)
        else:
            report_section = pte_quant_report if target == "pte" else onnx_quant_report
            sections[target], baselines[target] = report_section(ctx, top_k=top_k, reverse=reverse, log=log)
    report: dict[str, Any] = {
        "checkpoint": str(loaded.path), "sha256": loaded.sha256, "variant": cfg.name, "height": height,
        "calibration_height": calibration_height or height, "images": [name for name, _ in inputs],
        "image_sets": {"measured": measured.to_dict(), "calibration": calibration_set.to_dict()},
        "targets": sections,
    }
    report["seconds"] = round(time.perf_counter() - start, 1)
    paths = write_quant_report(out_dir, report, baselines, ctx.reference_logits, inputs, cfg.input.mean, cfg.input.std)
    return report, paths
