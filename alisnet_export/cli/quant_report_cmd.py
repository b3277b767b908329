"""``alisnet-export quant-report``: where int8 loses the silhouette, per layer (thin: parse, call, print)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from ._common import Reporter, check_multiple_of_32, json_option, model_options, output_options, pass_reporter

__all__ = ["quant_report_command", "COMMANDS"]

SUPPORTED_TARGETS = ("ptl",)
PLANNED_TARGETS = ("pte", "onnx")


@click.command("quant-report")
@model_options
@click.option("--targets", default="ptl", show_default=True, metavar="ptl[,onnx,pte]",
              help="int8 paths to debug. Only ptl (eager QNNPACK) is implemented so far.")
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
@click.option("--no-reverse", is_flag=True, help="Skip the reverse attribution (only that layer in int8).")
@click.option("--no-person-crops", is_flag=True, help="Whole photos only (default adds a person crop per photo).")
@click.option("--no-equalize", is_flag=True, help="Quantize without activation-range equalization (as `ptl --no-equalize`).")
@output_options("out/quant-report")
@json_option
@pass_reporter
def quant_report_command(reporter: Reporter, ckpt: Optional[Path], config: Optional[str], no_pointrend: bool,
                         targets: str, images: tuple[Path, ...], calibration_images: tuple[Path, ...], height: int,
                         calibration_height: Optional[int], top_k: int, no_reverse: bool, no_person_crops: bool,
                         no_equalize: bool, output: Path, force: bool, as_json: bool) -> int:
    """Per-layer int8 error and its cost in mask IoU and contour pixels, for the int8 .ptl path.

    \b
    Quantizes CKPT as `alisnet-export ptl` does (QNNPACK, same calibration and equalization), then:
    SQNR and relative L2 of every quantized layer vs the float model (graph order); for the worst
    --top-k layers the mask IoU / contour distance with that layer alone float (and only it int8);
    the float model's own uncertainty per image (share of its mask with |fg - bg| < 1, and where).
    Writes report.json, report.html, layers.png and PNG pictures into --output.
    Exit 0 when the report is written (the int8 gate's verdict is in it).
    """
    from ..pipeline import check_writable
    from ..quant_report import REPORT_FILES, load_float_checkpoint, run_ptl_report

    _check_targets(targets)
    calibration_height = calibration_height or height
    check_multiple_of_32(("--height", height), ("--calibration-height", calibration_height))
    check_writable([output / f for f in REPORT_FILES], force)
    loaded = load_float_checkpoint(ckpt, config, pointrend=False if no_pointrend else None)
    reporter.line(f"alisnet-export quant-report: {loaded.config.name} from {loaded.path} at {height} px -> {output}",
                  bold=True)
    report, paths = run_ptl_report(loaded, output, images=images, calibration_images=calibration_images, height=height,
                                   calibration_height=calibration_height, top_k=top_k, reverse=not no_reverse,
                                   person_crops=not no_person_crops, equalize=not no_equalize,
                                   log=lambda m: reporter.line(f"  {m}"),
                                   warn=lambda m: reporter.line(f"warning: {m}", fg="yellow"))
    section = report["targets"]["ptl"]
    _print_summary(reporter, report, section, paths)
    reporter.result({"ok": True, **{k: report[k] for k in ("checkpoint", "variant", "height", "images", "seconds")},
                     "int8": section["int8"], "worst_layers": section["worst_layers"],
                     "attribution": section["attribution"], "uncertainty": report["uncertainty"],
                     "files": {k: str(p) for k, p in paths.items()}})
    return 0


def _check_targets(targets: str) -> None:
    """--targets: known names, and only the implemented ones."""
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in SUPPORTED_TARGETS + PLANNED_TARGETS]
    if unknown or not wanted:
        raise click.UsageError(f"--targets: unknown {', '.join(unknown) or '(none)'}; choose from ptl, onnx, pte")
    planned = [t for t in wanted if t in PLANNED_TARGETS]
    if planned:
        raise click.UsageError(f"--targets {','.join(planned)}: not implemented yet (only ptl); see CHANGELOG")


def _print_summary(reporter: Reporter, report: dict[str, Any], section: dict[str, Any], paths: dict[str, Path]) -> None:
    s = section["int8"]
    reporter.line("")
    reporter.line(f"ptl int8: mask IoU mean {s['mean_iou']:.4f} (min {s['min_iou']:.4f}), contour "
                  f"{s['mean_boundary_px']:.2f} px, gate {'passed' if s['passed'] else 'FAILED'}")
    reporter.line("worst layers (isolated SQNR) and the IoU they recover alone in float:")
    for a in section["attribution"]:
        only = "" if a["only_int8_mean_iou"] is None else f"; only it int8: IoU {a['only_int8_mean_iou']:.4f}"
        reporter.line(f"  {a['name']:<40} {a['local_sqnr_db'] or float('nan'):6.1f} dB  float alone: IoU "
                      f"{a['keep_float_mean_iou']:.4f} ({a['iou_recovered']:+.4f}), {a['keep_float_boundary_px']:.2f} px{only}")
    if report["uncertainty"]["note"]:
        reporter.line("")
        reporter.line(report["uncertainty"]["note"], fg="yellow")
    reporter.line("")
    reporter.line(f"report: {paths['html']} ({report['seconds']:.0f} s)")


COMMANDS = [quant_report_command]
