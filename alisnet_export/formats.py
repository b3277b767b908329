"""The one table of artifact formats and precisions: every fact about a format lives in its row here.

A row (:class:`FormatSpec`) says what a format's files are called, which precisions it exports and what
the users' spellings of them mean, which class exports it and which runs it, what ``bench`` measures by
default and how the command line sums an artifact up. A :class:`PrecisionSpec` row holds what is judged
per precision: the parity gates and the golden-vector tolerances an app checks on the phone.

This module sits at the bottom of the package (it imports nothing from it but :mod:`.errors`): exporters
and runners are named as ``"module:Class"`` and imported only when asked for, so a runner module never
has to be imported to find out which suffix it reads, and no base module imports its subclasses.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .errors import DataError

__all__ = [
    "PrecisionSpec",
    "PRECISIONS",
    "FormatSpec",
    "FORMATS",
    "SCHEMES",
    "Target",
    "format_spec",
    "format_of_path",
    "artifact_suffixes",
    "parse_targets",
    "bundle_targets",
    "bench_targets",
    "human_size",
]


def human_size(num_bytes: float) -> str:
    """``4.01 MB`` / ``312.5 kB`` (decimal units, as the paper's sizes)."""
    return f"{num_bytes / 1e6:.2f} MB" if num_bytes >= 1e5 else f"{num_bytes / 1e3:.1f} kB"


@dataclass(frozen=True)
class PrecisionSpec:
    """What an artifact of one precision is judged by.

    ``gates``: the default parity thresholds (the fields of :class:`alisnet_export.parity.Thresholds`;
    README "Parity gates"). ``golden``: how closely the artifact must reproduce the golden vectors on a
    phone (docs/bundle-contract.md section 4)."""

    name: str
    gates: Mapping[str, float]
    golden: Mapping[str, Optional[float]]


_INT8_GATES = {"min_mean_iou": 0.99, "min_image_iou": 0.98, "max_mean_boundary_px": 1.0,
               "max_image_boundary_p95_px": 4.0, "max_width_drift_px": 4}

PRECISIONS: dict[str, PrecisionSpec] = {p.name: p for p in (
    # float exports compute the same graph: only float rounding differs; outside PointRend's tie zone
    PrecisionSpec("float32", {"max_abs_logit": 1e-4, "max_flip_fraction": 0.001, "min_mean_iou": 0.999,
                              "min_image_iou": 0.999},
                  {"self_max_abs": 1e-3, "reference_max_abs": 1e-3, "reference_min_mask_iou": 0.999}),
    # fp16 (Core ML default) rounds every activation
    PrecisionSpec("float16", {"max_abs_logit": 0.05, "max_flip_fraction": 0.01, "min_mean_iou": 0.995,
                              "min_image_iou": 0.99, "max_mean_boundary_px": 0.5},
                  {"self_max_abs": 0.05, "reference_max_abs": 0.1, "reference_min_mask_iou": 0.99}),
    # int8: judged by what the product needs, mask agreement and boundary pixels
    PrecisionSpec("int8", _INT8_GATES,
                  {"self_max_abs": 0.1, "reference_max_abs": None, "reference_min_mask_iou": 0.95}),
    # Core ML compressed weights, fp16 activations: judged like int8
    PrecisionSpec("int8-weights", _INT8_GATES,
                  {"self_max_abs": 0.05, "reference_max_abs": None, "reference_min_mask_iou": 0.97}),
    PrecisionSpec("palettized4-weights", _INT8_GATES,
                  {"self_max_abs": 0.05, "reference_max_abs": None, "reference_min_mask_iou": 0.95}),
)}

#: quantization scheme (the manifest's ``quantization.scheme``) -> what it means, for summaries
SCHEMES: dict[str, str] = {
    "eager-qat": "int8 converted from the QAT checkpoint",
    "eager-ptq": "int8 by post-training calibration (no QAT checkpoint given; run `alisnet-export qat` for QAT)",
    "ort-static-qdq": "int8 by ONNX Runtime static QDQ quantization of the convolutions (point geometry in float)",
    "ort-static-qdq-a16w8": "int8 weights and 16-bit activations by ONNX Runtime static QDQ of the convolutions (they "
                            "compute in float between 16-bit quantize/dequantize; point geometry in float)",
    "pt2e-ptq": "int8 backbone + head by PT2E post-training calibration (XNNPACK quantizer); PointRend float",
    "none": "float32, not quantized",
    "fp16": "float16 weights and compute (Core ML)",
    "coreml-linear-weights": "int8 weights (linear, per channel), float16 compute (Core ML)",
    "coreml-palettize-weights": "4-bit palettized weights, float16 compute (Core ML)",
}

_FLOAT_ALIASES = {"float32": "float32", "float": "float32", "fp32": "float32"}


def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _ptl_summary(runtime: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [("", f", bytecode v{runtime['bytecode_version']}, {len(runtime['operators'])} operators")]


def _pte_summary(runtime: Mapping[str, Any]) -> list[tuple[str, str]]:
    delegated, portable = runtime["delegated_ops"], runtime["portable_ops"]
    return [("", f", ExecuTorch {runtime['executorch']}, plans {human_size(runtime['planned_memory_bytes'])} of activations"),
            ("delegation", f"{sum(delegated.values())} ops in {runtime['delegated_subgraphs']} "
                           f"{'/'.join(runtime['delegates'])} subgraphs; {sum(portable.values())} on portable kernels: "
                           + ", ".join(f"{k.split('::')[-1]} x{v}" for k, v in portable.items()))]


def _onnx_summary(runtime: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [("", f", opset {runtime['opset']}, {runtime['file_format']} format, "
                 f"ONNX Runtime >= {runtime['min_version']}")]


def _coreml_summary(runtime: Mapping[str, Any]) -> list[tuple[str, str]]:
    target = runtime["deployment_target"]
    return [("", f", ML Program for iOS {target['ios']}+ / macOS {target['macos']}+, {runtime['input']['type']} input, "
                 f"{len(runtime['operators'])} op types")]


@dataclass(frozen=True)
class FormatSpec:
    """One artifact format (see the module docstring)."""

    name: str
    #: suffixes of its artifacts; the first is what a plain export writes (variants: see the exporter's options)
    suffixes: tuple[str, ...]
    precisions: tuple[str, ...]
    default_precision: str  # a target given without ``:PRECISION``
    float_precision: str  # what ``--float`` means (Core ML computes in fp16 whatever its weights are)
    #: users' spellings after ``TARGET:`` -> precision
    aliases: Mapping[str, str]
    exporter: str  # ``module:Class`` of its :class:`~alisnet_export.exporters.base.Exporter`
    runner: str  # ``module:function``: ``(path) -> Runner`` (:class:`~alisnet_export.runtimes.base.Runner`)
    #: precisions ``bench`` measures by default
    bench_precisions: tuple[str, ...]
    #: the summary of a written artifact from its manifest ``runtime`` section: ``("", detail)`` extends the
    #: artifact line, ``(label, text)`` adds a row
    summary: Callable[[Mapping[str, Any]], list[tuple[str, str]]]
    #: the app harnesses of this repository that run it (``android`` -> android_harness/, ``ios`` -> ios_harness/)
    harnesses: tuple[str, ...]
    #: how an app runs it when no harness here does
    runtime_hint: str = ""
    #: where its parity re-check can run
    recheck_where: str = "any time, e.g. in CI"

    def app_hint(self) -> str:
        """Where an app developer goes next (the CLI's "Next steps")."""
        if not self.harnesses:
            return self.runtime_hint
        return f"{' or '.join(f'{h}_harness/' for h in self.harnesses)} README shows how"

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    def precision_named(self, spelling: str) -> str:
        """The precision a user's ``spelling`` means for this format; :class:`ValueError` lists the choices."""
        key = spelling.strip().lower()
        if key not in self.aliases:
            raise ValueError(f"{self.name}: unknown precision {spelling!r}; choose from {', '.join(self.aliases)}")
        return self.aliases[key]

    def exporter_class(self) -> type:
        return _load(self.exporter)

    def open_runner(self, path: Path) -> Any:
        """A runner of the artifact at ``path`` (the runtime is imported here, on first use)."""
        return _load(self.runner)(Path(path))

    def new_exporter(self, options: Any = None) -> Any:
        """An exporter of this format, configured with ``options`` (its options dataclass, a dict of its
        fields, or None for the defaults)."""
        return self.exporter_class()(options)


FORMATS: dict[str, FormatSpec] = {f.name: f for f in (
    FormatSpec("ptl", (".ptl",), ("int8", "float32"), "int8", "float32", {"int8": "int8", **_FLOAT_ALIASES},
               "alisnet_export.exporters.ptl:PtlExporter", "alisnet_export.runtimes.torch_runners:open_ptl",
               ("int8", "float32"), _ptl_summary, ("android", "ios")),
    FormatSpec("pte", (".pte",), ("int8", "float32"), "int8", "float32", {"int8": "int8", **_FLOAT_ALIASES},
               "alisnet_export.exporters.pte:PteExporter", "alisnet_export.runtimes.executorch_runner:open_pte",
               ("int8", "float32"), _pte_summary, ("android", "ios")),
    FormatSpec("onnx", (".onnx", ".ort"), ("int8", "float32"), "int8", "float32", {"int8": "int8", **_FLOAT_ALIASES},
               "alisnet_export.exporters.onnx:OnnxExporter", "alisnet_export.runtimes.onnx_runner:open_onnx",
               ("int8", "float32"), _onnx_summary, (),
               runtime_hint="run it with ONNX Runtime (Android: com.microsoft.onnxruntime:onnxruntime-android, iOS: "
                            "the onnxruntime-objc pod)"),
    FormatSpec("coreml", (".mlpackage",), ("float16", "int8-weights", "palettized4-weights"), "float16", "float16",
               {"float16": "float16", "fp16": "float16", "float": "float16", "int8": "int8-weights",
                "int8-weights": "int8-weights", "palettize4": "palettized4-weights",
                "palettized4-weights": "palettized4-weights"},
               "alisnet_export.exporters.coreml:CoreMLExporter", "alisnet_export.runtimes.coreml_runner:open_coreml",
               (), _coreml_summary, ("ios",), recheck_where="on a Mac"),
)}


def format_spec(name: str) -> FormatSpec:
    """The row of format ``name``; :class:`ValueError` lists the formats."""
    try:
        return FORMATS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(FORMATS)} "
                         "(optionally TARGET:PRECISION, e.g. ptl:float32)") from None


def artifact_suffixes() -> dict[str, str]:
    """Every artifact suffix -> its format."""
    return {suffix: f.name for f in FORMATS.values() for suffix in f.suffixes}


def format_of_path(path: Path) -> FormatSpec:
    """The format of the artifact at ``path``, from its suffix; :class:`DataError` lists the known ones."""
    path = Path(path)
    known = artifact_suffixes()
    fmt = known.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown artifact format {path.suffix or '(no suffix)'!r}; expected one of "
                        f"{', '.join(sorted(known))}")
    return FORMATS[fmt]


@dataclass(frozen=True)
class Target:
    """One artifact to build: a format and a precision (``ptl-int8``)."""

    format: str
    precision: str

    @property
    def id(self) -> str:
        return f"{self.format}-{self.precision}"

    @property
    def spec(self) -> FormatSpec:
        return FORMATS[self.format]


def bundle_targets() -> str:
    """The default ``--targets`` of a bundle: every format at its default precision."""
    return ",".join(FORMATS)


def bench_targets() -> tuple[str, ...]:
    """What ``bench`` measures by default, as ``FORMAT:PRECISION``."""
    return tuple(f"{f.name}:{p}" for f in FORMATS.values() for p in f.bench_precisions)


def parse_targets(text: str, *, float_: bool = False) -> list[Target]:
    """``"ptl,onnx:float32,coreml:int8"`` -> targets. Raises ``ValueError`` with the accepted names.

    A target without ``:PRECISION`` gets its format's default (int8; Core ML float16), or its float
    precision with ``float_``."""
    targets: list[Target] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, precision = item.partition(":")
        spec = format_spec(name)
        if precision:
            precision = spec.precision_named(precision)
        else:
            precision = spec.float_precision if float_ else spec.default_precision
        target = Target(spec.name, precision)
        if target in targets:
            raise ValueError(f"target {target.id} is listed twice")
        targets.append(target)
    if not targets:
        raise ValueError(f"no targets given; e.g. --targets {bundle_targets()}")
    return targets
