"""``alisnet-export bundle``: every format in one folder with one manifest, golden file, tests and a zip."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import click

from ..formats import FORMATS, bundle_targets

from ._common import Reporter, check_multiple_of_32, human_size, json_option, model_options, pass_reporter, resolve_checkpoint
from .export_cmd import _THRESHOLD_OPTIONS, _thresholds

__all__ = ["bundle_command", "COMMANDS"]


def _threshold_options(f):
    for name, typ, text in reversed(_THRESHOLD_OPTIONS):
        f = click.option(f"--{name.replace('_', '-')}", name, type=typ, default=None,
                         help=text + " Applies to every target.")(f)
    return f


def _parse_targets_option(ctx: click.Context, param: click.Parameter, value: str):
    from ..formats import parse_targets

    try:
        return parse_targets(value, float_=bool(ctx.params.get("float_")))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("bundle")
@model_options
@click.option("--float", "float_", is_flag=True, is_eager=True,
              help="Float artifacts: fp32 .ptl/.pte/.onnx (Core ML is fp16 either way).")
@click.option("--targets", default=bundle_targets(), show_default=True, callback=_parse_targets_option,
              metavar="TARGET[:PRECISION],...",
              help="Formats to export, each at its default precision (int8; Core ML fp16) or --float, or an explicit "
                   "one: ptl:float32, onnx:int8, coreml:int8 (int8 weights), coreml:palettize4.")
@click.option("--height", default=1024, show_default=True, type=click.IntRange(64, 4096),
              help="Input height for parity (multiple of 32; the paper uses 1024).")
@click.option("--images", type=click.Path(path_type=Path), multiple=True,
              help="Photos (files, folders, or a named set: samples, testbed:heldout[:N]) for the parity check. "
                   "Default: the checkpoint's parity set (models/zoo.json; the built-in samples for other checkpoints).")
@click.option("--calibration-images", type=click.Path(path_type=Path), multiple=True,
              help="int8 targets: calibration images (files, folders, or samples / testbed:calibration[:N]). Default: "
                   "the checkpoint's own calibration set, never the parity images.")
@click.option("--calibration-height", type=click.IntRange(64, 4096), default=None,
              help="int8 targets: height the calibration images are resized to. Default: --height (ranges seen at a "
                   "smaller size clip at the larger one).")
@click.option("--no-person-crops", is_flag=True,
              help="Parity on whole photos only (default adds a person crop per photo, as the paper preprocesses).")
@_threshold_options
@click.option("--output", "-o", "output", type=click.Path(path_type=Path),
              help="The bundle folder (must not exist or be empty); NAME.zip is written beside it. "
                   "Default: out/bundle/VARIANT.")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder and zip.")
@json_option
@pass_reporter
def bundle_command(reporter: Reporter, ckpt: Optional[Path], config: Optional[str], no_pointrend: bool, float_: bool,
                   targets, height: int, images: tuple[Path, ...], calibration_images: tuple[Path, ...],
                   calibration_height: Optional[int],
                   no_person_crops: bool, output: Optional[Path], force: bool, as_json: bool,
                   **thresholds: Any) -> int:
    """Export CKPT to several formats at once into one bundle folder (+ NAME.zip) an app team can take.

    \b
    The folder holds each artifact and its parity report, ONE manifest.json listing them all, ONE
    golden.algv (logits.<artifact id> per artifact), summary.json (every target's outcome) and a
    runtime-only pytest suite (`pytest BUNDLE/`). The float model and the parity photos are prepared
    once for all targets. A target that fails does not stop the others. Exit code: 0 all passed
    (Core ML on Linux: parity not_run, counted as passed with a note), 1 a parity gate failed,
    4 an export failed.
    """
    import time

    from .. import api
    from ..bundle.build import check_bundle_writable
    from ..checkpoint import load_checkpoint

    calibration_height = calibration_height or height
    check_multiple_of_32(("--height", height), ("--calibration-height", calibration_height))
    if output is not None:
        check_bundle_writable(output, force)  # fail before any work
    start = time.perf_counter()
    loaded = load_checkpoint(resolve_checkpoint(ckpt), config, pointrend=False if no_pointrend else None)
    folder = output if output is not None else Path("out/bundle") / loaded.config.name
    check_bundle_writable(folder, force)
    reporter.line(f"alisnet-export bundle: {loaded.config.name} from {loaded.path} ({loaded.source_format}"
                  f"{', QAT' if loaded.is_qat else ''}) -> {', '.join(t.id for t in targets)}", bold=True)
    session = api.prepare(loaded, images=images, calibration_images=calibration_images, height=height,
                          calibration_height=calibration_height, person_crops=not no_person_crops,
                          calibrate=any(t.precision == "int8" for t in targets),
                          log=lambda m: reporter.line(m, fg="yellow"))
    bar, on_target, progress = _progress(len(targets))
    outcome = api.bundle(
        session, targets, folder, force=force, thresholds=lambda precision: _thresholds(precision, thresholds),
        command=" ".join(shlex.quote(a) for a in ["alisnet-export", *sys.argv[1:]]),
        log=lambda m: bar.write(f"  {m}", file=reporter.stream), on_target=on_target, progress=progress,
    )
    bar.update(bar.total - bar.n)
    bar.close()
    _print_summary(reporter, outcome, time.perf_counter() - start)
    reporter.result(_result(outcome, time.perf_counter() - start))
    return outcome.exit_code


def _progress(targets: int):
    """A progress bar over the targets, and the two callbacks :func:`api.bundle` reports through."""
    from tqdm import tqdm

    bar = tqdm(total=targets, desc="bundle", unit="target", file=sys.stderr, leave=False)
    done: list[str] = []

    def on_target(target, stage: str) -> None:
        if stage == "export" and done:
            bar.update(1)
        if stage == "export":
            done.append(target.id)
        bar.set_postfix_str(f"{target.id}: {stage}")

    def progress(image_name: str) -> None:
        bar.set_postfix_str(f"{done[-1] if done else ''}: parity {image_name}")

    return bar, on_target, progress


def _result(outcome, seconds: float) -> dict[str, Any]:
    """The ``--json`` result of a bundle."""
    written = outcome.zip_path is not None
    return {
        "ok": outcome.exit_code == 0,
        "exit_code": outcome.exit_code,
        "bundle": str(outcome.folder) if written else None,
        "zip": str(outcome.zip_path) if written else None,
        "manifest": str(outcome.folder / "manifest.json") if written else None,
        "golden": str(outcome.folder / "golden.algv") if written else None,
        "tests": str(outcome.folder / "tests") if written else None,
        "targets": [r.to_dict(outcome.folder) for r in outcome.results],
        "seconds": round(seconds, 2),
    }


def _verdict(result) -> str:
    if result.status == "error":
        return "EXPORT FAILED"
    if result.status == "not_run":
        return "not run (see note)"
    return result.status.upper()


def _numbers(result) -> str:
    if result.record is None or result.record.report is None:
        return "-"
    s = result.record.report.summary()
    text = f"IoU {s['mean_iou']:.4f}  max|dlogit| {s['max_abs_logit']:.3g}"
    if "max_abs_logit_outside_ties" in s:
        text += f" ({s['max_abs_logit_outside_ties']:.2g} outside ties)"
    return text


def _print_summary(reporter: Reporter, outcome, seconds: float) -> None:
    rows = [("target", "precision", "size", "parity", "mean IoU / max|dlogit|", "time")]
    for r in outcome.results:
        size = human_size(r.record.entry["size_bytes"]) if r.record is not None else "-"
        rows.append((r.target.format, r.target.precision, size, _verdict(r), _numbers(r), f"{r.seconds:.1f} s"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    reporter.line("")
    for i, row in enumerate(rows):
        color = {"EXPORT FAILED": "red", "FAILED": "red"}.get(row[3]) if i else None
        reporter.line("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)), fg=color, bold=i == 0)
    for r in outcome.results:
        if r.status == "error":
            reporter.line(f"  {r.target.id}: {r.error}", fg="red")
        elif r.status == "failed":
            reporter.line(f"  {r.target.id}: PARITY FAILED, marked 'failed' in the manifest; it must not ship:", fg="red")
            for failure in r.record.report.failures[:4]:
                reporter.line(f"    {failure.describe()}", fg="red")
        elif r.status == "not_run":
            why = (r.record.not_run_reason or "").split(" (")[0].split(";")[0]
            reporter.line(f"  {r.target.id}: parity not run here ({why}); package checks recorded in the manifest "
                          f"(parity.checked_instead). Run `alisnet-export parity BUNDLE --reference CKPT` on a Mac.")
    reporter.line("")
    if outcome.zip_path is None:
        reporter.line("No artifact was produced: nothing was written.", fg="red", bold=True)
        return
    reporter.line(f"Bundle: {outcome.folder}/ (manifest.json, golden.algv, summary.json, tests/) and "
                  f"{outcome.zip_path} ({human_size(outcome.zip_path.stat().st_size)}), {seconds:.1f} s")
    reporter.line("Next steps:")
    reporter.line(f"  pytest {outcome.folder}/   # the runtime-only parity suite that travels with the bundle")
    specs = [FORMATS[f] for f in FORMATS if any(r.record is not None and r.target.format == f for r in outcome.results)]
    android = [s.name for s in specs if "android" in s.harnesses]
    ios = [s.suffix for s in specs if "ios" in s.harnesses]
    if android:
        reporter.line(f"  copy {outcome.folder}/ into android_harness/ (flavor {' or '.join(android)}; see its README) "
                      "for the on-device self-check")
    if ios:
        reporter.line(f"  copy {outcome.folder}/ into ios_harness/ ({', '.join(ios)}; see its README) "
                      "for the on-device self-check")
    for spec in specs:
        if not spec.harnesses:
            reporter.line(f"  {spec.suffix}: {spec.runtime_hint}")


COMMANDS = [bundle_command]
