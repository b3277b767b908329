"""``.pte``: an ExecuTorch program with the XNNPACK delegate (dynamic height and width).

float32: ``torch.export`` with H and W as multiples of 32 within the size bounds, lowered with the
XNNPACK partitioner. int8 (default): PT2E post-training quantization (XNNPACK quantizer) of the
backbone + Semantic-FPN head only (``forward_coarse``, exported and quantized on its own), put back in
front of the float PointRend, then exported and lowered the same way. ``PteOptions(bundled_program=True)``
(``--bpte``) also writes ``NAME.bpte``, an ExecuTorch BundledProgram with the golden input and the
program's own output on it, verified here with the ExecuTorch runtime before it is written.

Why the coarse part is quantized alone, why shapes stay dynamic, PointRend's smallest input
(:func:`alisnet_export.modeling.point_rend.min_input_pixels`), memory planning, the ``.bpte``'s
expected outputs and tolerances, and why QAT with PT2E is not offered: docs/design.md section 4.4
(and 4.3 for what ``torch.export`` needs from PointRend).
"""

from __future__ import annotations

import hashlib
import operator
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ExportError
from ..modeling.alisnet import ALiSNet
from ..modeling.point_rend import min_input_pixels
from ..runtimes.executorch_runner import executorch_version
from .base import ArtifactInfo, Exporter, ExportJob, Int8Options, SizeBounds

__all__ = ["PteExporter", "PteOptions", "min_pixels_for", "dynamic_shapes", "quantize_coarse_pt2e", "Pt2eCalibration", "weight_bytes", "export_coarse", "export_example", "delegation_summary", "program_summary",
           "bundled_program_bytes", "verify_bundled_program", "BUNDLED_SUFFIX"]

BUNDLED_SUFFIX = ".bpte"
#: the ExecuTorch method the bundled test case exercises
_METHOD = "forward"

#: the float portable-kernel helpers that are not operators a selective build must register
_NOT_KERNELS = {"getitem", "sym_size", "sym_size.int", "mul", "add", "sub", "floordiv"}


#: PointRend's smallest input (docs/design.md section 4.3); the old name, kept for callers
min_pixels_for = min_input_pixels


def dynamic_shapes(bounds: SizeBounds) -> dict[str, dict[int, Any]]:
    """H and W as ``32 * Dim`` within ``bounds`` (multiples of 32 only)."""
    return bounds.dynamic_shapes()


class _Coarse(nn.Module):
    """``forward_coarse`` as a module: the part of ALiSNet PT2E quantizes."""

    def __init__(self, model: ALiSNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.forward_coarse(x)


class _QuantizedCoarseModel(nn.Module):
    """An int8 PT2E coarse graph followed by the float model's own PointRend tail."""

    forward_refine = ALiSNet.forward_refine  # the float model's code, not a copy
    _to_input_size = ALiSNet._to_input_size

    def __init__(self, coarse: nn.Module, model: ALiSNet) -> None:
        super().__init__()
        self.coarse = coarse
        self.point_rend = model.point_rend
        self.common_stride = model.common_stride

    def forward(self, x: Tensor) -> Tensor:
        coarse_logits, features = self.coarse(x)
        return self.forward_refine(coarse_logits, features, x.shape[-2], x.shape[-1])


def _export(module: nn.Module, example: Tensor, bounds: SizeBounds, what: str):
    try:
        return torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes(bounds), strict=False)
    except Exception as exc:
        raise ExportError(f"torch.export of the {what} failed: {str(exc).splitlines()[0]}") from exc


def export_example(bounds: SizeBounds, hw: tuple[int, int]) -> Tensor:
    """The example input ``torch.export`` traces with: ``hw`` moved inside ``bounds`` (export specialises
    nothing on it, but must accept it), random with a fixed seed."""
    h, w = hw
    h = min(max(h, bounds.min_hw[0]), bounds.max_hw[0])
    w = min(max(w, bounds.min_hw[1]), bounds.max_hw[1])
    while h * w < bounds.min_pixels and (h < bounds.max_hw[0] or w < bounds.max_hw[1]):
        h, w = min(h + 32, bounds.max_hw[0]), min(w + 32, bounds.max_hw[1])
    bounds.check(h, w, what="export example input")
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))


def export_coarse(model: ALiSNet, example: Tensor, bounds: SizeBounds) -> nn.Module:
    """The float backbone + head (``forward_coarse``) as the exported graph module PT2E quantizes (node names
    are the same on every call: quant-report compares the float graph with the converted one by them)."""
    return _export(_Coarse(model), example, bounds, "coarse model (backbone + head)").module()


def _without_layers(quantizer: Any, layers: Sequence[str], prefix: str) -> Any:
    """``quantizer`` whose annotations skip every node inside the modules ``layers`` (paths under ``prefix``
    in the exported graph's ``nn_module_stack``): those layers stay float, their neighbours' outputs are
    dequantized before them. XNNPACKQuantizer.set_module_name does not take ``None`` in this release."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    paths = tuple(f"{prefix}{layer}" for layer in layers)

    class _SkipLayers(Quantizer):
        def annotate(self, graph_module):
            graph_module = quantizer.annotate(graph_module)
            for node in graph_module.graph.nodes:
                stack = [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()]
                if any(p == path or p.startswith(path + ".") for p in stack for path in paths):
                    node.meta.pop("quantization_annotation", None)
            return graph_module

        def validate(self, graph_module) -> None:
            quantizer.validate(graph_module)

        def transform_for_annotation(self, graph_module):
            return quantizer.transform_for_annotation(graph_module)

    return _SkipLayers()


def _observer_groups(prepared: nn.Module) -> dict[str, tuple[tuple[str, ...], tuple[Any, ...]]]:
    """Each observer of a prepared PT2E graph: its submodule name -> (the tensors it watches, by node name; its
    settings). Two observers with the same key measure the same thing."""
    from torchao.quantization.pt2e.observer import ObserverBase

    watched: dict[str, set[str]] = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and isinstance(node.args[0], torch.fx.Node):
            watched.setdefault(node.target, set()).add(node.args[0].name)
    out = {}
    for target, inputs in watched.items():
        m = getattr(prepared, target, None)
        if isinstance(m, ObserverBase):
            settings = tuple(str(getattr(m, a, None)) for a in ("dtype", "qscheme", "ch_axis", "quant_min", "quant_max",
                                                               "eps"))
            out[target] = (tuple(sorted(inputs)), (type(m).__name__, *settings))
    return out


class Pt2eCalibration:
    """Backbone + head (an exported graph, :func:`export_coarse`) PT2E-calibrated once with the XNNPACK quantizer,
    every layer annotated; :meth:`quantize` converts it with any ``keep_float`` layers left unannotated without
    running the calibration images again.

    While calibrating, observers only watch: each sees the float model's tensor whatever else is annotated, so a
    layer left float changes which tensors are observed, not their values. Each observer of a graph prepared for
    other ``keep_float`` layers takes a copy of the calibrated observer that watched the same tensors with the same
    settings; if one has no such twin (a sharing group the all-int8 graph did not have), that graph is calibrated
    on the images after all (``recalibrated`` counts those). ``--keep-float auto`` and ``quant-report``'s
    attribution build many such graphs."""

    def __init__(self, graph: nn.Module, inputs: Sequence[Tensor], *, per_channel: bool = True) -> None:
        if not inputs:
            raise ExportError("int8 .pte: calibration needs at least one input image")
        self.graph, self.inputs, self.per_channel = graph, list(inputs), per_channel
        self.recalibrated = 0
        prepared = self._prepare(())
        self._calibrate(prepared)
        groups = _observer_groups(prepared)
        self.observers = {key: getattr(prepared, target) for target, key in groups.items()}

    def _prepare(self, keep_float: Sequence[str]) -> nn.Module:
        import copy

        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=self.per_channel))
        if keep_float:
            quantizer = _without_layers(quantizer, keep_float, prefix="model.")
        prepared = prepare_pt2e(copy.deepcopy(self.graph), quantizer)  # prepare rewrites the graph it gets
        move_exported_model_to_eval(prepared)  # exported models refuse .eval()
        return prepared

    def _calibrate(self, prepared: nn.Module) -> None:
        with torch.no_grad():
            for x in self.inputs:
                prepared(x)

    def quantize(self, keep_float: Sequence[str] = ()) -> nn.Module:
        """The converted int8 graph with ``keep_float`` layers float."""
        import copy

        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        prepared = self._prepare(tuple(keep_float))
        groups = _observer_groups(prepared)
        if all(key in self.observers for key in groups.values()):
            for target, key in groups.items():
                setattr(prepared, target, copy.deepcopy(self.observers[key]))
        else:
            self.recalibrated += 1
            self._calibrate(prepared)
        converted = convert_pt2e(prepared)
        move_exported_model_to_eval(converted)
        return converted


def quantize_coarse_pt2e(model: ALiSNet, example: Tensor, bounds: SizeBounds, inputs: list[Tensor], *,
                         per_channel: bool = True, keep_float: Sequence[str] = (),
                         calibration: Optional[Pt2eCalibration] = None) -> nn.Module:
    """PT2E PTQ (XNNPACK quantizer) of backbone + head, calibrated on ``inputs``; PointRend stays float, and so
    do the ``keep_float`` layers (left unannotated). ``calibration``: one already made of ``model`` on ``inputs``
    (:class:`Pt2eCalibration`), re-used instead of calibrating again."""
    if calibration is None:
        if not inputs:
            raise ExportError("int8 .pte: calibration needs at least one input image")
        calibration = Pt2eCalibration(export_coarse(model, example, bounds), inputs, per_channel=per_channel)
    return _QuantizedCoarseModel(calibration.quantize(keep_float), model)


def weight_bytes(model: nn.Module) -> int:
    """The bytes a .pte of ``model`` (a :class:`_QuantizedCoarseModel`) stores as constants: what the converted
    coarse graph reads (its ``get_attr`` tensors: int8 weights at 1 byte each, float ones at 4, scales, biases;
    not the float parameters convert leaves unused in the module) and PointRend's float parameters and buffers.
    ``--keep-float auto`` compares layer sets with it without lowering each."""
    graph_module = model.coarse
    used: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.target not in used:
            value: Any = graph_module
            for part in node.target.split("."):
                value = getattr(value, part)
            used[node.target] = value.numel() * value.element_size() if isinstance(value, Tensor) else 0
    tail = [*model.point_rend.parameters(), *model.point_rend.buffers()]
    return sum(used.values()) + sum(t.numel() * t.element_size() for t in tail)


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", None) or str(target)
    schema = getattr(target, "_schema", None)
    if schema is not None:  # aten / edge ops: "aten::topk.default" style
        overload = schema.overload_name or "default"
        name = f"{schema.name}.{overload}"
    return name


def delegation_summary(edge_manager) -> dict[str, Any]:
    """Which ops XNNPACK runs (inside delegate blobs) and which run on portable kernels, by op name.

    Call it on the lowered edge program *before* ``to_executorch`` (which rewrites the graph to
    out-variants and memory allocations)."""
    graph_module = edge_manager.exported_program().graph_module
    delegated: Counter[str] = Counter()
    portable: Counter[str] = Counter()
    subgraphs = 0
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.target.startswith("lowered_module_"):
            subgraphs += 1
            lowered = getattr(graph_module, node.target)
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function" and inner.target is not operator.getitem:
                    delegated[_op_name(inner.target)] += 1
        elif node.op == "call_function":
            name = _op_name(node.target)
            if name == "executorch_call_delegate" or node.target is operator.getitem or name in _NOT_KERNELS:
                continue
            if "sym_size" in name or node.target.__module__ == "_operator":
                continue
            portable[name] += 1
    return {
        "delegated_subgraphs": subgraphs,
        "delegated_ops": dict(sorted(delegated.items())),
        "portable_ops": dict(sorted(portable.items())),
    }


def program_summary(program) -> dict[str, Any]:
    """Delegates, kernels and planned memory of the serialised program's ``forward``."""
    plan = program.execution_plan[0]
    return {
        "delegates": sorted({d.id for d in plan.delegates}),
        # the kernels the program calls outside the delegate: what a selective-build runtime must register
        "kernels": sorted({f"{op.name}.{op.overload}" for op in plan.operators}),
        "planned_memory_bytes": int(sum(plan.non_const_buffer_sizes)),
    }


def bundled_program_bytes(pte_path: Path, cases: list[tuple[Any, Any]]) -> bytes:
    """A serialized BundledProgram of the program in ``pte_path`` with ``(input, expected output)`` cases
    (arrays or tensors) for its ``forward`` method."""
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.core import BundledProgram
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    tests = [MethodTestCase(inputs=[torch.as_tensor(x)], expected_outputs=[torch.as_tensor(y)]) for x, y in cases]
    try:
        bundle = BundledProgram(None, [MethodTestSuite(method_name=_METHOD, test_cases=tests)], pte_file_path=str(pte_path))
        return serialize_from_bundled_program_to_flatbuffer(bundle)
    except Exception as exc:
        raise ExportError(f"building the ExecuTorch BundledProgram failed: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc


def verify_bundled_program(data: bytes, *, cases: int, atol: float, rtol: float = 0.0) -> None:
    """Load a serialized BundledProgram with the ExecuTorch runtime and check each bundled case's
    output against its expected output (what ExecuTorch's on-device verification does); raise
    :class:`ExportError` naming the case that does not match."""
    from executorch.extension.pybindings import portable_lib

    try:
        bundle = portable_lib._load_bundled_program_from_buffer(data)
    except Exception as exc:
        raise ExportError(f"the ExecuTorch runtime cannot load the BundledProgram: {exc}") from exc
    for i in range(cases):
        try:
            bundle.verify_result_with_bundled_expected_output(_METHOD, i, rtol, atol)
        except Exception as exc:
            raise ExportError(f"BundledProgram test case {i} does not reproduce its expected output here "
                              f"(atol {atol:g}): {exc}") from exc


@dataclass(frozen=True)
class PteOptions(Int8Options):
    """``.pte`` export options (the ``pte`` command's flags). ``keep_float`` layers (backbone/head) are left
    unannotated by the PT2E quantizer."""

    #: also write NAME.bpte, an ExecuTorch BundledProgram with the golden input and this program's output
    bundled_program: bool = False


class PteExporter(Exporter):
    format = "pte"
    options_class = PteOptions
    # ExecuTorch plans memory for the largest input: 1024 x 1024 keeps it under ~100 MB
    default_bounds = SizeBounds(min_hw=(64, 64), max_hw=(1024, 1024), min_pixels=0)
    #: the BundledProgram's own check here: same runtime, same machine, same input
    BUNDLED_SELF_ATOL = 1e-5

    @property
    def sidecar_suffixes(self) -> tuple[str, ...]:
        return (BUNDLED_SUFFIX,) if self.options.bundled_program else ()

    def runtime_sidecars(self, artifact: Path, job: ExportJob, golden_input: Any, golden_output: Any,
                         info: ArtifactInfo) -> dict[str, bytes]:
        if not self.options.bundled_program:
            return {}
        job.log("BundledProgram: bundling the golden input and this program's output on it; verifying it here")
        data = bundled_program_bytes(artifact, [(golden_input, golden_output)])
        verify_bundled_program(data, cases=1, atol=self.BUNDLED_SELF_ATOL)
        info.runtime["bundled_program"] = {
            "file": f"{artifact.stem}{BUNDLED_SUFFIX}",  # the artifact has its final name already
            "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data),
            "method": _METHOD, "test_cases": 1, "inputs": [list(golden_input.shape)],
            "expected": "this program's own output on the golden input (ExecuTorch runtime, exporting machine)",
            "verified_here_atol": self.BUNDLED_SELF_ATOL,
        }
        return {BUNDLED_SUFFIX: data}

    def bounds_for(self, config: ModelConfig, requested: Optional[SizeBounds] = None) -> SizeBounds:
        bounds = requested or self.default_bounds
        return SizeBounds(bounds.min_hw, bounds.max_hw, max(bounds.min_pixels, min_input_pixels(config)))

    @staticmethod
    def _coarse_layers(job: ExportJob) -> list[str]:
        """The layers ``keep_float`` may name: backbone/head convs (PointRend is float in a .pte anyway)."""
        from ..quantize.mixed_precision import float_layer_names

        return [n for n in float_layer_names(job.reference) if not n.startswith("point_rend.")]

    def _named_keep_float(self, job: ExportJob) -> tuple[tuple[str, ...], Optional[dict[str, Any]]]:
        """The named ``keep_float`` layers, checked before any calibration, and their manifest record (none named:
        ``((), None)``)."""
        from ..quantize.keep_float import manual_record
        from ..quantize.mixed_precision import check_layer_names

        spec = self.options.keep_float
        if spec is None or spec.auto:
            return (), None
        check_layer_names(spec.layers, self._coarse_layers(job))
        job.log(f"keeping {len(spec.layers)} layer(s) float (--keep-float): {', '.join(spec.layers)}")
        return spec.layers, manual_record(spec.layers)

    def _auto_keep_float(self, job: ExportJob, calibration: Pt2eCalibration, source: nn.Module,
                         inputs: Sequence[Tensor]) -> tuple[nn.Module, dict[str, Any]]:
        """``keep_float`` auto: the chosen model and the manifest's record. Layers found on the calibration images
        (:func:`..quantize.keep_float.auto_search`; isolated SQNR by :func:`..quantize.pt2e_debug.pte_layer_errors`,
        sizes by :func:`weight_bytes`), every candidate converted from ``calibration``."""
        from ..quantize import debug
        from ..quantize.keep_float import RANKING_IMAGES, auto_search, calibration_logits
        from ..quantize.pt2e_debug import pte_layer_errors

        spec = self.options.keep_float
        logits = calibration_logits(job.reference, inputs)
        models: dict[tuple[str, ...], nn.Module] = {}

        def model_for(layers: Sequence[str]) -> nn.Module:
            key = tuple(layers)
            if key not in models:
                models[key] = _QuantizedCoarseModel(calibration.quantize(key), source)
            return models[key]

        result, record = auto_search(
            lambda layers: debug.evaluate_model(model_for(layers), logits, inputs, name="+".join(layers) or "int8",
                                                thresholds=job.thresholds),
            lambda layers: weight_bytes(model_for(layers)),
            lambda: pte_layer_errors(calibration.graph, model_for(()).coarse, inputs[:RANKING_IMAGES],
                                     keepable=self._coarse_layers(job)),
            variant=job.loaded.config.name, max_size=spec.max_size, candidates=spec.candidates,
            ranking_images=min(len(inputs), RANKING_IMAGES), log=job.log)
        record["size_bytes_are"] = ("the program's weights and constants (weight_bytes), measured per step without "
                                    "lowering; the .pte's own size is the artifact's")
        job.log(f"--keep-float auto: {record['stop_reason']}")
        return model_for(result.final.float_layers), record

    def export(self, job: ExportJob, dest: Path) -> ArtifactInfo:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        self.check_precision(job.precision)
        bounds = job.bounds
        example = export_example(bounds, job.example_hw)
        per_channel = self.options.per_channel
        quantization: dict[str, Any]
        if job.precision == "int8":
            keep_float, keep_float_record = self._named_keep_float(job)
            inputs = job.calibration_inputs()
            job.log(f"PT2E post-training calibration (XNNPACK quantizer) of backbone + head on {len(inputs)} images")
            source, equalization = job.quantization_source(inputs, equalize=self.options.equalize)
            calibration = Pt2eCalibration(export_coarse(source, example, bounds), inputs, per_channel=per_channel)
            model: nn.Module
            if self.options.keep_float is not None and self.options.keep_float.auto:
                model, keep_float_record = self._auto_keep_float(job, calibration, source, inputs)
            else:
                model = quantize_coarse_pt2e(source, example, bounds, inputs, keep_float=keep_float,
                                             calibration=calibration)
            quantization = {
                "scheme": "pt2e-ptq", "backend": "xnnpack", "per_channel": per_channel, "equalization": equalization,
                "calibration": {"images": len(inputs), **job.calibration_info},
                **({"keep_float": keep_float_record} if keep_float_record else {}),
                "quantized_modules": ["backbone", "head"],
                "float_modules": ["point_rend (point MLP in fp32 on XNNPACK; upsample, topk, grid_sample, scatter "
                                  "on portable kernels)"],
            }
        else:
            model = job.reference.eval()
            quantization = {"scheme": "none"}
        job.log(f"torch.export with dynamic H x W in {bounds.min_hw}..{bounds.max_hw} (multiples of 32), "
                "lowering to XNNPACK")
        exported = _export(model, example, bounds, f"{job.precision} model")
        try:
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            summary = delegation_summary(edge)
            et_program = edge.to_executorch()
        except Exception as exc:
            raise ExportError(f"ExecuTorch lowering failed: {str(exc).splitlines()[0]}") from exc
        with open(dest, "wb") as f:
            et_program.write_to_file(f)
        summary.update(program_summary(et_program.executorch_program))
        runtime = {
            "kind": "executorch",
            "executorch": executorch_version(),
            "dynamic_shapes": {"height": {"min": bounds.min_hw[0], "max": bounds.max_hw[0], "multiple_of": 32},
                               "width": {"min": bounds.min_hw[1], "max": bounds.max_hw[1], "multiple_of": 32},
                               "min_pixels": bounds.min_pixels},
            **summary,
        }
        return ArtifactInfo(job.precision, quantization, runtime)
