"""``alisnet-export predict``: run the float model on photos and write mask and overlay PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ._common import Reporter, check_multiple_of_32, json_option, model_options, output_options, pass_reporter

__all__ = ["COMMANDS"]


def _parse_box(text: Optional[str]) -> Optional[tuple[int, int, int, int]]:
    if not text:
        return None
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter("expected four integers X0,Y0,X1,Y1", param_hint="--box") from None
    if x1 <= x0 or y1 <= y0:
        raise click.BadParameter("need X1 > X0 and Y1 > Y0", param_hint="--box")
    return x0, y0, x1, y1


@click.command("predict")
@model_options
@click.option("--image", "images", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Photo to segment (repeatable; a folder, or a named set such as testbed:heldout:4, works too).")
@click.option("--height", default=1024, show_default=True, type=click.IntRange(64, 4096),
              help="Network input height (multiple of 32); the paper uses 1024.")
@click.option("--box", metavar="X0,Y0,X1,Y1", help="Person box; the image is cropped to it + 10% margin first (paper).")
@click.option("--artifact", type=click.Path(path_type=Path, exists=True),
              help="Run this exported artifact (.ptl, .pte, .onnx; its NAME.manifest.json gives the preprocessing) "
                   "through its runtime, as an app would, instead of the float model. int8 .ptl files run on the "
                   "QNNPACK engine, as on phones.")
@click.option("--compare-float", is_flag=True,
              help="With --artifact: also run the float CKPT (default: the embedded default) on the same input and "
                   "write NAME.compare.png (green both, red float only, blue artifact only) with IoU and contour px.")
@output_options("out/predict")
@json_option
@pass_reporter
def predict_command(ckpt, config, no_pointrend, images, height, box, artifact: Optional[Path], compare_float: bool,
                    output: Path, force: bool, as_json: bool, reporter: Reporter) -> int:
    """Segment photos with the float model, or with an exported --artifact; write NAME.mask.png and
    NAME.overlay.png (with --artifact: NAME.FORMAT-PRECISION.mask.png / .overlay.png) to --output."""
    from .. import api

    check_multiple_of_32(("--height", height))
    if compare_float and artifact is None:
        raise click.UsageError("--compare-float compares an --artifact with the float model; give --artifact.")
    result = api.predict(images, output, ckpt=ckpt, config=config, pointrend=False if no_pointrend else None,
                         height=height, box=_parse_box(box), artifact=artifact, compare_float=compare_float, force=force,
                         on_image=lambda row: reporter.line(_describe(row)))
    reporter.result({"ok": True, "checkpoint": None if result.checkpoint is None else str(result.checkpoint),
                     "artifact": None if result.artifact is None else str(result.artifact),
                     "variant": result.variant, "results": result.results})
    return 0


def _describe(row: dict) -> str:
    text = (f"{row['image']}: {tuple(row['input_hw'])} input, {row['seconds']:.2f} s, person "
            f"{row['foreground_fraction']:.1%} of the image -> {row['overlay']}")
    if "vs_float" in row:
        m = row["vs_float"]
        text += f"; vs float: IoU {m['mask_iou']:.4f}, contour {m['boundary_mean_px']:.2f} px mean -> {m['compare']}"
    return text


COMMANDS = [predict_command]
