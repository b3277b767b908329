"""``alisnet-export quant-report``: where int8 loses the silhouette, per layer (thin: parse, call, print)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from ._common import Reporter, check_multiple_of_32, json_option, model_options, output_options, pass_reporter

__all__ = ["quant_report_command", "COMMANDS"]


@click.command("quant-report")
@model_options
@click.option("--targets", default="ptl", show_default=True, metavar="ptl[,pte,onnx]",
              help="int8 paths to debug, one report section each: ptl (eager QNNPACK), pte (PT2E, XNNPACK "
                   "quantizer), onnx (ONNX Runtime QDQ).")
@click.option("--images", type=click.Path(path_type=Path), multiple=True,
              help="Photos (files, folders, or samples / testbed:heldout[:N]) to measure on. Default: the checkpoint's "
                   "parity set (models/zoo.json).")
@click.option("--calibration-images", type=click.Path(path_type=Path), multiple=True,
              help="Images for post-training calibration (as `ptl`). Default: the checkpoint's calibration set, "
                   "never the images measured on.")
@click.option("--height", default=1024, show_default=True, type=click.IntRange(64, 4096),
              help="Input height (multiple of 32).")
@click.option("--calibration-height", type=click.IntRange(64, 4096), default=None,
              help="Height of the calibration images. Default: --height.")
@click.option("--top-k", type=click.IntRange(0, 500), default=8, show_default=True,
              help="How many layers (lowest isolated SQNR first) to attribute in mask IoU / contour px.")
@click.option("--no-reverse", is_flag=True, help="Skip the reverse attribution (only that layer in int8), every target.")
@click.option("--no-person-crops", is_flag=True, help="Whole photos only (default adds a person crop per photo).")
@click.option("--no-equalize", is_flag=True, help="Quantize without activation-range equalization (as `ptl --no-equalize`).")
@output_options("out/quant-report")
@json_option
@pass_reporter
def quant_report_command(reporter: Reporter, ckpt: Optional[Path], config: Optional[str], no_pointrend: bool,
                         targets: str, images: tuple[Path, ...], calibration_images: tuple[Path, ...], height: int,
                         calibration_height: Optional[int], top_k: int, no_reverse: bool, no_person_crops: bool,
                         no_equalize: bool, output: Path, force: bool, as_json: bool) -> int:
    """Per-layer int8 error and its cost in mask IoU and contour pixels, per int8 path (--targets).

    \b
    Quantizes CKPT as `alisnet-export ptl` / `pte` / `onnx` do (same calibration and equalization), then,
    per target: SQNR and relative L2 of every quantized layer vs the float model (graph order; pte:
    torchao's PT2E numeric debugger, onnx: ONNX Runtime's qdq_loss_debug); for the worst --top-k layers
    the mask IoU / contour distance with that layer alone float (and only it int8); the float model's
    own uncertainty per image (share of its mask with |fg - bg| < 1, and where).
    Writes report.json, report.html, one layers plot per target and PNG pictures into --output.
    Exit 0 when the report is written (the int8 gates' verdicts are in it).
    """
    from ..errors import DataError
    from ..pipeline import check_writable
    from ..quant_report import load_float_checkpoint, parse_targets, report_files, run_quant_report

    try:
        wanted = parse_targets(targets)
    except DataError as exc:
        raise click.UsageError(str(exc)) from None
    calibration_height = calibration_height or height
    check_multiple_of_32(("--height", height), ("--calibration-height", calibration_height))
    check_writable([output / f for f in report_files(wanted)], force)
    loaded = load_float_checkpoint(ckpt, config, pointrend=False if no_pointrend else None)
    reporter.line(f"alisnet-export quant-report: {loaded.config.name} from {loaded.path} at {height} px, "
                  f"{','.join(wanted)} -> {output}", bold=True)
    report, paths = run_quant_report(loaded, output, targets=wanted, images=images, calibration_images=calibration_images,
                                     height=height, calibration_height=calibration_height, top_k=top_k,
                                     reverse=not no_reverse, person_crops=not no_person_crops, equalize=not no_equalize,
                                     log=lambda m: reporter.line(f"  {m}"),
                                     warn=lambda m: reporter.line(f"warning: {m}", fg="yellow"))
    for target, section in report["targets"].items():
        _print_summary(reporter, target, section)
    _print_footer(reporter, report, paths)
    first = report["targets"][wanted[0]]
    pick = ("int8", "worst_layers", "attribution")
    reporter.result({"ok": True, **{k: report[k] for k in ("checkpoint", "variant", "height", "images", "seconds")},
                     **{k: first[k] for k in pick}, "uncertainty": report["uncertainty"],
                     "targets": {t: {k: sec[k] for k in pick} for t, sec in report["targets"].items()},
                     "files": {k: str(p) for k, p in paths.items()}})
    return 0


def _print_summary(reporter: Reporter, target: str, section: dict[str, Any]) -> None:
    s = section["int8"]
    reporter.line("")
    reporter.line(f"{target} int8: mask IoU mean {s['mean_iou']:.4f} (min {s['min_iou']:.4f}), contour "
                  f"{s['mean_boundary_px']:.2f} px, gate {'passed' if s['passed'] else 'FAILED'}")
    if "a16w8" in section:
        a = section["a16w8"]
        reporter.line(f"{target} with 16-bit activations (same int8 weights): mask IoU mean {a['mean_iou']:.4f} "
                      f"(min {a['min_iou']:.4f}), contour {a['mean_boundary_px']:.2f} px")
    reporter.line("worst layers (isolated SQNR) and the IoU they recover alone in float:")
    for a in section["attribution"]:
        only = "" if a["only_int8_mean_iou"] is None else f"; only it int8: IoU {a['only_int8_mean_iou']:.4f}"
        sqnr = a["local_sqnr_db"] if a["local_sqnr_db"] is not None else float("nan")
        reporter.line(f"  {a['name']:<40} {sqnr:6.1f} dB  float alone: IoU {a['keep_float_mean_iou']:.4f} "
                      f"({a['iou_recovered']:+.4f}), {a['keep_float_boundary_px']:.2f} px{only}")


def _print_footer(reporter: Reporter, report: dict[str, Any], paths: dict[str, Path]) -> None:
    if report["uncertainty"]["note"]:
        reporter.line("")
        reporter.line(report["uncertainty"]["note"], fg="yellow")
    reporter.line("")
    reporter.line(f"report: {paths['html']} ({report['seconds']:.0f} s)")


COMMANDS = [quant_report_command]
