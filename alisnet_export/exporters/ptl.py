"""``.ptl``: TorchScript for the PyTorch lite interpreter (the paper's deployment).

int8 (default): eager QNNPACK quantization, converted from a QAT checkpoint when given one,
otherwise post-training calibration. float32: the float model as is, with its BatchNorms kept unless
``fold_batchnorm`` is asked for (folding changes float rounding, and PointRend's top-k point selection
turns that into a few differently refined pixels; unfolded, the .ptl is bit-exact with the eager
model). Either way the whole model is
*scripted* (not traced: the PointRend loop's point count depends on the input size), frozen,
passed through the mobile graph passes that work on these wheels, and saved for the lite
interpreter with metadata in ``_extra_files``.

``torch.utils.mobile_optimizer.optimize_for_mobile`` asserts on every x86 wheel of the pinned torch
("Mobile optimization only available with XNNPACK"), even with its XNNPACK pass blocklisted.
:func:`mobile_passes` runs the rest of what it does: freezing (constant folding; conv-BN folding for int8 and ``--fold-bn``),
dropout removal, add+ReLU fusion, common-subexpression elimination, peephole. The one gap: float
conv/linear weights are not pre-packed into XNNPACK ops (``prepacked::conv2d_clamp_run``), so a
float .ptl packs weights on each call on the phone; int8 .ptl is unaffected (QNNPACK packs its
weights when the model loads).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.jit.mobile
from torch import nn

from ..errors import ExportError
from ..quantize import eager
from ..quantize.keep_float import KeepFloat, keep_float_for_export
from .base import ArtifactInfo, Exporter, ExportJob, ExportOptions, SizeBounds

__all__ = ["PtlExporter", "PtlOptions", "lite_size_bytes", "mobile_passes", "script_for_lite", "ops_yaml", "LITE_RUNTIMES"]

#: the last published lite runtimes; both read bytecode v8 (and v7)
LITE_RUNTIMES = {
    "android": "org.pytorch:pytorch_android_lite:1.13.1",
    "ios": "LibTorch-Lite (CocoaPods) 1.13.0.1",
}
MOBILE_PASSES = ("freeze", "remove_dropout", "fuse_add_relu", "fuse_quantized_add_relu", "cse", "peephole")


def mobile_passes(frozen: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The parts of ``optimize_for_mobile`` that run without XNNPACK, on a frozen module, in place."""
    torch._C._jit_pass_remove_dropout(frozen._c)
    graph = frozen.graph
    torch._C._jit_pass_fuse_add_relu(graph)
    torch._C._jit_pass_fuse_quantized_add_relu(graph)
    torch._C._jit_pass_cse(graph)
    torch._C._jit_pass_peephole(graph)
    return frozen


def script_for_lite(model: nn.Module, *, fold_batchnorm: bool = True) -> torch.jit.ScriptModule:
    """Script (not trace), freeze and optimise ``model`` for the lite interpreter.

    ``fold_batchnorm=False`` freezes without the passes that change rounding (conv-BN, conv-add and
    conv-mul folding: ``optimize_numerics=False``), so a float model computes bit for bit what the
    eager model computes. That matters for PointRend: its top-k point selection turns a 1e-6 change
    of a near-tied uncertainty into a different refined point, i.e. a logit change of ~0.1-0.3.
    """
    try:
        scripted = torch.jit.script(model.eval())
    except Exception as exc:  # TorchScript errors are long; keep the first lines
        raise ExportError(f"TorchScript could not compile the model: {str(exc).splitlines()[0]}") from exc
    return mobile_passes(torch.jit.freeze(scripted, optimize_numerics=fold_batchnorm))


def lite_size_bytes(model: nn.Module) -> int:
    """The size of ``model`` saved as a lite-interpreter .ptl, the way the .ptl exporter saves it."""
    module = script_for_lite(model, fold_batchnorm=True)
    buffer = module._save_to_buffer_for_lite_interpreter()
    return len(buffer) if isinstance(buffer, (bytes, bytearray)) else len(io.BytesIO(buffer).getvalue())


def ops_yaml(operators: list[str], header: str) -> str:
    """The operator list as a selective-build YAML (a list of root operators)."""
    lines = [f"# {line}" for line in header.splitlines()]
    return "\n".join(lines + [f"- {op}" for op in sorted(operators)]) + "\n"


@dataclass(frozen=True)
class PtlOptions(ExportOptions):
    """``.ptl`` export options (the ``ptl`` command's flags)."""

    bytecode_version: int = 8  # 7 backports for app runtimes older than PyTorch 1.11
    per_channel: bool = True  # int8: one weight scale per output channel
    quantize_point_head: bool = True  # int8: PointRend's point MLP in int8 too
    fold_batchnorm: bool = False  # float32: fold BN into the convs (changes float rounding)
    equalize: bool = True  # int8 PTQ: activation-range equalization first
    keep_float: Optional[KeepFloat] = None  # int8: layers kept in float (mixed precision)

    def __post_init__(self) -> None:
        if self.bytecode_version not in (7, 8):
            raise ExportError(f"bytecode version {self.bytecode_version}: choose 7 or 8")
        try:
            object.__setattr__(self, "keep_float", KeepFloat.coerce(self.keep_float))
        except (TypeError, ValueError) as exc:
            raise ExportError(f"keep_float: {exc}") from None

    def eager(self) -> eager.EagerQuantOptions:
        return eager.EagerQuantOptions(per_channel=self.per_channel, quantize_point_head=self.quantize_point_head)


class PtlExporter(Exporter):
    format = "ptl"
    options_class = PtlOptions
    default_bounds = SizeBounds(min_hw=(64, 64), max_hw=(4096, 4096), min_pixels=0)

    @property
    def sidecar_suffixes(self) -> tuple[str, ...]:
        return (".ops.yaml",)

    def export(self, job: ExportJob, dest: Path) -> ArtifactInfo:
        self.check_precision(job.precision)
        opts: PtlOptions = self.options
        # a QAT checkpoint fixed how it is quantized: its own options, not this export's
        options = (eager.EagerQuantOptions(**job.qat_info.get("options", {})) if job.qat_model is not None
                   else opts.eager())
        quantization: dict[str, Any]
        if job.precision == "int8":
            if job.qat_model is not None:
                job.log("converting the QAT checkpoint's fake-quantized model to int8 (QNNPACK)")
                model = eager.convert(job.qat_model)
                quantization = {"scheme": "eager-qat", "backend": eager.ENGINE,
                                **{k: v for k, v in job.qat_info.items() if k != "options"}}
            else:
                inputs = job.calibration_inputs()
                job.log(f"post-training calibration on {len(inputs)} images (no QAT checkpoint given)")
                source, equalization = job.quantization_source(inputs, equalize=opts.equalize)
                prepared = eager.prepare(source, qat=False, options=options)
                eager.calibrate(prepared, inputs)
                model = eager.convert(prepared)
                quantization = {"scheme": "eager-ptq", "backend": eager.ENGINE, "equalization": equalization,
                                "calibration": {"images": len(inputs), **job.calibration_info}}
            model, keep_float = keep_float_for_export(
                job, opts.keep_float, job.reference if job.qat_model is not None else source, model,
                size_bytes=lite_size_bytes)
            if keep_float is not None:  # --keep-float: these layers run float between dequantize/quantize
                quantization["keep_float"] = keep_float
            quantization.update(options.to_dict())
            quantization.update(eager.describe_quantization(model))
            fold = True  # int8: BatchNorm is already fused into the quantized convs
        else:
            model = job.reference
            quantization = {"scheme": "none"}
            fold = opts.fold_batchnorm
        job.log("scripting and freezing the whole model, PointRend loop included"
                + ("" if fold else " (BatchNorm kept: bit-exact with the eager float model)"))
        module = script_for_lite(model, fold_batchnorm=fold)
        extra = {"alisnet/metadata.json": json.dumps(job.metadata, indent=1)}
        version = opts.bytecode_version
        if version == 8:
            module._save_for_lite_interpreter(str(dest), _extra_files=extra)
        else:
            staged = dest.with_name(dest.name + ".v8")
            try:
                module._save_for_lite_interpreter(str(staged), _extra_files=extra)
                if not torch.jit.mobile._backport_for_mobile(str(staged), str(dest), version):
                    raise ExportError(f"torch could not backport the .ptl to bytecode version {version}")
            finally:
                staged.unlink(missing_ok=True)
        written = torch.jit.mobile._get_model_bytecode_version(str(dest))
        operators = sorted(torch.jit.mobile._export_operator_list(torch.jit.mobile._load_for_lite_interpreter(str(dest))))
        runtime = {
            "kind": "pytorch-lite",
            "bytecode_version": written,
            "min_runtime": LITE_RUNTIMES,
            "quantized_engine": eager.ENGINE if job.precision == "int8" else None,
            **({"requirement": (f"set torch.backends.quantized.engine = '{eager.ENGINE}' before loading: this int8 "
                                "model is calibrated for QNNPACK (quint8 0..255, no reduce_range); under x86/fbgemm, "
                                "torch's default on desktops, it returns wrong masks without an error")}
               if job.precision == "int8" else {}),
            "operators": operators,
            "op_list_file": f"{job.name or dest.stem}.ops.yaml",
            "mobile_passes": list(MOBILE_PASSES) + (["fold_conv_batchnorm"] if fold else []),
            "not_applied": "XNNPACK weight prepacking (optimize_for_mobile needs an XNNPACK-enabled torch build)",
        }
        header = (f"Root operators of the {job.precision} .ptl (bytecode v{written}) for a selective-build "
                  "PyTorch lite runtime.\nGenerated by alisnet-export with torch.jit.mobile._export_operator_list.")
        return ArtifactInfo(job.precision, quantization, runtime, sidecars={".ops.yaml": ops_yaml(operators, header)})
