"""``.mlpackage``: a Core ML ML Program for iOS 16+ / macOS 13+, fp16 compute, flexible H and W.

The float model goes through ``torch.export`` with dynamic height and width (multiples of 32 within
the size bounds), ``run_decompositions({})``, and ``coremltools.convert`` to an ML Program. Converting
a *scripted* model fails (docs/design.md section 4.6), so this path never scripts. Weights:

* ``fp16`` (default): fp16 weights and activations (``precision: float16``).
* ``int8``: ``coremltools.optimize.coreml.linear_quantize_weights``, symmetric int8 per output
  channel; activations stay fp16 (``precision: int8-weights``, scheme ``coreml-linear-weights``).
* ``palettize4``: ``palettize_weights``, 4-bit k-means look-up tables; activations stay fp16
  (``precision: palettized4-weights``, scheme ``coreml-palettize-weights``).

Both compressions leave weights under 2048 elements (some 1x1 and depthwise convs) in fp16
(coremltools' ``weight_threshold``); :func:`check_package` counts what was compressed.

``image_input=True`` makes the input a Core ML image (``ct.ImageType``, RGB, 8-bit) instead of a
float tensor. Core ML's image preprocessing is ``scale * pixel + bias[c]`` with *one* scale for all
channels, so per-channel ImageNet std cannot be expressed there. Rather than approximate it, the
image input does ``pixel / 255 - mean[c]`` (``scale = 1/255``, ``bias = -mean``) and the exported
graph starts with an exact per-channel multiply by ``1 / std[c]``: the same formula as the
manifest's, rounded to fp16 like every other activation.

Core ML cannot *predict* on Linux (no Core ML framework), so the pipeline cannot run parity here.
:func:`check_package` is what can be checked without predicting: the package reloads, declares the
input and output the manifest promises with the flexible size range, uses the expected ops, targets
the deployment target, and carries weights compressed as asked. The exporter runs it on every
package it writes and records the result in the manifest; the tests call it too.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..errors import DataError, ExportError
from ..manifest import INPUT_NAME, OUTPUT_NAME
from ..modeling.point_rend import min_input_pixels
from .base import ArtifactInfo, Exporter, ExportJob, ExportOptions, SizeBounds

__all__ = [
    "CoreMLExporter",
    "CoreMLOptions",
    "WEIGHT_MODES",
    "DEPLOYMENT_TARGET",
    "PackageExpectation",
    "check_package",
    "export_dynamic",
    "mil_op_counts",
    "required_min_pixels",
]

#: the oldest OS whose Core ML runs these packages: ML Program opset CoreML6 (fp16 I/O defaults,
#: constexpr_affine_dequantize / constexpr_lut_to_dense weight compression)
DEPLOYMENT_TARGET = {"name": "iOS16", "ios": "16.0", "macos": "13.0", "spec_version": 7, "opset": "CoreML6"}
#: --weights choice -> (manifest precision, quantization scheme, the op that decompresses weights on load)
WEIGHT_MODES: dict[str, tuple[str, str, Optional[str]]] = {
    "fp16": ("float16", "fp16", None),
    "int8": ("int8-weights", "coreml-linear-weights", "constexpr_affine_dequantize"),
    "palettize4": ("palettized4-weights", "coreml-palettize-weights", "constexpr_lut_to_dense"),
}
_PRECISION_TO_WEIGHTS = {precision: mode for mode, (precision, _, _) in WEIGHT_MODES.items()}
#: ops the network needs: convolutions, and for PointRend the point selection, sampling and scatter
_BACKBONE_OPS = ("conv", "relu", "add", "upsample_bilinear")
_POINTREND_OPS = ("topk", "resample", "scatter_along_axis")
#: a debugging side file coremltools writes into packages converted from torch.export; Core ML does
#: not read it (it is not listed in the package's Manifest.json) and it is ~130 kB
_DEBUG_FILE = "executorch_debug_handle_mapping.json"


#: PointRend's smallest input (docs/design.md section 4.3); the old name, kept for callers
required_min_pixels = min_input_pixels


class _ScaledInput(nn.Module):
    """``model(x * scale[c])``: the exact per-channel ``1 / std`` a Core ML image input cannot express."""

    def __init__(self, model: nn.Module, scale: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale)


def export_dynamic(model: nn.Module, bounds: SizeBounds, example_hw: tuple[int, int]) -> torch.export.ExportedProgram:
    """``torch.export`` with H and W dynamic multiples of 32 within ``bounds``, decomposed to core ATen."""
    bounds.check(*example_hw, what="export example input")
    example = torch.randn(1, 3, *example_hw, generator=torch.Generator().manual_seed(0))
    try:
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=bounds.dynamic_shapes())
    except Exception as exc:
        raise ExportError(f"torch.export could not export the model with dynamic H and W: {str(exc).splitlines()[0]}") from exc
    return program.run_decompositions({})


def mil_op_counts(spec: Any) -> Counter:
    """Op type -> count over every function and nested block of an ML Program spec."""
    counts: Counter = Counter()

    def walk(block: Any) -> None:
        for op in block.operations:
            counts[op.type] += 1
            for inner in op.blocks:
                walk(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    return counts


def _weight_dtypes(spec: Any) -> Counter:
    """dtype name -> number of tensors stored in the weight file (``blobFileValue``), by the op holding them."""
    from coremltools.proto import MIL_pb2

    counts: Counter = Counter()

    def walk(block: Any) -> None:
        for op in block.operations:
            for key, value in op.attributes.items():
                if value.WhichOneof("value") == "blobFileValue":
                    dtype = MIL_pb2.DataType.Name(value.type.tensorType.dataType)
                    counts[f"{op.type}.{key}:{dtype}"] += 1
            for inner in op.blocks:
                walk(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    return counts


@dataclass
class PackageExpectation:
    """What a package must declare; :func:`check_package` compares a saved package with it."""

    weights: str = "fp16"
    image_input: bool = False
    min_hw: tuple[int, int] = (64, 64)
    max_hw: tuple[int, int] = (4096, 4096)
    pointrend: bool = True
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    metadata_keys: tuple[str, ...] = ("alisnet.metadata",)
    extra_ops: tuple[str, ...] = field(default_factory=tuple)
    #: image inputs: the normalisation the package must apply (pixel / 255 - mean) / std
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)


def _const_values(spec: Any) -> dict[str, np.ndarray]:
    """Output name -> value of every small (inline) ``const`` op of the main function."""
    from coremltools.proto import MIL_pb2

    values: dict[str, np.ndarray] = {}
    for block in spec.mlProgram.functions["main"].block_specializations.values():
        for op in block.operations:
            if op.type != "const" or op.attributes["val"].WhichOneof("value") != "immediateValue":
                continue
            val = op.attributes["val"]
            tensor = val.immediateValue.tensor
            kind = tensor.WhichOneof("value")
            if kind == "floats":
                values[op.outputs[0].name] = np.asarray(tensor.floats.values, np.float32)
            elif kind == "bytes" and val.type.tensorType.dataType == MIL_pb2.DataType.Value("FLOAT16"):
                values[op.outputs[0].name] = np.frombuffer(tensor.bytes.values, np.float16).astype(np.float32)
    return values


def _image_normalisation(spec: Any, input_name: str) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(scale, bias, per-channel multiply)`` the program applies to an image input, or None if it does not.

    Follows the data from the input: Core ML's ``mul`` (scale) and ``add`` (bias), an optional fp16
    ``cast``, then the model's own per-channel ``mul`` (``1 / std``).
    """
    consts = _const_values(spec)
    ops = [op for block in spec.mlProgram.functions["main"].block_specializations.values() for op in block.operations]

    def consumer(name: str, op_type: str) -> Optional[tuple[Any, np.ndarray]]:
        for op in ops:
            if op.type == op_type and op.inputs["x"].arguments[0].name == name:
                if op_type == "cast":
                    return op, np.empty(0)
                y = op.inputs["y"].arguments[0].name
                return (op, consts[y]) if y in consts else None
        return None

    scaled = consumer(input_name, "mul")
    biased = scaled and consumer(scaled[0].outputs[0].name, "add")
    if not biased:
        return None
    last = biased[0].outputs[0].name
    cast = consumer(last, "cast")
    if cast:
        last = cast[0].outputs[0].name
    multiplied = consumer(last, "mul")
    if not multiplied:
        return None
    return scaled[1].ravel(), biased[1].ravel(), multiplied[1].ravel()


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.5g}" for v in np.asarray(values).ravel()) + "]"


def check_package(path: Path, expect: PackageExpectation) -> dict[str, Any]:
    """Everything about a saved ``.mlpackage`` that can be checked without Core ML predicting.

    Returns ``{"passed": bool, "checks": [{"name", "passed", "detail"}], "deployment_target", "ops",
    "weights", "weight_file_bytes"}``; never raises for a check that fails (the caller decides).
    """
    import coremltools as ct

    path = Path(path)
    checks: list[dict[str, Any]] = []

    def check(name: str, passed: bool, detail: str) -> None:
        checks.append({"name": name, "passed": bool(passed), "detail": detail})

    try:
        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
    except Exception as exc:  # a package coremltools cannot read is a failed check, not a crash
        check("reloads", False, f"coremltools could not read {path.name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return {"passed": False, "checks": checks}
    kind = spec.WhichOneof("Type")
    check("reloads", kind == "mlProgram",
          f"ct.models.MLModel(skip_model_load=True) reads it; model type {kind} (expected mlProgram)")

    # input: name, type, flexible H/W range
    inputs, outputs = list(spec.description.input), list(spec.description.output)
    if len(inputs) != 1:
        check("input", False, f"{len(inputs)} inputs (expected 1)")
    else:
        inp = inputs[0]
        itype = inp.type.WhichOneof("Type")
        if expect.image_input:
            image = inp.type.imageType
            color = ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
            ok = inp.name == expect.input_name and itype == "imageType" and color == "RGB"
            check("input", ok, f"{inp.name!r}: {itype} {color} (expected {expect.input_name!r}: imageType RGB)")
            ranges = image.imageSizeRange
            hw_range = ((ranges.heightRange.lowerBound, ranges.heightRange.upperBound),
                        (ranges.widthRange.lowerBound, ranges.widthRange.upperBound))
            found = _image_normalisation(spec, inp.name)
            if found is None:
                check("image_normalisation", False, "no pixel * scale + bias followed by a per-channel multiply "
                      "after the image input")
            else:
                scale, bias, multiply = found
                want_bias = -np.asarray(expect.mean, np.float32)
                want_mul = 1.0 / np.asarray(expect.std, np.float32)
                ok = (scale.size == 1 and np.allclose(scale, 1 / 255, rtol=1e-6)
                      and np.allclose(bias, want_bias, rtol=1e-6, atol=1e-7) and multiply.size == 3
                      and np.allclose(multiply, want_mul, rtol=1e-3))  # fp16 rounding of 1/std
                check("image_normalisation", ok,
                      f"pixel * {_fmt(scale)} + {_fmt(bias)}, then * {_fmt(multiply)} per channel (expected "
                      f"* 1/255 + -mean, then * 1/std = {_fmt(want_mul)}; fp16 rounds the last)")
        else:
            array = inp.type.multiArrayType
            dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
            ok = inp.name == expect.input_name and itype == "multiArrayType" and dtype == "FLOAT32"
            check("input", ok, f"{inp.name!r}: {itype} {dtype} (expected {expect.input_name!r}: multiArrayType FLOAT32)")
            sizes = list(array.shapeRange.sizeRanges)
            hw_range = tuple((r.lowerBound, r.upperBound) for r in sizes[2:4]) if len(sizes) == 4 else ()
        want = ((expect.min_hw[0], expect.max_hw[0]), (expect.min_hw[1], expect.max_hw[1]))
        check("flexible_shape", tuple(hw_range) == want,
              f"H, W ranges {list(map(list, hw_range))} (expected {list(map(list, want))}; Core ML cannot also "
              "require multiples of 32: the app must, per input.size_constraints)")
    if len(outputs) != 1:
        check("output", False, f"{len(outputs)} outputs (expected 1)")
    else:
        out = outputs[0]
        otype = out.type.WhichOneof("Type")
        dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(out.type.multiArrayType.dataType)
        check("output", out.name == expect.output_name and otype == "multiArrayType" and dtype == "FLOAT32",
              f"{out.name!r}: {otype} {dtype} (expected {expect.output_name!r}: multiArrayType FLOAT32)")

    # deployment target: spec version and ML Program opset
    opsets = sorted({key for f in spec.mlProgram.functions.values() for key in f.block_specializations})
    check("deployment_target",
          spec.specificationVersion == DEPLOYMENT_TARGET["spec_version"] and opsets == [DEPLOYMENT_TARGET["opset"]],
          f"spec version {spec.specificationVersion}, opset {', '.join(opsets)} (expected "
          f"{DEPLOYMENT_TARGET['spec_version']}, {DEPLOYMENT_TARGET['opset']} = {DEPLOYMENT_TARGET['name']})")

    # op set
    ops = mil_op_counts(spec)
    needed = [*_BACKBONE_OPS, *(_POINTREND_OPS if expect.pointrend else ()), *expect.extra_ops]
    missing = [op for op in needed if op not in ops]
    check("ops", not missing, f"{len(ops)} op types; needs {', '.join(needed)}"
          + (f"; MISSING {', '.join(missing)}" if missing else ""))

    # weights compressed as asked
    weights = _weight_dtypes(spec)
    _, _, decompress_op = WEIGHT_MODES[expect.weights]
    conv_weights = ops.get("conv", 0)
    compressed = {op: ops.get(op, 0) for op in ("constexpr_affine_dequantize", "constexpr_lut_to_dense")}
    fp32_blobs = sum(n for key, n in weights.items() if key.endswith(":FLOAT32"))
    if decompress_op is None:
        ok = not any(compressed.values()) and fp32_blobs == 0
        detail = f"no compressed weights, {fp32_blobs} fp32 weight tensors (expected fp16 weights only)"
    else:
        others = {op: n for op, n in compressed.items() if op != decompress_op and n}
        ok = compressed[decompress_op] > 0 and not others and fp32_blobs == 0
        detail = (f"{compressed[decompress_op]} {decompress_op} of {conv_weights} conv layers (weights under 2048 "
                  f"elements stay fp16), {fp32_blobs} fp32 weight tensors")
    check("weights", ok, detail)

    # metadata the manifest promised
    user = dict(spec.description.metadata.userDefined)
    absent = [k for k in expect.metadata_keys if k not in user]
    check("metadata", not absent, "user_defined_metadata has " + ", ".join(expect.metadata_keys)
          + (f"; MISSING {', '.join(absent)}" if absent else ""))

    weight_file = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    return {
        "passed": all(c["passed"] for c in checks),
        "checks": checks,
        "deployment_target": {"spec_version": spec.specificationVersion, "opsets": opsets},
        "ops": dict(sorted(ops.items())),
        "weights": dict(sorted(weights.items())),
        "weight_file_bytes": weight_file.stat().st_size if weight_file.is_file() else 0,
    }


@dataclass(frozen=True)
class CoreMLOptions(ExportOptions):
    """Core ML export options (the ``coreml`` command's flags; the weight compression is the precision)."""

    #: take an RGB image (CVPixelBuffer) instead of a normalised float array; normalisation happens inside
    image_input: bool = False


class CoreMLExporter(Exporter):
    format = "coreml"
    options_class = CoreMLOptions
    default_bounds = SizeBounds(min_hw=(64, 64), max_hw=(4096, 4096), min_pixels=0)
    #: Core ML cannot predict on Linux: parity is 'not_run' there and check_package stands in
    checks_without_runtime = True

    def bounds_for(self, config: ModelConfig, requested: Optional[SizeBounds] = None) -> SizeBounds:
        bounds = requested or self.default_bounds
        need = min_input_pixels(config)
        if bounds.max_hw[0] * bounds.max_hw[1] < need:
            raise DataError(f"size bounds up to {bounds.max_hw[0]}x{bounds.max_hw[1]} are too small for {config.name}: "
                            f"PointRend refines {config.point_rend.subdivision_num_points} points, so H x W must be at "
                            f"least {need}; raise the maximum size")
        return SizeBounds(bounds.min_hw, bounds.max_hw, max(bounds.min_pixels, need))

    def export(self, job: ExportJob, dest: Path) -> ArtifactInfo:
        import coremltools as ct
        import coremltools.optimize.coreml as cto

        self.check_precision(job.precision)
        weights = _PRECISION_TO_WEIGHTS[job.precision]
        _, scheme, _ = WEIGHT_MODES[weights]
        image_input = self.options.image_input
        cfg = job.loaded.config
        mean, std = tuple(cfg.input.mean), tuple(cfg.input.std)
        bounds = job.bounds
        model: nn.Module = job.reference
        if image_input:
            model = _ScaledInput(model, tuple(1.0 / s for s in std))
        job.log(f"torch.export with dynamic H x W in [{bounds.min_hw[0]}..{bounds.max_hw[0]}] x "
                f"[{bounds.min_hw[1]}..{bounds.max_hw[1]}] (multiples of 32), decomposed to core ATen")
        program = export_dynamic(model, bounds, job.example_hw)

        h, w = job.example_hw
        shape = ct.Shape((1, 3, ct.RangeDim(bounds.min_hw[0], bounds.max_hw[0], default=h, symbol="H"),
                          ct.RangeDim(bounds.min_hw[1], bounds.max_hw[1], default=w, symbol="W")))
        if image_input:
            inp = ct.ImageType(name=INPUT_NAME, shape=shape, scale=1.0 / 255.0, bias=[-m for m in mean],
                               color_layout=ct.colorlayout.RGB, channel_first=True)
        else:
            inp = ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)
        job.log(f"coremltools {ct.__version__}: converting to an ML Program ({DEPLOYMENT_TARGET['name']}, fp16 compute)")
        try:
            mlmodel = ct.convert(program, inputs=[inp], outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                                 convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                                 compute_precision=ct.precision.FLOAT16, skip_model_load=True)
        except Exception as exc:
            raise ExportError(f"coremltools could not convert the exported program: {str(exc).splitlines()[0]}") from exc

        quantization: dict[str, Any] = {"scheme": scheme, "backend": "coreml", "activations": "float16"}
        if weights == "int8":
            job.log("compressing weights: int8 linear symmetric, per output channel (linear_quantize_weights)")
            config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel"))
            mlmodel = cto.linear_quantize_weights(mlmodel, config)
            quantization.update(weights="int8", mode="linear_symmetric", granularity="per_channel",
                                weight_threshold=config.global_config.weight_threshold)
        elif weights == "palettize4":
            job.log("compressing weights: 4-bit k-means palettes, one per tensor (palettize_weights)")
            config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=4))
            mlmodel = cto.palettize_weights(mlmodel, config)
            quantization.update(weights="4-bit palette (16 fp16 values per tensor)", mode="kmeans", nbits=4,
                                weight_threshold=config.global_config.weight_threshold)
        else:
            quantization["weights"] = "float16"

        metadata = job.metadata
        mlmodel.short_description = (f"ALiSNet human segmentation ({metadata.get('variant', cfg.name)}): "
                                     "per-pixel background/person logits")
        mlmodel.version = str(metadata.get("provenance", {}).get("toolchain", ""))
        mlmodel.input_description[INPUT_NAME] = (
            "RGB image, H and W multiples of 32 (Core ML normalises: pixel / 255 - mean, then the model divides by std)"
            if image_input else "normalised RGB (1, 3, H, W) float32: (v / 255 - mean[c]) / std[c], H and W multiples of 32")
        mlmodel.output_description[OUTPUT_NAME] = "logits (1, 2, H, W): person where logits[1] > logits[0]"
        user = mlmodel.user_defined_metadata
        user["alisnet.metadata"] = json.dumps(metadata, separators=(",", ":"))
        user["alisnet.precision"] = job.precision
        user["alisnet.input_kind"] = "image" if image_input else "tensor"
        user["alisnet.mean"] = json.dumps(list(mean))
        user["alisnet.std"] = json.dumps(list(std))
        mlmodel.save(str(dest))
        (dest / _DEBUG_FILE).unlink(missing_ok=True)

        expect = PackageExpectation(weights=weights, image_input=image_input, min_hw=bounds.min_hw, max_hw=bounds.max_hw,
                                    pointrend=cfg.point_rend.enabled,
                                    metadata_keys=("alisnet.metadata", "alisnet.precision", "alisnet.input_kind"),
                                    mean=mean, std=std)
        report = check_package(dest, expect)
        if not report["passed"]:
            failed = "; ".join(f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["passed"])
            raise ExportError(f"the converted Core ML package does not look as it must: {failed}")
        job.log("package checks passed: " + ", ".join(c["name"] for c in report["checks"]))

        runtime: dict[str, Any] = {
            "kind": "coreml",
            "model_type": "mlprogram",
            "deployment_target": {"ios": DEPLOYMENT_TARGET["ios"], "macos": DEPLOYMENT_TARGET["macos"]},
            "spec_version": DEPLOYMENT_TARGET["spec_version"],
            "opset": DEPLOYMENT_TARGET["opset"],
            "compute_units": "ALL (the app chooses; fp16 runs on CPU, GPU and the Neural Engine)",
            "compute_precision": "float16",
            "coremltools": ct.__version__,
            "input": _input_contract(image_input, mean, std, bounds),
            "operators": report["ops"],
            "weight_file_bytes": report["weight_file_bytes"],
        }
        return ArtifactInfo(job.precision, quantization, runtime, checks=report)


def _input_contract(image_input: bool, mean: tuple[float, ...], std: tuple[float, ...], bounds: SizeBounds) -> dict[str, Any]:
    flexible = {"height": [bounds.min_hw[0], bounds.max_hw[0]], "width": [bounds.min_hw[1], bounds.max_hw[1]],
                "enforced_by_core_ml": "the ranges only; multiples of 32 and min_pixels are the app's job"}
    if not image_input:
        return {"type": "multiarray", "dtype": "float32", "layout": "NCHW", "normalized": True, "flexible_shape": flexible}
    return {
        "type": "image",
        "color_layout": "RGB",
        "flexible_shape": flexible,
        "normalized": False,
        "preprocessing": {
            "core_ml_image": {"scale": 1.0 / 255.0, "bias": [-m for m in mean]},
            "in_model": {"multiply": [1.0 / s for s in std]},
            "exact": True,
            "note": ("Core ML image inputs take one scale for all channels; the per-channel 1/std is the model's "
                     "first op instead of an approximation. Feed 8-bit RGB pixels resized per the manifest; "
                     "do not normalise in the app."),
        },
    }

