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
    import numpy as np
    import torch

    from .._io import atomic_write
    from ..errors import DataError
    from ..parity import compare_logits
    from ..preprocess import load_rgb_image, mask_to_original, preprocess
    from ..samples import resolve_image_set
    from ..visualize import comparison_panel, mask_overlay, save_png

    check_multiple_of_32(("--height", height))
    if compare_float and artifact is None:
        raise click.UsageError("--compare-float compares an --artifact with the float model; give --artifact.")
    person_box = _parse_box(box)
    model = loaded = target = None
    if artifact is None or compare_float:
        loaded, model = load_model_from_options(ckpt, config, no_pointrend)
        if model is None:
            raise DataError(f"{loaded.path}: is a QAT checkpoint; predict runs float checkpoints (export it with `ptl` first)")
    if artifact is not None:
        target = _open_artifact(artifact, config)
    mean, std = (target.mean, target.std) if target is not None else (loaded.config.input.mean, loaded.config.input.std)
    margin = target.info.get("crop_margin") if target is not None else None
    margin = margin if margin is not None else (loaded.config.input.crop_margin if loaded is not None else 0.10)
    tag = f".{target.format}-{target.precision}" if target is not None else ""
    results = []
    for image_path in resolve_image_set(images, default="samples").paths:
        image = load_rgb_image(image_path)
        pre = preprocess(image, mean=mean, std=std, height=height, box=person_box, margin=margin)
        start = time.perf_counter()
        if target is not None:
            target.check_size(*pre.tensor.shape[-2:], image=str(image_path))
            logits = torch.from_numpy(target.run(pre.tensor.numpy()))
        else:
            with torch.inference_mode():
                logits = model(pre.tensor)
        seconds = time.perf_counter() - start
        mask = mask_to_original(logits, pre)
        stem = Path(image_path).stem
        mask_path, overlay_path = output / f"{stem}{tag}.mask.png", output / f"{stem}{tag}.overlay.png"
        atomic_write(mask_path, lambda tmp: save_png(mask, tmp), force=force)
        atomic_write(overlay_path, lambda tmp: save_png(mask_overlay(image, mask), tmp), force=force)
        fg = float(mask.mean())
        row = {"image": str(image_path), "input_hw": list(pre.tensor.shape[-2:]), "seconds": seconds,
               "foreground_fraction": fg, "mask": str(mask_path), "overlay": str(overlay_path)}
        text = (f"{image_path}: {tuple(pre.tensor.shape[-2:])} input, {seconds:.2f} s, person {fg:.1%} of the image "
                f"-> {overlay_path}")
        if compare_float:
            ref_pre = preprocess(image, mean=loaded.config.input.mean, std=loaded.config.input.std, height=height,
                                 box=person_box, margin=margin)
            with torch.inference_mode():
                ref_logits = model(ref_pre.tensor)
            m = compare_logits(stem, ref_logits.numpy(), logits.numpy())
            float_mask = mask_to_original(ref_logits, ref_pre)
            compare_path = output / f"{stem}{tag}.compare.png"
            atomic_write(compare_path, lambda tmp: save_png(comparison_panel(image, float_mask, mask), tmp), force=force)
            row["vs_float"] = {"mask_iou": m.mask_iou, "boundary_mean_px": m.boundary_mean_px,
                               "boundary_p95_px": m.boundary_p95_px, "compare": str(compare_path),
                               "pixels_differ": int(np.sum(float_mask != mask))}
            text += f"; vs float: IoU {m.mask_iou:.4f}, contour {m.boundary_mean_px:.2f} px mean -> {compare_path}"
        reporter.line(text)
        results.append(row)
    reporter.result({"ok": True, "checkpoint": None if loaded is None else str(loaded.path),
                     "artifact": None if artifact is None else str(artifact),
                     "variant": loaded.config.name if loaded is not None else target.info.get("variant"),
                     "results": results})
    return 0


def _open_artifact(path: Path, config: Optional[str]):
    """The artifact's runner and preprocessing (from the manifest beside it), as ``eval`` opens it."""
    from ..errors import DataError, EnvironmentProblem
    from ..paper_eval import open_targets

    targets = open_targets([path], config)
    if len(targets) != 1:
        raise DataError(f"{path}: holds {len(targets)} artifacts; pass one artifact file")
    if targets[0].skipped:
        raise EnvironmentProblem(f"{path}: cannot run here: {targets[0].skipped}")
    return targets[0]


COMMANDS = [predict_command]
