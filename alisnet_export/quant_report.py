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
    (:func:`.quantize.pt2e_debug.pte_layer_errors`);
  - ``onnx`` (ONNX Runtime QDQ): ``onnxruntime.quantization.qdq_loss_debug`` activation and weight
    matching between the float and the QDQ model (:func:`.quantize.ort_debug.onnx_layer_errors`);

* for the worst K layers (isolated SQNR): mask IoU and contour distance vs float with that layer alone
  in float, and with only that layer in int8;
* per image, the float model's own uncertainty (:func:`.parity.uncertain_fraction`) with a picture;
* ``report.json``, ``report.html`` with the plots and overlays of the worst images, written atomically.
"""

from __future__ import annotations

import html
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ._io import atomic_write
from .parity import UNCERTAIN_MARGIN, ParityReport, Thresholds, uncertain_fraction, uncertainty_note
from .quantize import debug, eager, mixed_precision, ort_debug, pt2e_debug
from .verify.reports import denormalize, write_overlays
from .visualize import save_png

__all__ = ["PtlQuantModels", "build_ptl_int8", "ptl_quant_report", "uncertainty_picture", "write_quant_report",
           "REPORT_FILES", "TARGETS", "parse_targets", "report_files", "load_float_checkpoint",
           "run_quant_report", "ReportInputs", "onnx_quant_report", "pte_quant_report"]

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
    reference_logits: Optional[list[tuple[str, np.ndarray]]] = None,
) -> tuple[dict[str, Any], ParityReport, list[tuple[str, np.ndarray]]]:
    """The ptl section of the report (a JSON-ready dict), the all-int8 parity report (masks kept), and
    the float logits per image (``reference_logits``: already computed, in ``inputs`` order)."""
    eager.use_qnnpack()
    timing: dict[str, float] = {}
    xs = [torch.from_numpy(x) for _, x in inputs]
    if reference_logits is None:
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


# --------------------------------------------------------------------------- onnx (ONNX Runtime QDQ)

def onnx_quant_report(ctx: ReportInputs, *, top_k: int = 8, reverse: bool = True, per_channel: bool = True,
                      log: Callable[[str], None] = lambda m: None) -> tuple[dict[str, Any], ParityReport]:
    """The onnx section: the float model exported and QDQ-quantized as ``alisnet-export onnx`` does (same
    calibration, equalization and opset), per-layer errors (:func:`.quantize.ort_debug.onnx_layer_errors`), and
    for the worst ``top_k`` layers the model requantized with that layer's Conv nodes excluded
    (``nodes_to_exclude``; the activation ranges of the one calibration re-used), run by ONNX Runtime;
    ``reverse``: also with every other layer's nodes excluded (only that layer int8)."""
    import onnx
    import onnxruntime

    from .exporters.onnx import DEFAULT_OPSET, OnnxExporter, export_float_onnx, quantize_qdq
    from .runtimes.onnx_runner import OrtCallable

    timing: dict[str, float] = {}
    t = time.perf_counter()
    job = ctx.job(ctx.bounds_for(OnnxExporter()), log)
    fitted = job.calibration_inputs()
    source, equalization = ctx.quantization_source(job, fitted)
    with tempfile.TemporaryDirectory(prefix=".alisnet-quant-report-onnx.") as folder:
        work = Path(folder)
        float_path, int8_path = work / "float.onnx", work / "int8.onnx"
        export_float_onnx(job, float_path, opset=DEFAULT_OPSET, model=source)
        nodes_of = ort_debug.conv_nodes_by_layer(onnx.load(str(float_path), load_external_data=False), ctx.reference)
        ranges = work / "calibration.ranges.json"  # calibrated once; every attribution model re-uses the ranges
        counts = quantize_qdq(float_path, int8_path, fitted, per_channel=per_channel, calibration_cache=ranges)
        timing["export_and_quantize_s"] = time.perf_counter() - t
        t = time.perf_counter()
        baseline = ctx.evaluate(OrtCallable(int8_path), "onnx-int8", keep_masks=True)
        timing["int8_model_s"] = time.perf_counter() - t
        s = baseline.summary()
        log(f"onnx all int8: mask IoU mean {s['mean_iou']:.4f} (min {s['min_iou']:.4f}), contour {s['mean_boundary_px']:.2f} px")
        t = time.perf_counter()
        a16_path = work / "a16w8.onnx"  # the same int8 weights and ranges, 16-bit activations
        quantize_qdq(float_path, a16_path, fitted, per_channel=per_channel, calibration_cache=ranges, activation_bits=16)
        a16 = ctx.evaluate(OrtCallable(a16_path), "onnx-a16w8").summary()
        timing["a16w8_s"] = time.perf_counter() - t
        log(f"onnx with 16-bit activations: mask IoU mean {a16['mean_iou']:.4f} (min {a16['min_iou']:.4f}), "
            f"contour {a16['mean_boundary_px']:.2f} px")
        t = time.perf_counter()
        errors = ort_debug.onnx_layer_errors(float_path, int8_path, ctx.reference, [x for _, x in ctx.inputs])
        timing["layer_errors_s"] = time.perf_counter() - t
        worst = debug.worst_layers(errors, top_k)
        log(f"onnx: {len(errors)} quantized conv layers; worst isolated SQNR: "
            + ", ".join(f"{e.name} {e.rank_sqnr_db:.1f} dB" for e in worst[:5]))

        def build(keep_float: Sequence[str]) -> OrtCallable:
            dest = work / "attribution.onnx"
            quantize_qdq(float_path, dest, fitted, per_channel=per_channel, calibration_cache=ranges,
                         nodes_to_exclude=[n for layer in keep_float for n in nodes_of.get(layer, [])])
            return OrtCallable(dest)

        t = time.perf_counter()
        attributions = debug.attribute_float_layers(
            worst, lambda layers, name: ctx.evaluate(build(layers), name), baseline,
            all_layers=[e.name for e in errors if e.keepable] if reverse else None, progress=lambda n: log(f"  attributing {n}"))
        timing["attribution_s"] = time.perf_counter() - t
    head = {"scheme": "ort-static-qdq", "backend": f"onnxruntime {onnxruntime.__version__}",
            "calibration_images": len(fitted), "equalization": equalization, "per_channel": per_channel,
            "opset": DEFAULT_OPSET, "quantization": counts, "reverse_attribution": reverse,
            "a16w8": {k: a16[k] for k in ("mean_iou", "min_iou", "mean_boundary_px")}}
    notes = [
        "Per-layer errors by onnxruntime.quantization.qdq_loss_debug (float ONNX model vs the QDQ model, tensors "
        "matched by name, graph optimizations off so every QuantizeLinear/DequantizeLinear runs as written). "
        "sqnr_db: the layer's requantized output vs the float model's (propagated); local_sqnr_db: the layer's "
        "int8 subgraph run on the float model's input (isolated); weight_sqnr_db: its dequantized int8 weights; "
        "output_qdq_sqnr_db: its output rounding alone. Worst layers are ranked by local_sqnr_db.",
        "Mask IoU and contour px: ONNX Runtime with its default optimizations (QDQ fused into int8 kernels), as "
        "parity runs the artifact; each attribution requantizes the float model with that layer's Conv nodes in "
        "nodes_to_exclude" + (" (and, for 'only this layer int8', every other layer's)" if reverse else
                              "; the reverse attribution (only this layer int8) was skipped (--no-reverse)")
        + ", with the activation ranges of the all-int8 model's calibration (quantize_static's calibration cache).",
        "a16w8: the same QDQ model with 16-bit activations (uint16, opset 21; the same int8 weights and calibration "
        "ranges), run by ONNX Runtime: what 8-bit activation rounding costs. Each layer alone only gains from it, but "
        "the mask can move either way where the float model is unsure. `onnx --activation-bits 16` exports it.",
        "PointRend's point-head layers run on the points each model chose from its own coarse logits; where the "
        "choices differ, their propagated SQNR measures the choice, not the arithmetic.",
    ]
    return _target_section("onnx", baseline, errors, worst, attributions, head=head, notes=notes, timing=timing), baseline


# --------------------------------------------------------------------------- pte (PT2E)

def pte_quant_report(ctx: ReportInputs, *, top_k: int = 8, reverse: bool = True, per_channel: bool = True,
                     log: Callable[[str], None] = lambda m: None) -> tuple[dict[str, Any], ParityReport]:
    """The pte section: backbone + head PT2E-quantized as ``alisnet-export pte`` does (same calibration,
    equalization, example input and size bounds; PointRend float), run as the converted PT2E module in PyTorch
    (not lowered to ExecuTorch); per-layer errors (:func:`.quantize.pt2e_debug.pte_layer_errors`); for the worst
    ``top_k`` layers the model converted with that layer left unannotated (:class:`.exporters.pte.Pt2eCalibration`:
    one calibration for all of them), and with ``reverse`` with every other conv layer unannotated (only that
    layer int8)."""
    from .exporters.pte import PteExporter, Pt2eCalibration, export_coarse, export_example, quantize_coarse_pt2e
    from .quantize.mixed_precision import float_layer_names

    timing: dict[str, float] = {}
    t = time.perf_counter()
    bounds = ctx.bounds_for(PteExporter())
    job = ctx.job(bounds, log)
    fitted = job.calibration_inputs()
    source, equalization = ctx.quantization_source(job, fitted)
    example = export_example(bounds, job.example_hw)
    float_graph = export_coarse(source, example, bounds)
    # Pt2eCalibration prepares copies of the graph and the debugger logs a copy: float_graph stays as exported
    calibration = Pt2eCalibration(float_graph, fitted, per_channel=per_channel)

    def build(keep_float: Sequence[str]) -> nn.Module:  # calibrated once above, not per attribution model
        return quantize_coarse_pt2e(source, example, bounds, fitted, keep_float=tuple(keep_float),
                                    calibration=calibration)

    model = build(())
    timing["quantize_s"] = time.perf_counter() - t
    t = time.perf_counter()
    baseline = ctx.evaluate(model, "pte-int8", keep_masks=True)
    timing["int8_model_s"] = time.perf_counter() - t
    s = baseline.summary()
    log(f"pte all int8: mask IoU mean {s['mean_iou']:.4f} (min {s['min_iou']:.4f}), contour {s['mean_boundary_px']:.2f} px")
    t = time.perf_counter()
    keepable = [n for n in float_layer_names(ctx.reference) if not n.startswith("point_rend.")]
    errors = pt2e_debug.pte_layer_errors(float_graph, model.coarse, ctx.xs, keepable=keepable)
    timing["layer_errors_s"] = time.perf_counter() - t
    worst = debug.worst_layers(errors, top_k)
    log(f"pte: {len(errors)} quantized conv layers; worst isolated SQNR: "
        + ", ".join(f"{e.name} {e.rank_sqnr_db:.1f} dB" for e in worst[:5]))
    t = time.perf_counter()
    attributions = debug.attribute_float_layers(
        worst, lambda layers, name: ctx.evaluate(build(layers), name), baseline,
        all_layers=[e.name for e in errors if e.keepable] if reverse else None, progress=lambda n: log(f"  attributing {n}"))
    timing["attribution_s"] = time.perf_counter() - t
    head = {"scheme": "pt2e-ptq", "backend": "xnnpack quantizer (converted PT2E module run in PyTorch, not lowered)",
            "calibration_images": len(fitted), "equalization": equalization, "per_channel": per_channel,
            "quantized_modules": ["backbone", "head"], "reverse_attribution": reverse,
            "attribution_recalibrated": calibration.recalibrated}
    notes = [
        "Per-layer errors by torchao's PT2E numeric debugger (prepare_for_propagation_comparison, "
        "extract_results_from_loggers, compare_results) between the exported float coarse graph and the converted "
        "one; debug handles matched by node name (two exports of the same model), a conv's BatchNorm folded as "
        "PT2E folds it. sqnr_db: the layer's dequantized int8 output vs the float model's (propagated); "
        "local_sqnr_db: the converted graph with every quantize node fed the float model's value (isolated). "
        "Worst layers are ranked by local_sqnr_db.",
        "PointRend stays float in a .pte; only backbone and head convs are listed.",
        "Attribution models re-use the all-int8 model's calibration: each re-prepared graph's observers take the "
        "calibrated state of the observer that watched the same tensor (calibration observers only watch, so the "
        "values are the float model's whatever is annotated); attribution_recalibrated counts the models that "
        "had an observer without such a twin and were calibrated again.",
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
             f"{'PASSED' if s['passed'] else 'FAILED'}</p>"]
    if "a16w8" in sec:
        a = sec["a16w8"]
        parts.append(f"<p>with 16-bit activations (same int8 weights): mask IoU mean {a['mean_iou']:.4f} (min "
                     f"{a['min_iou']:.4f}), contour {a['mean_boundary_px']:.2f} px</p>")
    parts.append(f"<img class='wide' src='{e(plot)}'>")
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
                                                                       reverse=reverse, log=log,
                                                                       reference_logits=ctx.reference_logits)
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
