"""``alisnet-export predict``: run the float model on photos and write mask and overlay PNGs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click

from ._common import Reporter, check_multiple_of_32, json_option, load_model_from_options, model_options, output_options, pass_reporter

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
              help="Photo to segment (repeatable).")
@click.option("--height", default=1024, show_default=True, type=click.IntRange(64, 4096),
              help="Network input height (multiple of 32); the paper uses 1024.")
@click.option("--box", metavar="X0,Y0,X1,Y1", help="Person box; the image is cropped to it + 10% margin first (paper).")
@output_options("out/predict")
@json_option
@pass_reporter
def predict_command(ckpt, config, no_pointrend, images, height, box, output: Path, force: bool, as_json: bool,
                    reporter: Reporter) -> int:
    """Segment photos with the float model; write NAME.mask.png and NAME.overlay.png to --output."""
    import torch

    from .._io import atomic_write
    from ..errors import DataError
    from ..preprocess import load_rgb_image, mask_to_original, preprocess
    from ..visualize import mask_overlay, save_png

    check_multiple_of_32(("--height", height))
    person_box = _parse_box(box)
    loaded, model = load_model_from_options(ckpt, config, no_pointrend)
    if model is None:
        raise DataError(f"{loaded.path}: is a QAT checkpoint; predict runs float checkpoints (export it with `ptl` first)")
    cfg = loaded.config
    results = []
    for image_path in images:
        image = load_rgb_image(image_path)
        pre = preprocess(image, mean=cfg.input.mean, std=cfg.input.std, height=height, box=person_box,
                         margin=cfg.input.crop_margin)
        start = time.perf_counter()
        with torch.inference_mode():
            logits = model(pre.tensor)
        seconds = time.perf_counter() - start
        mask = mask_to_original(logits, pre)
        stem = Path(image_path).stem
        mask_path, overlay_path = output / f"{stem}.mask.png", output / f"{stem}.overlay.png"
        atomic_write(mask_path, lambda tmp: save_png(mask, tmp), force=force)
        atomic_write(overlay_path, lambda tmp: save_png(mask_overlay(image, mask), tmp), force=force)
        fg = float(mask.mean())
        reporter.line(f"{image_path}: {tuple(pre.tensor.shape[-2:])} input, {seconds:.2f} s, "
                      f"person {fg:.1%} of the image -> {overlay_path}")
        results.append({"image": str(image_path), "input_hw": list(pre.tensor.shape[-2:]), "seconds": seconds,
                        "foreground_fraction": fg, "mask": str(mask_path), "overlay": str(overlay_path)})
    reporter.result({"ok": True, "checkpoint": str(loaded.path), "variant": cfg.name, "results": results})
    return 0


COMMANDS = [predict_command]
