"""``alisnet-export eval``: the paper's accuracy metric on ground truth, several models side by side."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from ._common import Reporter, check_multiple_of_32, json_option, pass_reporter, resolve_checkpoint

__all__ = ["COMMANDS", "README_BEGIN", "README_END"]

README_BEGIN = "<!-- eval:begin (written by `alisnet-export eval --update-readme`; do not edit by hand) -->"
README_END = "<!-- eval:end -->"


@click.command("eval")
@click.argument("targets", nargs=-1, type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path),
              help="Folder with images/ and masks/ (same file stems; any non-zero mask pixel is the person). "
              "The root written by `alisnet-export demo-data` works too (its heldout/ set is used), and so does "
              "testbed:heldout[:N], the exact-ground-truth testbed (rendered on first use).")
@click.option("--coco", type=click.Path(path_type=Path, dir_okay=False),
              help="COCO-style JSON; every person instance of an image is merged into one mask, crowds are ignored.")
@click.option("--images", "coco_images", type=click.Path(path_type=Path, file_okay=False),
              help="With --coco: the folder its file names are relative to.")
@click.option("--boxes", type=click.Path(path_type=Path, dir_okay=False),
              help='Person boxes instead of the mask\'s box: JSON {"IMAGE_STEM": [x0, y0, x1, y1], ...}.')
@click.option("--coco-boxes", is_flag=True, help="With --coco: crop to the union of the person instances' bbox fields.")
@click.option("--height", default=1024, show_default=True, type=click.IntRange(64, 4096),
              help="Network input height (multiple of 32); the paper uses 1024.")
@click.option("--margin", type=click.FloatRange(0, 1), default=None,
              help="Margin added around the person box on each side (default: the config's, 0.10 as in the paper).")
@click.option("--config", metavar="NAME|FILE.json",
              help="Config for checkpoints without one, and the preprocessing of artifacts without a manifest.")
@click.option("--max-images", type=click.IntRange(1), help="Score only the first N images.")
@click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False),
              help="Also write eval.md, eval.json and per_image.csv into this folder.")
@click.option("--update-readme", type=click.Path(path_type=Path, dir_okay=False, exists=True), metavar="FILE",
              help=f"Write the table into FILE between the lines {README_BEGIN!r} and {README_END!r} "
                   "(exit 3 if they are missing).")
@json_option
@pass_reporter
def eval_command(targets, data: Optional[Path], coco: Optional[Path], coco_images: Optional[Path], boxes: Optional[Path],
                 coco_boxes: bool, height: int, margin: Optional[float], config: Optional[str], max_images: Optional[int],
                 output: Optional[Path], update_readme: Optional[Path], as_json: bool, reporter: Reporter) -> int:
    """Score TARGETs on ground truth with the paper's metric: per-image person IoU, mean ± std in % (Eq. 1).

    \b
    TARGET: a float checkpoint (.pth/.pkl; default: the embedded demo checkpoint), or an artifact
    (.ptl, .pte, .onnx, .mlpackage, NAME.manifest.json or a bundle folder), run by its runtime with the
    preprocessing of the manifest beside it. Give several to compare float and each export on one table.
    Each image is cropped to the person box (from the mask, --boxes or --coco-boxes) + 10% margin and
    resized to --height; the logits are upsampled back to the crop and compared with the cropped mask
    (see docs/evaluation.md). Artifacts that cannot run here (Core ML off macOS) are listed as skipped.
    """
    import itertools

    from tqdm import tqdm

    from ..evaluate.paper import (evaluate_targets, open_dataset, open_targets, resolve_margin, runnable_targets,
                              write_eval_report, write_table_into)

    check_multiple_of_32(("--height", height))
    description, count, items = open_dataset(data=data, coco=coco, images=coco_images, boxes=boxes, coco_boxes=coco_boxes)
    paths = list(targets) or [resolve_checkpoint(None)]
    opened = open_targets(paths, config)
    margin = resolve_margin(opened, margin)
    for t in opened:
        reporter.line(f"{t.label}: {t.kind}, {t.format}, {t.precision}" + (f" - skipped: {t.skipped}" if t.skipped else ""),
                      fg="yellow" if t.skipped else None)
    runnable = runnable_targets(opened)
    total = min(count, max_images) if max_images else count
    reporter.line(f"evaluating {len(runnable)} target(s) on {total} of {description} at height {height}", bold=True)
    bar = tqdm(total=total, desc="eval", unit="image", file=sys.stderr, leave=False)
    result = evaluate_targets(opened, itertools.islice(items(), total), height=height, margin=margin,
                              progress=lambda name: bar.update(1))
    bar.close()
    markdown = result.markdown(context={"data": description, "targets": ", ".join(str(p) for p in paths)})
    reporter.line("")
    for line in markdown.splitlines()[2:]:
        reporter.line(line)
    payload = {"ok": True, "data": description, **result.to_dict()}
    if output is not None:
        files = write_eval_report(output, result, markdown, payload)
        payload["files"] = {k: str(v) for k, v in files.items()}
        reporter.line(f"report: {files['markdown']}")
    if update_readme is not None:
        write_table_into(update_readme, markdown, _command(targets, data or coco, height, max_images), README_BEGIN,
                         README_END)
        reporter.line(f"table written into {update_readme}")
        payload["readme"] = str(update_readme)
    reporter.result(payload)
    return 0


def _command(targets: tuple[Path, ...], data: Optional[Path], height: int, max_images: Optional[int]) -> str:
    """The command line the README table says it was generated by."""
    import shlex

    return shlex.join(["alisnet-export", "eval", *map(str, targets), "--data", str(data), "--height", str(height)]
                      + (["--max-images", str(max_images)] if max_images else []))


COMMANDS = [eval_command]
