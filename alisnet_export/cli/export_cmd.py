"""Export commands: one calling convention for every format (``ptl`` here; the others reuse it).

Each command: load the checkpoint (float or QAT), build the artifact, run it on CPU against the
float model on the same preprocessed photos, and write NAME.<ext>, NAME.manifest.json,
NAME.parity.json and NAME.golden.algv. Exit code 1 when a parity gate fails.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import click

from ._common import (Reporter, check_multiple_of_32, human_size, json_option, model_options, output_options, parse_hw,
                      pass_reporter, resolve_checkpoint)

__all__ = ["export_options", "run_export", "COMMANDS"]

_THRESHOLD_OPTIONS = [
    ("max_abs_logit", float, "Gate: max |logit difference| per image outside PointRend's tie zone (float default "
                             "1e-4; off for int8). The zone: pixels whose top-k point selection a difference this "
                             "small could flip; README, 'Parity gates'."),
    ("max_flip_fraction", float, "Gate: most pixels PointRend may refine differently (inside its tie zone), as a "
                                 "fraction of an image (float default 0.001)."),
    ("min_mean_iou", float, "Gate: mean mask IoU vs the float model (default 0.999 float, 0.99 int8)."),
    ("min_image_iou", float, "Gate: every image's mask IoU (default 0.999 float, 0.98 int8)."),
    ("max_mean_boundary_px", float, "Gate: mean contour distance in px (default 1.0 for int8)."),
    ("max_image_boundary_p95_px", float, "Gate: every image's 95th-percentile contour distance in px (int8: 4)."),
    ("max_width_drift_px", int, "Gate: silhouette width change at body heights, px (int8: 4)."),
]


def no_equalize_option(f: Callable) -> Callable:
    """``--no-equalize`` for the commands that quantize activations (ptl, pte, onnx)."""
    return click.option("--no-equalize", is_flag=True,
                        help="int8 post-training quantization: skip activation-range equalization (a rescaling of "
                             "BN-ReLU-conv chains that keeps the float function and evens out per-channel ranges "
                             "before per-tensor activation quantization; recorded in the manifest).")(f)


def keep_float_options(budget_flag: str, artifact: str) -> Callable[[Callable], Callable]:
    """``--keep-float LAYER,...|auto``, its size budget (``budget_flag``, in MB) and ``--auto-candidates``, for the
    int8 exporters (ptl, pte, onnx); :func:`keep_float_spec` reads them."""
    def decorate(f: Callable) -> Callable:
        f = click.option("--auto-candidates", type=click.IntRange(1, 200), default=8, show_default=True,
                         help="--keep-float auto: how many layers (lowest isolated SQNR first) to measure as "
                              "candidates.")(f)
        f = click.option(budget_flag, "size_budget_mb", type=float, default=None, metavar="MB",
                         help=f"--keep-float auto: the {artifact} size budget in MB. Default: 4.0 for "
                              "alisnet_mnasnet (the paper's), else the all-int8 size + 1.5.")(f)
        return click.option("--keep-float", "keep_float", metavar="LAYER,...|auto",
                            help="int8: leave these conv layers float (the rest stays int8). `auto`: add layers, most "
                                 f"helpful first, until the parity gate passes on the calibration images or {budget_flag} "
                                 "would be exceeded; each step and the reason are recorded in the manifest. Layer "
                                 "names: `alisnet-export quant-report`.")(f)
    return decorate


def keep_float_spec(text: Optional[str], float_: bool, candidates: int, size_budget_mb: Optional[float],
                    budget_flag: str) -> Optional[Any]:
    """The exporter's ``keep_float`` option from the flags of :func:`keep_float_options` (None: all int8); a
    usage error for a bad combination."""
    from ..quantize.keep_float import KeepFloat

    if text and float_:
        raise click.UsageError("--keep-float applies to int8 (with --float every layer is float)")
    if size_budget_mb is not None and (not text or text.strip() != "auto"):
        raise click.UsageError(f"{budget_flag} applies to --keep-float auto")
    if not text:
        return None
    try:
        return KeepFloat.parse(text, candidates=candidates,
                               max_size=None if size_budget_mb is None else int(size_budget_mb * 1e6))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def export_options(f: Callable) -> Callable:
    """Options every export command shares (images, height, gates, naming, output)."""
    for name, typ, text in reversed(_THRESHOLD_OPTIONS):
        f = click.option(f"--{name.replace('_', '-')}", name, type=typ, default=None, help=text)(f)
    f = click.option("--no-parity", is_flag=True, help="Skip the parity gate (the manifest says 'not_run'). For iteration only.")(f)
    f = click.option("--no-person-crops", is_flag=True,
                     help="Parity on whole photos only (default adds a person crop per photo, as the paper preprocesses).")(f)
    f = click.option("--height", default=1024, show_default=True, type=click.IntRange(64, 4096),
                     help="Input height for parity (multiple of 32; the paper uses 1024).")(f)
    f = click.option("--calibration-height", type=click.IntRange(64, 4096), default=None,
                     help="int8: height the calibration images are resized to. Default: --height. Calibrate at the "
                          "size the app runs: ranges seen at a smaller size clip at the larger one (demo .ptl at 1024 "
                          "px: mask IoU vs float 0.61 calibrated at 512, 0.76 at 1024).")(f)
    f = click.option("--calibration-images", type=click.Path(path_type=Path), multiple=True,
                     help="int8: images (files, folders, or a named set: samples, testbed:calibration[:N]) for "
                          "post-training calibration. Default: the checkpoint's own calibration set (models/zoo.json; "
                          "testbed:calibration for other checkpoints), never the parity images. Warns under 16 "
                          "images or when they overlap the parity images.")(f)
    f = click.option("--images", type=click.Path(path_type=Path), multiple=True,
                     help="Photos (files, folders, or a named set: samples, testbed:heldout[:N]) for the parity "
                          "check. Default: the checkpoint's parity set (models/zoo.json; the built-in public-domain "
                          "samples for other checkpoints).")(f)
    f = click.option("--name", help="Base name of the outputs. Default: VARIANT-PRECISION.")(f)
    f = output_options("out")(f)
    f = json_option(f)
    return f


def _thresholds(precision: str, overrides: dict[str, Any]):
    from ..api import thresholds_for

    return thresholds_for(precision, **overrides)


def run_export(
    exporter,
    *,
    reporter: Reporter,
    ckpt: Optional[Path],
    config: Optional[str],
    no_pointrend: bool,
    precision: str,
    output: Path,
    force: bool,
    name: Optional[str],
    images: tuple[Path, ...],
    calibration_images: tuple[Path, ...],
    calibration_height: Optional[int],
    height: int,
    no_person_crops: bool,
    no_parity: bool,
    thresholds: dict[str, Any],
    bounds=None,
) -> int:
    """The shared body of every single-format export command: parse, :func:`api.prepare`, :func:`api.export`, print."""
    import time

    from tqdm import tqdm

    from .. import api
    from .._io import check_writable
    from ..checkpoint import load_checkpoint
    from ..pipeline import single_export_paths

    calibration_height = calibration_height or height
    check_multiple_of_32(("--height", height), ("--calibration-height", calibration_height))
    exporter.check_precision(precision)
    start = time.perf_counter()
    loaded = load_checkpoint(resolve_checkpoint(ckpt), config, pointrend=False if no_pointrend else None)
    name = name or f"{loaded.config.name}-{precision}"
    check_writable(single_export_paths(exporter, output, name), force)  # fail before any work
    reporter.line(f"alisnet-export {exporter.format}: {loaded.config.name} from {loaded.path} ({loaded.source_format}"
                  f"{', QAT' if loaded.is_qat else ''}) -> {precision}", bold=True)
    session = api.prepare(loaded, images=images,
                          calibration_images=calibration_images, height=height, calibration_height=calibration_height,
                          person_crops=not no_person_crops, calibrate=precision == "int8",
                          log=lambda m: reporter.line(m, fg="yellow"))
    bar = tqdm(total=len(session.inputs), desc="parity", unit="image", file=sys.stderr, leave=False,
               disable=None if not no_parity else True)

    def progress(image_name: str) -> None:
        bar.set_postfix_str(image_name)
        bar.update(1)

    outcome = api.export(
        session, exporter, output, precision=precision, name=name, force=force,
        thresholds=_thresholds(precision, thresholds), run_parity=not no_parity, bounds=bounds,
        command=" ".join(shlex.quote(a) for a in ["alisnet-export", *sys.argv[1:]]),
        log=lambda m: reporter.line(f"  {m}"), progress=progress,
    )
    bar.close()
    _print_summary(reporter, exporter, outcome, time.perf_counter() - start)
    reporter.result(_result(exporter, precision, outcome))
    return 0 if outcome.passed else 1


def _result(exporter, precision: str, outcome) -> dict[str, Any]:
    """The ``--json`` result of an export."""
    record = outcome.record
    quantization = record.entry["quantization"]
    return {
        "ok": outcome.passed,
        "format": exporter.format,
        "precision": precision,
        "artifact": str(record.path),
        "size_bytes": record.entry["size_bytes"],
        "manifest": str(outcome.manifest_path),
        "golden": str(outcome.golden_path),
        "parity": record.entry["parity"],
        "quantization": quantization["scheme"],
        "export_seconds": record.export_seconds,
        "parity_seconds": record.parity_seconds,
        "files": {k: str(v) for k, v in record.files.items()},
        **({"keep_float": quantization["keep_float"]} if "keep_float" in quantization else {}),
    }


def _print_summary(reporter: Reporter, exporter, outcome, seconds: float) -> None:
    from ..formats import SCHEMES

    record, spec = outcome.record, exporter.spec
    entry = record.entry
    scheme = entry["quantization"]["scheme"]
    rows = spec.summary(entry["runtime"])
    detail = "".join(text for label, text in rows if not label)
    reporter.line("")
    reporter.table([
        ("artifact", f"{record.path}  {human_size(entry['size_bytes'])}{detail}"),
        ("precision", SCHEMES.get(scheme, scheme)),
        *[(label, text) for label, text in rows if label],
        ("parity", _parity_text(record)),
        ("also wrote", ", ".join([*(str(p.name) for k, p in record.files.items() if k != "artifact"),
                                  outcome.manifest_path.name, outcome.golden_path.name])),
        ("time", f"export {record.export_seconds:.1f} s, parity {record.parity_seconds:.1f} s, total {seconds:.1f} s"),
    ])
    if record.report is None and record.info.checks:
        reporter.line("")
        reporter.line(f"Parity was NOT run: {record.not_run_reason.split(' (')[0].split(';')[0]}. "
                      "The artifact was written but not compared with the float model here.", bold=True)
        reporter.line("Checked instead, without predicting (also in the manifest's parity.checked_instead):")
        for line in _checks_lines(record.info.checks):
            reporter.line(f"  {line}")
    if record.report is not None and not record.report.passed:
        reporter.line("")
        reporter.line(f"PARITY FAILED: {record.path.name} does not match the float model; it is marked 'failed' "
                      "in its manifest and must not ship.", fg="red", bold=True)
        for failure in record.report.failures[:8]:
            reporter.line(f"  {failure.describe()}", fg="red")
        return
    reporter.line("")
    reporter.line("Next steps:")
    reporter.line(f"  alisnet-export parity {record.path} --reference CKPT   # re-check it {spec.recheck_where}")
    reporter.line(f"  copy {record.path.name}, {outcome.manifest_path.name} and {outcome.golden_path.name} into "
                  f"your app; {spec.app_hint()}")


def _parity_text(record) -> str:
    from ..parity import describe_logits

    report = record.report
    if report is None:
        return f"NOT RUN: {record.not_run_reason or 'skipped'}"
    s = report.summary()
    verdict = "PASSED" if report.passed else "FAILED"
    return (f"{verdict}  {s['images']} images: mask IoU mean {s['mean_iou']:.4f} (min {s['min_iou']:.4f}), "
            f"boundary {s['mean_boundary_px']:.2f} px mean / {s['max_boundary_p95_px']:.1f} px p95, "
            f"{describe_logits(s)}, width drift <= {s['max_width_drift_px']} px")


def _checks_lines(checks: dict[str, Any]) -> list[str]:
    """The exporter's own checks, one per line: what was verified without running the artifact."""
    return [f"{'ok  ' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}" for c in checks.get("checks", [])]


def _common_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    thresholds = {name: kwargs.pop(name) for name, _, _ in _THRESHOLD_OPTIONS}
    kwargs.pop("as_json", None)
    return {**kwargs, "thresholds": thresholds}


@click.command("ptl")
@model_options
@click.option("--float", "float_", is_flag=True, help="Export fp32 instead of int8.")
@click.option("--bytecode-version", type=click.Choice(["7", "8"]), default="8", show_default=True,
              help="Lite bytecode version; 7 backports for app runtimes older than PyTorch 1.11.")
@click.option("--per-tensor", is_flag=True, help="int8: one weight scale per tensor instead of per output channel.")
@click.option("--float-point-head", is_flag=True, help="int8: keep PointRend's point MLP in float.")
@keep_float_options("--max-size", ".ptl")
@click.option("--fold-bn", is_flag=True,
              help="--float: fold BatchNorm into the convs (faster). Changes float rounding, so PointRend may "
                   "refine a few different points and the 1e-4 logit gate can fail; unfolded (default) the "
                   ".ptl is bit-exact with the eager model.")
@no_equalize_option
@export_options
@pass_reporter
def ptl_command(reporter: Reporter, float_: bool, bytecode_version: str, per_tensor: bool, float_point_head: bool,
                keep_float: Optional[str], size_budget_mb: Optional[float], auto_candidates: int,
                fold_bn: bool, no_equalize: bool, **kwargs: Any) -> int:
    """Export CKPT to a PyTorch-lite .ptl (int8 QNNPACK by default) and gate it on parity.

    \b
    CKPT: a float checkpoint (int8 by post-training calibration) or a QAT checkpoint from
    `alisnet-export qat` (int8 converted from its fake-quantized model). Default: the demo model.
    Writes NAME.ptl, NAME.ops.yaml (selective-build op list), NAME.manifest.json,
    NAME.parity.json and NAME.golden.algv into --output.
    """
    from ..exporters.ptl import PtlExporter, PtlOptions

    if fold_bn and not float_:
        raise click.UsageError("--fold-bn applies to --float only (int8 always folds BatchNorm into its quantized convs)")
    spec = keep_float_spec(keep_float, float_, auto_candidates, size_budget_mb, "--max-size")
    options = PtlOptions(bytecode_version=int(bytecode_version), per_channel=not per_tensor,
                         quantize_point_head=not float_point_head, fold_batchnorm=fold_bn, equalize=not no_equalize,
                         keep_float=spec)
    return run_export(PtlExporter(options), reporter=reporter, precision="float32" if float_ else "int8",
                      **_common_kwargs(kwargs))


@click.command("coreml")
@model_options
@click.option("--weights", type=click.Choice(["fp16", "int8", "palettize4"]), default="fp16", show_default=True,
              help="fp16 weights; int8 (linear, per channel) or 4-bit palettized weights. Compute is fp16 either way.")
@click.option("--image-input", is_flag=True,
              help="Take an RGB image (CVPixelBuffer) instead of a normalised float array; normalisation is done "
                   "inside the package, exactly (Core ML's own image scale is one scalar, so 1/std is a model op).")
@click.option("--min-size", default="64x64", show_default=True, metavar="HxW",
              help="Smallest input the package accepts (multiples of 32). PointRend also needs H x W >= its point "
                   "budget (recorded as min_pixels).")
@click.option("--max-size", default="4096x4096", show_default=True, metavar="HxW",
              help="Largest input the package accepts (multiples of 32).")
@export_options
@pass_reporter
def coreml_command(reporter: Reporter, weights: str, image_input: bool, min_size: str, max_size: str,
                   **kwargs: Any) -> int:
    """Export CKPT to a Core ML ML Program (.mlpackage, iOS 16+) with flexible H and W.

    \b
    Converted from torch.export (not TorchScript), fp16 compute; --weights int8 / palettize4
    compress the weights. Core ML cannot predict on Linux: there the parity gate is recorded as
    'not_run' with the reason, and what can be checked without predicting is checked instead (the
    package reloads, its input/output names, types and size ranges, op set, deployment target and
    weight compression) and written to the manifest. Run the parity on a Mac:
    `alisnet-export parity NAME.mlpackage --reference CKPT`.
    Writes NAME.mlpackage/, NAME.manifest.json, NAME.golden.algv (and NAME.parity.json on macOS).
    """
    from ..exporters.base import SizeBounds
    from ..exporters.coreml import CoreMLExporter, CoreMLOptions

    bounds = SizeBounds(min_hw=parse_hw(min_size, "--min-size", usage_error=True),
                        max_hw=parse_hw(max_size, "--max-size", usage_error=True))
    exporter = CoreMLExporter(CoreMLOptions(image_input=image_input))
    return run_export(exporter, reporter=reporter, precision=exporter.spec.precision_named(weights), bounds=bounds,
                      **_common_kwargs(kwargs))


@click.command("pte")
@model_options
@click.option("--float", "float_", is_flag=True, help="Export fp32 instead of int8.")
@click.option("--min-size", metavar="HxW", help="Smallest input the .pte accepts (multiples of 32). Default: 64x64.")
@click.option("--max-size", metavar="HxW",
              help="Largest input the .pte accepts (multiples of 32). ExecuTorch plans memory for it. Default: 1024x1024.")
@click.option("--per-tensor", is_flag=True, help="int8: one weight scale per tensor instead of per output channel.")
@click.option("--bpte", "bundled_program", is_flag=True,
              help="Also write NAME.bpte, an ExecuTorch BundledProgram: the program plus the golden input and its "
                   "own output here, for ExecuTorch's on-device verification (checked here before it is written).")
@keep_float_options("--size-budget", ".pte")
@no_equalize_option
@export_options
@pass_reporter
def pte_command(reporter: Reporter, float_: bool, min_size: Optional[str], max_size: Optional[str], per_tensor: bool,
                bundled_program: bool, keep_float: Optional[str], size_budget_mb: Optional[float], auto_candidates: int,
                no_equalize: bool, **kwargs: Any) -> int:
    """Export CKPT to an ExecuTorch .pte (XNNPACK delegate; int8 PT2E by default) and gate it on parity.

    \b
    H and W stay dynamic (multiples of 32 within --min-size..--max-size; PointRend also needs
    H*W large enough for its fixed point budget). int8: PT2E post-training quantization of the
    backbone and head with the XNNPACK quantizer; PointRend stays float.
    Writes NAME.pte, NAME.manifest.json (with the delegated/portable op lists), NAME.parity.json
    and NAME.golden.algv into --output (and NAME.bpte with --bpte).
    """
    from ..exporters.base import SizeBounds
    from ..exporters.pte import PteExporter, PteOptions

    exporter = PteExporter(PteOptions(per_channel=not per_tensor, equalize=not no_equalize,
                                      bundled_program=bundled_program,
                                      keep_float=keep_float_spec(keep_float, float_, auto_candidates, size_budget_mb,
                                                                 "--size-budget")))
    default = exporter.default_bounds
    bounds = SizeBounds(parse_hw(min_size, "--min-size") or default.min_hw,
                        parse_hw(max_size, "--max-size") or default.max_hw)
    return run_export(exporter, reporter=reporter, precision="float32" if float_ else "int8", bounds=bounds,
                      **_common_kwargs(kwargs))


COMMANDS = [ptl_command, pte_command, coreml_command]
