"""``alisnet-export onnx``: ONNX (int8 QDQ by default, or float) for ONNX Runtime, gated on parity."""

from __future__ import annotations

from typing import Any, Optional

import click

from ._common import Reporter, model_options, parse_hw, pass_reporter
from .export_cmd import _common_kwargs, export_options, keep_float_options, keep_float_spec, no_equalize_option, run_export

__all__ = ["onnx_command", "parse_size", "COMMANDS"]


#: the old name, kept for callers
parse_size = parse_hw


@click.command("onnx")
@model_options
@click.option("--float", "float_", is_flag=True, help="Export fp32 instead of int8.")
@click.option("--opset", type=click.IntRange(18, 21), default=18, show_default=True,
              help="ONNX opset (the dynamo exporter needs 18 or newer; 18 runs on ONNX Runtime >= 1.14).")
@click.option("--min-size", metavar="HxW", help="Smallest input the artifact accepts (multiples of 32). Default: 64x64.")
@click.option("--max-size", metavar="HxW", help="Largest input the artifact accepts (multiples of 32). Default: 4096x4096.")
@click.option("--per-tensor", is_flag=True, help="int8: one weight scale per tensor instead of per output channel.")
@click.option("--ort", "ort_format", is_flag=True,
              help="Write the ORT format (.ort) for ONNX Runtime Mobile / minimal builds instead of .onnx.")
@click.option("--activation-bits", type=click.Choice(["8", "16"]), default="8", show_default=True,
              help="int8: activation precision. 16: uint16 activations with int8 weights (W8A16 QDQ; the model is "
                   "raised to opset 21): finer activation rounding, same size, but ONNX Runtime has no 16-bit conv "
                   "kernels, so convs compute in float between 16-bit quantize/dequantize and run slower than with 8.")
@keep_float_options("--size-budget", ".onnx")
@no_equalize_option
@export_options
@pass_reporter
def onnx_command(reporter: Reporter, float_: bool, opset: int, min_size: Optional[str], max_size: Optional[str],
                 per_tensor: bool, ort_format: bool, activation_bits: str, keep_float: Optional[str],
                 size_budget_mb: Optional[float], auto_candidates: int, no_equalize: bool, **kwargs: Any) -> int:
    """Export CKPT to ONNX (int8 QDQ by default) for ONNX Runtime and gate it on parity.

    \b
    int8: ONNX Runtime static quantization (QDQ) of the convolutions, calibrated on photos; the
    PointRend point geometry stays float. The input is `image` (1x3xHxW, H and W dynamic multiples
    of 32), the output `logits`; the export metadata is in the model's metadata_props.
    Writes NAME.onnx (NAME.ort with --ort), NAME.manifest.json, NAME.parity.json and
    NAME.golden.algv into --output.
    """
    from ..exporters.base import SizeBounds
    from ..exporters.onnx import OnnxExporter, OnnxOptions

    if activation_bits != "8" and float_:
        raise click.UsageError("--activation-bits applies to int8 (with --float activations are float)")
    exporter = OnnxExporter(OnnxOptions(opset=opset, per_channel=not per_tensor, equalize=not no_equalize,
                                        ort_format=ort_format, activation_bits=int(activation_bits),
                                        keep_float=keep_float_spec(keep_float, float_, auto_candidates, size_budget_mb,
                                                                   "--size-budget")))
    bounds = None
    if min_size or max_size:
        default = exporter.default_bounds
        bounds = SizeBounds(min_hw=parse_hw(min_size, "--min-size") or default.min_hw,
                            max_hw=parse_hw(max_size, "--max-size") or default.max_hw)
    return run_export(exporter, reporter=reporter, precision="float32" if float_ else "int8", bounds=bounds,
                      **_common_kwargs(kwargs))


COMMANDS = [onnx_command]
