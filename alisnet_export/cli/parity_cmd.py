"""``alisnet-export parity``: re-check shipped artifacts against the float model, as a CI gate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import click

from ._common import Reporter, json_option, pass_reporter
from .export_cmd import _THRESHOLD_OPTIONS, _thresholds

__all__ = ["COMMANDS"]


def _threshold_options(f):
    for name, typ, text in reversed(_THRESHOLD_OPTIONS):
        f = click.option(f"--{name.replace('_', '-')}", name, type=typ, default=None, help=text)(f)
    return f


@click.command("parity")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--reference", "reference_ckpt", type=click.Path(path_type=Path, dir_okay=False),
              help="The float checkpoint the artifacts must match (required).")
@click.option("--config", help="Config of the reference checkpoint (default: stored in it / inferred).")
@click.option("--images", type=click.Path(path_type=Path), multiple=True,
              help="Photos (files, folders, or a named set: samples, testbed:heldout[:N]). Default: the reference "
                   "checkpoint's parity set (models/zoo.json; the built-in samples for other checkpoints).")
@click.option("--height", type=click.IntRange(64, 4096), help="Input height (default: the manifest's, else 1024).")
@click.option("--no-person-crops", is_flag=True, help="Whole photos only (default adds a person crop per photo).")
@click.option("--precision", type=click.Choice(["float32", "float16", "int8", "int8-weights", "palettized4-weights"]),
              help="Gates to apply to an artifact that has no manifest beside it.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write JUnit XML: one testcase per image x gate.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write report.md, report.html and overlay PNGs of the worst images into this folder.")
@click.option("--worst", default=3, show_default=True, type=click.IntRange(0, 50), help="Overlay pictures per artifact.")
@_threshold_options
@json_option
@pass_reporter
def parity_command(target: Path, reference_ckpt: Optional[Path], config: Optional[str], images, height, no_person_crops,
                   precision, junit_path, report_dir, worst, as_json, reporter: Reporter, **gates: Any) -> int:
    """Check that TARGET still computes what the float model computes.

    \b
    TARGET: an artifact (.ptl, .pte, .onnx, .mlpackage), a NAME.manifest.json, or a bundle folder.
    Each artifact gets the photos preprocessed the way its manifest tells an app to, the reference
    model the way its config says. Gates per precision (see README, "Parity gates"); the exit code
    is 0 only when every gate of every artifact that can run here passes (1 otherwise). Artifacts
    whose runtime cannot run on this platform (Core ML off macOS) are reported as skipped.
    """
    from ..errors import DataError
    from .. import api
    from ..verify.recheck import all_passed, foreign_checkpoint

    if reference_ckpt is None:
        raise DataError("missing --reference CKPT: parity needs the float checkpoint the artifacts must match")
    plan = api.plan_recheck(target, reference=reference_ckpt, config=config, images=images, height=height,
                            person_crops=not no_person_crops, precision=precision)
    for t in plan.targets:
        recorded = foreign_checkpoint(t, plan.loaded.sha256)
        if recorded:
            reporter.line(f"warning: {t.name} was exported from a checkpoint with sha256 {recorded[:12]}..., "
                          f"not {reference_ckpt} ({plan.loaded.sha256[:12]}...)", fg="yellow")
    results = [_check(reporter, t, plan, gates, keep_masks=report_dir is not None) for t in plan.targets]
    files = _write_files(reporter, results, plan, junit_path, report_dir, worst,
                         context={"reference": f"{reference_ckpt} ({plan.loaded.config.name}, sha256 "
                                               f"{plan.loaded.sha256[:12]}...)",
                                  "target": str(target), "height": str(plan.height), "images": str(len(plan.inputs))})
    passed = all_passed(results)
    reporter.line("")
    reporter.line(f"parity {'PASSED' if passed else 'FAILED'}: {sum(r.passed for r in results)} passed, "
                  f"{sum(1 for r in results if not r.passed and not r.skipped)} failed, "
                  f"{sum(1 for r in results if r.skipped)} skipped", fg="green" if passed else "red", bold=True)
    reporter.result({"ok": passed, "reference": str(reference_ckpt), "height": plan.height,
                     "results": [r.to_dict() for r in results], "files": files})
    return 0 if passed else 1


def _check(reporter: Reporter, target: Any, plan: Any, gates: dict[str, Any], *, keep_masks: bool) -> Any:
    """Re-check one artifact with a progress bar, and print its result."""
    from tqdm import tqdm

    from ..verify.recheck import check_target

    reporter.line(f"checking {target.path} ({target.format}, {target.precision})", bold=True)
    bar = tqdm(total=len(plan.inputs), desc=target.name, unit="image", file=sys.stderr, leave=False)
    result = check_target(target, plan.reference, plan.loaded.config, plan.inputs,
                          thresholds=_thresholds(target.precision, gates), progress=lambda n: bar.update(1),
                          keep_masks=keep_masks)
    bar.close()
    _print_result(reporter, result)
    return result


def _write_files(reporter: Reporter, results: list, plan: Any, junit_path: Optional[Path], report_dir: Optional[Path],
                 worst: int, *, context: dict[str, str]) -> dict[str, str]:
    """--junit and --report: the files written, by kind."""
    from ..verify.reports import denormalize, write_junit, write_reports

    reports = [r.report for r in results if r.report is not None]
    files: dict[str, str] = {}
    if junit_path:
        write_junit(junit_path, reports)
        files["junit"] = str(junit_path)
    if report_dir:
        cfg = plan.loaded.config
        pictures = {n: denormalize(x, cfg.input.mean, cfg.input.std) for n, x in plan.inputs}
        context = {**context, **{f"skipped {r.target.name}": r.skipped for r in results if r.skipped}}
        paths = write_reports(report_dir, reports, pictures, context=context, worst=worst)
        files.update({k: str(v) for k, v in paths.items()})
        reporter.line(f"report: {paths['html']}")
    return files


def _print_result(reporter: Reporter, result) -> None:
    if result.skipped:
        reporter.line(f"  skipped: {result.skipped}", fg="yellow")
        return
    for problem in result.integrity:
        reporter.line(f"  {problem}", fg="red")
    from ..parity import describe_logits

    s = result.report.summary()
    verdict = "passed" if result.passed else "FAILED"
    reporter.line(f"  {verdict}: mask IoU mean {s['mean_iou']:.4f} (min {s['min_iou']:.4f}), boundary "
                  f"{s['mean_boundary_px']:.2f} px mean / {s['max_boundary_p95_px']:.1f} px p95, "
                  f"{describe_logits(s)}, width drift <= {s['max_width_drift_px']} px",
                  fg=None if result.passed else "red")
    for failure in result.report.failures[:8]:
        reporter.line(f"    {failure.describe()}", fg="red")
    from ..parity import uncertainty_note

    note = uncertainty_note({m.name: m.float_uncertain_fraction for m in result.report.images
                             if m.float_uncertain_fraction is not None})
    if note:
        reporter.line(f"  note: {note}", fg="yellow")

COMMANDS = [parity_command]
