"""``.onnx``: the float model through the dynamo ONNX exporter, optionally int8 (ONNX Runtime QDQ).

float32: ``torch.onnx.export(..., dynamo=True)`` at opset >= 18 with H and W dynamic (multiples of 32
within the artifact's size bounds), input ``image`` and output ``logits``, the export's metadata JSON
in the model's ``metadata_props``.

int8 (default, like ``ptl``): ONNX Runtime static quantization to QDQ of the Conv nodes and the ReLUs
after them (:data:`QUANT_OP_TYPES`), activations calibrated on ``job.calibration_inputs()``; the point
geometry stays float. The quantization tools run inside a private temporary folder that is removed
afterwards, so nothing is left next to the artifact or in the working directory.

``ort_format=True`` (``--ort``) additionally converts the result to the ORT format for ONNX Runtime
Mobile / minimal builds; the artifact is then the ``.ort`` file (``OnnxOptions(ort_format=True)``, ``onnx --ort``).

Why ReLU is listed, why the point geometry stays float, ``quant_pre_process``'s
``skip_symbolic_shape=True``, and what PointRend's export path avoids for this exporter:
docs/design.md sections 4.5 and 4.3.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .._io import private_workdir
from ..errors import EnvironmentProblem, ExportError
from ..manifest import INPUT_NAME, OUTPUT_NAME
from ..modeling.point_rend import min_input_pixels
from .base import ArtifactInfo, Exporter, ExportJob, Int8Options, SizeBounds

__all__ = ["OnnxExporter", "OnnxOptions", "DEFAULT_OPSET", "MIN_OPSET", "QUANT_OP_TYPES", "pointrend_min_pixels",
           "export_float_onnx", "example_size", "min_ort_version", "prune_opset_imports", "quantize_qdq", "ACTIVATION_TYPES", "OPSET_FOR_16_BIT", "convert_to_ort", "metadata_props"]

DEFAULT_OPSET = 18
MIN_OPSET = 18
#: the op types quantized (Relu: folded into its Conv's output range); quantizing the point-coordinate
#: maths too costs ~0.08 mask IoU
QUANT_OP_TYPES = ("Conv", "Relu")
#: first ONNX Runtime release implementing each default-domain opset / reading each IR version
#: (ORT's version matrix: 1.14 = ONNX 1.13, 1.15 = ONNX 1.14, 1.17 = ONNX 1.15, 1.18 = ONNX 1.16)
ORT_MIN_VERSION_FOR_OPSET = {18: "1.14", 19: "1.15", 20: "1.17", 21: "1.18"}
ORT_MIN_VERSION_FOR_IR = {8: "1.14", 9: "1.15", 10: "1.18"}
#: key of the export's metadata JSON in ``ModelProto.metadata_props``
METADATA_KEY = "alisnet/metadata.json"


#: PointRend's smallest input (docs/design.md section 4.3); the old name, kept for callers
pointrend_min_pixels = min_input_pixels


def example_size(bounds: SizeBounds, preferred: tuple[int, int] = (256, 192)) -> tuple[int, int]:
    """An example input size for tracing inside ``bounds`` (the preferred one when it fits)."""
    h = min(max(preferred[0], bounds.min_hw[0]), bounds.max_hw[0])
    w = min(max(preferred[1], bounds.min_hw[1]), bounds.max_hw[1])
    while h * w < bounds.min_pixels and (h < bounds.max_hw[0] or w < bounds.max_hw[1]):
        if h < bounds.max_hw[0]:
            h += 32
        if h * w < bounds.min_pixels and w < bounds.max_hw[1]:
            w += 32
    bounds.check(h, w, what="the export example input")  # bounds that admit no size at all
    return h, w


def min_ort_version(model, *, ort_format: bool) -> str:
    """The oldest ONNX Runtime that reads ``model``: by its opset and IR version (an ``.ort`` file is only
    promised to load in the release that wrote it, or newer)."""
    import onnxruntime

    if ort_format:
        return onnxruntime.__version__
    opset = next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), None)
    versions = [ORT_MIN_VERSION_FOR_OPSET.get(opset), ORT_MIN_VERSION_FOR_IR.get(model.ir_version)]
    if None in versions:  # newer than the table: only the version that tested it is known to work
        return onnxruntime.__version__
    return max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def prune_opset_imports(model) -> list[str]:
    """Drop opset imports of domains no node uses (ORT's optimiser declares all of its own); returns them."""
    used = {n.domain for n in model.graph.node} | {""}
    used |= {f.domain for f in model.functions} | {n.domain for f in model.functions for n in f.node}
    dropped = [imp.domain for imp in model.opset_import if (imp.domain or "") not in used and imp.domain != "ai.onnx"]
    keep = [imp for imp in model.opset_import if imp.domain not in dropped]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return dropped


def metadata_props(metadata: dict[str, Any]) -> dict[str, str]:
    """What goes into ``metadata_props``: the whole metadata JSON plus a few flat keys apps read directly."""
    props = {METADATA_KEY: json.dumps(metadata, indent=1, sort_keys=True)}
    if "variant" in metadata:
        props["alisnet/variant"] = str(metadata["variant"])
    norm = metadata.get("input", {}).get("normalization")
    if norm:
        props["alisnet/normalization"] = json.dumps({"mean": norm["mean"], "std": norm["std"], "formula": norm["formula"]})
    return props


def _set_metadata(model, props: dict[str, str]) -> None:
    import onnx

    existing = {p.key for p in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            for p in model.metadata_props:
                if p.key == key:
                    p.value = value
        else:
            model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def export_float_onnx(job: ExportJob, dest: Path, *, opset: int, model: Any = None) -> None:
    """The float reference (or ``model``, the same function re-parametrised) as ONNX with dynamic H and W
    (multiples of 32 within ``job.bounds``)."""
    import dataclasses

    import torch

    bounds = job.bounds
    example = dataclasses.replace(job, example_hw=example_size(bounds, job.example_hw)).example_input()
    model = (job.reference if model is None else model).eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=bounds.dynamic_shapes(("h_blocks", "w_blocks")),
                optimize=True, verbose=False, report=False,
            )
    except Exception as exc:  # torch.export / onnxscript raise many types; keep the first lines
        first = "\n".join(str(exc).strip().splitlines()[:3])
        raise ExportError(f"torch.onnx.export (dynamo, opset {opset}) failed: {first}") from exc
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    program.save(str(dest))


class _Calibration:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over preprocessed tensors."""

    def __init__(self, inputs: list, input_name: str) -> None:
        self._inputs = [np.ascontiguousarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32) for x in inputs]
        self._name = input_name
        self._next = 0

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self._next >= len(self._inputs):
            return None
        x = self._inputs[self._next]
        self._next += 1
        return {self._name: x}

    def rewind(self) -> None:
        self._next = 0


def _reader(inputs: list, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Calibration, CalibrationDataReader):
        pass

    return Reader(inputs, input_name)


#: ``activation_bits`` -> the activations' QDQ type (weights are int8 either way)
ACTIVATION_TYPES = {8: "uint8", 16: "uint16"}
#: 16-bit QuantizeLinear / DequantizeLinear are in the default domain from this opset (ONNX Runtime raises a
#: model to it when asked for 16-bit activations)
OPSET_FOR_16_BIT = 21


def check_activation_bits(bits: int) -> None:
    """An :class:`ExportError` unless ``bits`` is one of :data:`ACTIVATION_TYPES`."""
    if bits not in ACTIVATION_TYPES:
        raise ExportError(f"activation_bits {bits}: choose from {', '.join(map(str, ACTIVATION_TYPES))}")


def quantize_qdq(float_path: Path, dest: Path, inputs: list, *, per_channel: bool = True,
                 nodes_to_exclude: Sequence[str] = (), calibration_cache: Optional[Path] = None,
                 activation_bits: int = 8) -> dict[str, Any]:
    """Static QDQ quantization of the Conv nodes of ``float_path`` but ``nodes_to_exclude`` (they stay float:
    mixed precision), int8 weights, ``activation_bits`` activations (:data:`ACTIVATION_TYPES`; 16 raises the
    model to :data:`OPSET_FOR_16_BIT`); returns what was quantized.

    ``calibration_cache``: a file for the activation ranges (``quantize_static``'s ``calibration_cache_path``):
    written by the first call, read instead of calibrating by the next ones. The ranges are the float model's
    tensors on ``inputs``, whatever is excluded, so every mixed-precision variant of one float model and one
    image set may share the file (``--keep-float auto`` and ``quant-report``'s attribution do)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..quantize.ort_debug import quiet_root_logger

    if not inputs:
        raise ExportError("int8 ONNX needs calibration images; none were given")
    check_activation_bits(activation_bits)
    float_path, dest = Path(float_path).resolve(), Path(dest).resolve()
    cache = str(Path(calibration_cache).resolve()) if calibration_cache is not None else None  # before the chdir
    with private_workdir(".alisnet-ort-quant.") as work:
        prepared = work / "prepared.onnx"
        try:  # stdout carries the --json result: keep the tools' prints off it
            with contextlib.redirect_stdout(sys.stderr):
                quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
            with contextlib.redirect_stdout(sys.stderr), quiet_root_logger():  # 16 bits: "opset raised to 21"
                quantize_static(
                    str(prepared), str(work / "quantized.onnx"), _reader(inputs, INPUT_NAME),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OP_TYPES), per_channel=per_channel,
                    activation_type=QuantType.QUInt16 if activation_bits == 16 else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(nodes_to_exclude),
                    calibration_cache_path=cache,
                )
        except Exception as exc:
            raise ExportError(f"ONNX Runtime static quantization failed: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
        shutil.move(str(work / "quantized.onnx"), str(dest))
    model = onnx.load(str(dest), load_external_data=False)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    produced_by = {o: n for n in model.graph.node for o in n.output}
    quantized = [n.name for n in convs if n.input and produced_by.get(n.input[0]) is not None
                 and produced_by[n.input[0]].op_type == "DequantizeLinear"]
    return {"conv_nodes": len(convs), "quantized_conv_nodes": len(quantized),
            "qdq_pairs": sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear"),
            "activation_type": ACTIVATION_TYPES[activation_bits]}


#: the ORT converter's operator list for a minimal ONNX Runtime build, written next to an .ort artifact
REQUIRED_OPERATORS_SUFFIX = ".required_operators.config"
#: what the ORT converter optimises for: phones are ARM (allows int8 QDQ fusions; no x86-only NCHWc layout)
ORT_TARGET_PLATFORM = "arm"


def convert_to_ort(onnx_path: Path, dest: Path) -> str:
    """Convert ``onnx_path`` to the ORT format (ONNX Runtime Mobile and minimal builds).

    Graph optimisations are applied once at conversion ("Fixed" style) for :data:`ORT_TARGET_PLATFORM`;
    the result still runs on x86 (parity runs it here), H and W stay dynamic. Returns the operator
    config for a minimal ONNX Runtime build (``--include_ops_by_config``)."""
    try:
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    except ImportError as exc:  # pragma: no cover - the pinned onnxruntime ships it
        raise EnvironmentProblem(f"onnxruntime.tools.convert_onnx_models_to_ort is unavailable: {exc}") from None
    onnx_path, dest = Path(onnx_path).resolve(), Path(dest).resolve()  # before the chdir
    with private_workdir(".alisnet-ort-convert.") as work:
        source = work / "model.onnx"
        shutil.copyfile(onnx_path, source)
        try:
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # it prints progress
                convert_onnx_models_to_ort(source, output_dir=work / "out", optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform=ORT_TARGET_PLATFORM)
        except Exception as exc:
            raise ExportError(f"converting to the ORT format failed: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
        produced = sorted((work / "out").glob("*.ort"))
        if len(produced) != 1:
            raise ExportError(f"the ORT converter wrote {len(produced)} .ort files, expected 1")
        configs = sorted((work / "out").glob("*.config"))
        shutil.move(str(produced[0]), str(dest))
        return configs[0].read_text(encoding="utf-8") if configs else ""


@dataclass(frozen=True)
class OnnxOptions(Int8Options):
    """ONNX export options (the ``onnx`` command's flags). ``keep_float`` layers' Conv nodes are excluded
    from QDQ."""

    opset: int = DEFAULT_OPSET
    #: write the ORT format (``.ort``) for ONNX Runtime Mobile / minimal builds, with the operator config a
    #: minimal build needs (``build.sh --minimal_build --include_ops_by_config FILE``)
    ort_format: bool = False
    #: int8: 8 (uint8 activations) or 16 (uint16 activations, W8A16, opset 21: finer activation rounding; ONNX
    #: Runtime has no 16-bit conv kernels, so the convs compute in float between 16-bit quantize/dequantize:
    #: slower than 8)
    activation_bits: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_activation_bits(self.activation_bits)


class OnnxExporter(Exporter):
    """ONNX for ONNX Runtime (CPU / mobile). int8 by default (QDQ Conv), ``float32`` on request; the ORT
    format with ``OnnxOptions(ort_format=True)``."""

    format = "onnx"
    options_class = OnnxOptions
    default_bounds = SizeBounds(min_hw=(64, 64), max_hw=(4096, 4096), min_pixels=0)

    def bounds_for(self, config, requested: Optional[SizeBounds] = None) -> SizeBounds:
        bounds = requested or self.default_bounds
        need = min_input_pixels(config)
        if bounds.min_pixels >= need:
            return bounds
        return SizeBounds(min_hw=bounds.min_hw, max_hw=bounds.max_hw, min_pixels=need)

    @property
    def suffix(self) -> str:
        return ".ort" if self.options.ort_format else ".onnx"

    def _quantize(self, job: ExportJob, float_path: Path, dest: Path, inputs: list) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
        """QDQ-quantize ``float_path`` into ``dest`` with the ``keep_float`` layers' Conv nodes excluded: the named
        ones, or those ``auto`` finds on the calibration images (:func:`..quantize.keep_float.auto_search`;
        isolated SQNR by :func:`..quantize.ort_debug.onnx_layer_errors`, sizes: each QDQ model's file). Calibrated
        once; every ``auto`` candidate re-uses the ranges. Returns what was quantized and the manifest's
        ``keep_float`` record (None: all int8)."""
        import onnx

        from ..quantize import debug
        from ..quantize.keep_float import RANKING_IMAGES, auto_search, calibration_logits, manual_record
        from ..quantize.mixed_precision import check_layer_names, float_layer_names
        from ..quantize.ort_debug import conv_nodes_by_layer, conv_nodes_of_layers, onnx_layer_errors
        from ..runtimes.onnx_runner import OrtCallable

        per_channel, spec, bits = self.options.per_channel, self.options.keep_float, self.options.activation_bits
        if spec is None:
            return quantize_qdq(float_path, dest, inputs, per_channel=per_channel, activation_bits=bits), None
        graph = onnx.load(str(float_path), load_external_data=False)
        if not spec.auto:
            check_layer_names(spec.layers, float_layer_names(job.reference))
            nodes = conv_nodes_of_layers(graph, job.reference, spec.layers)
            job.log(f"keeping {len(nodes)} layer(s) float (--keep-float): "
                    + ", ".join(f"{layer} ({len(n)} Conv node{'s' if len(n) > 1 else ''})" for layer, n in nodes.items()))
            counts = quantize_qdq(float_path, dest, inputs, per_channel=per_channel, activation_bits=bits,
                                  nodes_to_exclude=[n for ns in nodes.values() for n in ns])
            return counts, manual_record(spec.layers, nodes=nodes)
        nodes_of = conv_nodes_by_layer(graph, job.reference)
        ranges = dest.parent / "calibration.ranges.json"  # the first candidate calibrates, the others re-use it
        built: dict[tuple[str, ...], tuple[Path, dict[str, Any]]] = {}

        def model_for(layers: Sequence[str]) -> tuple[Path, dict[str, Any]]:
            key = tuple(layers)
            if key not in built:
                path = dest.parent / f"keep-float-{len(built)}.onnx"
                built[key] = path, quantize_qdq(float_path, path, inputs, per_channel=per_channel, activation_bits=bits,
                                                calibration_cache=ranges,
                                                nodes_to_exclude=[n for layer in key for n in nodes_of.get(layer, [])])
            return built[key]

        logits = calibration_logits(job.reference, inputs)
        result, record = auto_search(
            lambda layers: debug.evaluate_model(OrtCallable(model_for(layers)[0]), logits, inputs,
                                                name="+".join(layers) or "int8", thresholds=job.thresholds),
            lambda layers: model_for(layers)[0].stat().st_size,
            lambda: onnx_layer_errors(float_path, model_for(())[0], job.reference,
                                      [x.numpy() for x in inputs[:RANKING_IMAGES]]),
            variant=job.loaded.config.name, max_size=spec.max_size, candidates=spec.candidates,
            ranking_images=min(len(inputs), RANKING_IMAGES), log=job.log)
        layers = tuple(result.final.float_layers)
        record["nodes"] = {layer: nodes_of.get(layer, []) for layer in layers}
        record["size_bytes_are"] = "each QDQ model's file before metadata; the artifact's own size is the manifest's"
        job.log(f"--keep-float auto: {record['stop_reason']}")
        path, counts = model_for(layers)
        shutil.move(str(path), str(dest))
        return counts, record

    @property
    def sidecar_suffixes(self) -> tuple[str, ...]:
        return (REQUIRED_OPERATORS_SUFFIX,) if self.options.ort_format else ()

    def export(self, job: ExportJob, dest: Path) -> ArtifactInfo:
        import onnx
        import onnxruntime

        self.check_precision(job.precision)
        opset = int(self.options.opset)
        if self.options.activation_bits != 8 and job.precision != "int8":
            raise ExportError(f"activation_bits applies to int8 (a {job.precision} model has float activations)")
        if opset < MIN_OPSET:
            raise ExportError(f"--opset {opset}: the dynamo ONNX exporter needs opset {MIN_OPSET} or newer")
        need = min_input_pixels(job.loaded.config)
        if job.bounds.min_pixels < need:
            raise ExportError(f"size bounds allow H*W down to {job.bounds.min_pixels}, but the exported PointRend "
                              f"needs at least {need}; use OnnxExporter.bounds_for(config)")
        dest = Path(dest)
        sidecars: dict[str, str] = {}
        onnx_dest = dest if dest.suffix == ".onnx" else dest.with_suffix(".onnx")
        staging = Path(tempfile.mkdtemp(prefix=".alisnet-onnx.", dir=dest.parent))
        try:
            float_path = staging / "float.onnx"
            quantization: dict[str, Any]
            source, equalization = job.reference, None
            if job.precision == "int8":
                inputs = job.calibration_inputs()
                source, equalization = job.quantization_source(inputs, equalize=self.options.equalize)
            job.log(f"exporting with torch.onnx (dynamo, opset {opset}, dynamic H and W)")
            export_float_onnx(job, float_path, opset=opset, model=source)
            if job.precision == "int8":
                job.log(f"ONNX Runtime static QDQ quantization of Conv nodes (int8 weights, "
                        f"{ACTIVATION_TYPES[self.options.activation_bits]} activations), calibrated on {len(inputs)} images")
                per_channel = self.options.per_channel
                model_path = staging / "int8.onnx"
                counts, keep_float = self._quantize(job, float_path, model_path, inputs)
                quantization = {
                    "scheme": "ort-static-qdq" if self.options.activation_bits == 8 else "ort-static-qdq-a16w8",
                    "backend": f"onnxruntime {onnxruntime.__version__}",
                    "equalization": equalization,
                    "calibration": {"images": len(inputs), "method": "MinMax",
                                    **job.calibration_info},
                    **({"keep_float": keep_float} if keep_float else {}),
                    "op_types": list(QUANT_OP_TYPES), "per_channel": per_channel,
                    "activation_bits": self.options.activation_bits, "weight_type": "int8",
                    # Conv inputs/outputs carry QuantizeLinear/DequantizeLinear pairs; everything else computes in float
                    "quantized_modules": ["backbone", "head", "point_rend.point_head (Conv1d as Conv)"],
                    "float_modules": ["point_rend point selection (uncertainty, topk, point coordinates)",
                                      "point_rend grid_sample and scatter", "upsampling (Resize)"],
                    **counts,
                }
            else:
                model_path = float_path
                quantization = {"scheme": "none"}
            model = onnx.load(str(model_path))
            prune_opset_imports(model)
            _set_metadata(model, metadata_props(job.metadata))
            model.doc_string = f"ALiSNet person segmentation, {job.precision}, exported by alisnet-export"
            try:
                onnx.checker.check_model(model, full_check=True)
            except Exception as exc:
                raise ExportError(f"the exported ONNX model does not pass onnx.checker: {str(exc).splitlines()[0]}") from exc
            onnx.save(model, str(onnx_dest))
            if dest != onnx_dest:  # .ort artifact
                try:
                    job.log("converting to the ORT format (ONNX Runtime Mobile)")
                    sidecars[REQUIRED_OPERATORS_SUFFIX] = convert_to_ort(onnx_dest, dest)
                finally:
                    onnx_dest.unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
        runtime = {
            "kind": "onnxruntime",
            "file_format": "ort" if dest.suffix == ".ort" else "onnx",
            "opset": opsets.get("ai.onnx", opset),
            "opset_imports": opsets,
            "ir_version": model.ir_version,
            "min_version": min_ort_version(model, ort_format=dest.suffix == ".ort"),
            "execution_providers": ["CPUExecutionProvider"],
            **({"ort_optimization": {"style": "Fixed", "level": "all", "target_platform": ORT_TARGET_PLATFORM}}
               if dest.suffix == ".ort" else {}),
            "tested_with": f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)",
            "operators": sorted({n.op_type if not n.domain else f"{n.domain}::{n.op_type}" for n in model.graph.node}),
            "input": {"name": INPUT_NAME, "shape": [1, 3, "32*h_blocks", "32*w_blocks"]},
            "output": {"name": OUTPUT_NAME},
            "metadata_props": sorted(metadata_props(job.metadata)),
        }
        if dest.suffix == ".ort":
            runtime["op_list_file"] = f"{job.name or dest.stem}{REQUIRED_OPERATORS_SUFFIX}"
        return ArtifactInfo(job.precision, quantization, runtime, sidecars=sidecars)
