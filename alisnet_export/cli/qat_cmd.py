"""``alisnet-export qat``: QNNPACK quantization-aware fine-tuning of a float checkpoint.

    float CKPT -> equalize -> PTQ calibration at the deployment height (--height) -> fuse Conv-BN(-ReLU),
    fake-quantize (eager, QNNPACK qconfig) with the activation ranges seeded from that calibration and
    frozen, BN statistics frozen -> fine-tune at the deployment scale, distilling the float model's
    logits (coarse + PointRend points; + the paper's loss on the labels with --gt-weight) -> freeze
    the weight ranges -> QAT checkpoint (``ptl`` converts it to int8)

Each of these answers a known cause of "QAT worse than PTQ": observers that start empty and learn
their ranges from small crops, fine-tuning at a scale the app never runs, BN statistics and ranges
moving late, and a loss that pulls the model away from the float model. Before and after, the
command measures the fake-quantized model's agreement with the float model (mask IoU, contour px) on
--check-images, so a run that did not help says so.

The recipe is :func:`alisnet_export.api.qat` (its pieces in :mod:`alisnet_export.quantize.qat`); this
module parses the options and prints. The loop is :func:`alisnet_export.train.trainer.train` (progress bar,
periodic resumable states, DDP under torchrun); the schedule is :func:`alisnet_export.quantize.eager.qat_schedule`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ._common import Reporter, human_size, json_option, pass_reporter
from .train_cmd import parse_crop, training_data

__all__ = ["COMMANDS", "qat_steps", "schedule_steps"]


def __getattr__(name: str) -> Any:
    """``qat_steps`` and ``schedule_steps`` live in :mod:`alisnet_export.quantize.qat` (imported on first use,
    so ``--help`` does not load torch)."""
    if name in ("qat_steps", "schedule_steps"):
        from ..quantize import qat

        return getattr(qat, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@click.command("qat")
@click.argument("ckpt", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--config", metavar="NAME|FILE.json", help="Model variant (default: stored in the checkpoint).")
@click.option("--data", "data_dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Fine-tune on DIR/images/* with binary masks DIR/masks/* of the same file stems, or on "
                   "testbed:train[:N] (the testbed, rendered on first use).")
@click.option("--coco", "coco_json", type=click.Path(path_type=Path, dir_okay=False), metavar="JSON",
              help="Fine-tune on COCO-style person annotations (instances merged per image); needs --images.")
@click.option("--images", "coco_images", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Folder the --coco file names are relative to.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Passes over the training images (default 1; --steps overrides).")
@click.option("--steps", type=click.IntRange(1), default=None, help="Optimizer steps in total (overrides --epochs).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Images per step (per process).")
@click.option("--crop", "crop_text", default="384x288", show_default=True, metavar="HxW",
              help="Training crop (multiples of 32), cut from each image resized to --height.")
@click.option("--height", default=None, type=click.IntRange(64, 4096),
              help="Deployment height: training images are resized to it before cropping (the scale the app "
                   "runs at), and calibration and the agreement check run at it. Default: the config's "
                   "resize height (1024, as the paper).")
@click.option("--calibration-images", type=click.Path(path_type=Path), multiple=True,
              help="Images (files, folders, or samples / testbed:calibration[:N]) whose PTQ ranges seed the "
                   "fake quantizers. Default: the checkpoint's calibration set (models/zoo.json).")
@click.option("--check-images", type=click.Path(path_type=Path), multiple=True,
              help="Held-out images (files, folders, or testbed:heldout[:N]) on which the fake-quantized model's "
                   "agreement with the float model is measured before and after. Default: the checkpoint's parity set.")
@click.option("--no-calibrated-start", is_flag=True,
              help="Let the activation observers start empty and learn their ranges from the training crops "
                   "(the old recipe) instead of starting from calibrated, frozen ranges.")
@click.option("--gt-weight", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Weight of the paper's loss on the ground-truth masks, added to the distillation loss "
                   "(0: distil the float model only).")
@click.option("--lr", default=2e-5, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate (QAT fine-tunes: keep it well below the float training's).")
@click.option("--warmup", default=20, show_default=True, type=click.IntRange(0), help="Linear warm-up steps.")
@click.option("--freeze-bn-at", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of the run after which BatchNorm uses its running statistics (no more updates; "
                   "0: the float model's statistics throughout).")
@click.option("--freeze-observers-at", default=0.75, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of the run after which the int8 ranges stop moving (the last steps fit the exact grid).")
@click.option("--bn-momentum", default=0.01, show_default=True, type=click.FloatRange(0, 1),
              help="BatchNorm momentum until the BN freeze (MnasNet's own 0.0003 barely moves in a short fine-tune).")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per output channel.")
@click.option("--float-point-head", is_flag=True, help="Keep PointRend's point MLP in float.")
@click.option("--no-equalize", is_flag=True,
              help="Skip activation-range equalization before placing the fake quantizers (see `ptl --help`).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA if available, else CPU.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0), help="Data-loading worker processes.")
@click.option("--resume", type=click.Path(path_type=Path), metavar="PATH",
              help="Continue from a training state (train_state_*.pth) or the folder holding them.")
@click.option("--checkpoint-every", default=100, show_default=True, type=click.IntRange(0),
              help="Write a resumable training state to OUTPUT.train/ every N steps (0: only at the end).")
@click.option("--eval-images", default=0, show_default=True, type=click.IntRange(0),
              help="Hold out N images (split off the data) and report the QAT model's IoU on them.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--force", is_flag=True, help="Overwrite an existing output (and discard old training states).")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=Path("out/qat/alisnet_qat.pth"),
              show_default=True, help="The QAT checkpoint to write.")
@json_option
@pass_reporter
def qat_command(reporter: Reporter, **opts: Any) -> int:
    """Quantization-aware fine-tuning (QNNPACK) of CKPT; writes a QAT checkpoint for `alisnet-export ptl`.

    \b
    Exactly one data source:
      --data DIR                  DIR/images/NAME.jpg + DIR/masks/NAME.png
      --coco JSON --images DIR    COCO-style person annotations (instances merged)
    Without data, skip this command: `alisnet-export ptl CKPT` calibrates on sample images (PTQ).

    \b
    Schedule: fake-quantized fine-tuning, BatchNorm statistics frozen at --freeze-bn-at, int8 ranges
    frozen at --freeze-observers-at. Resumable states go to OUTPUT.train/. Under torchrun, e.g.
      torchrun --nproc_per_node 2 -m alisnet_export qat CKPT --data DIR --epochs 2
    the processes fine-tune together (DDP: gloo on CPU, nccl on GPU) and rank 0 writes the outputs.
    \b
    Then:
      alisnet-export ptl OUTPUT        # int8 .ptl converted from the QAT model, gated on parity
    """
    from .. import api

    result = api.qat(opts["ckpt"], training_data({**opts, "synthetic": False}), opts["output"], **_recipe(opts),
                     command=shlex.join(["alisnet-export", *sys.argv[1:]]), log=_log(reporter))
    if result is None:  # another torchrun process: rank 0 writes and reports
        return 0
    _print_outcome(reporter, result)
    reporter.result({"ok": True, "checkpoint": str(result.checkpoint), "size_bytes": result.size_bytes, "qat": result.info,
                     "training_state": None if result.training_state is None else str(result.training_state)})
    return 0


def _recipe(opts: dict[str, Any]) -> dict[str, Any]:
    """The command's options as :func:`alisnet_export.api.qat`'s keyword arguments."""
    same = ("config", "epochs", "steps", "batch_size", "height", "calibration_images", "check_images", "gt_weight", "lr",
            "warmup", "freeze_bn_at", "freeze_observers_at", "bn_momentum", "device", "workers", "resume",
            "checkpoint_every", "eval_images", "seed", "force")
    return {**{k: opts[k] for k in same}, "crop": parse_crop(opts["crop_text"]),
            "calibrated_start": not opts["no_calibrated_start"], "per_channel": not opts["per_tensor"],
            "quantize_point_head": not opts["float_point_head"], "equalize": not opts["no_equalize"],
            "progress": not opts["no_progress"]}


def _log(reporter: Reporter) -> Callable[[str], None]:
    return lambda m: reporter.line(m, fg="yellow" if m.startswith("warning: ") else None)


def _print_outcome(reporter: Reporter, result: Any) -> None:
    from ..quantize.qat import describe_agreement

    reporter.line(f"after QAT, fake-quantized vs float on {result.check_set.source}: "
                  f"{describe_agreement(result.agreement_end)}"
                  + (" (better than the start)" if result.improved
                     else " (NOT better than the start: try a lower --lr or more data)"),
                  fg="green" if result.improved else "yellow")
    output = result.checkpoint
    reporter.line(f"saved QAT checkpoint {output} ({human_size(result.size_bytes)}, {result.steps} steps in "
                  f"{result.training_seconds / 60:.1f} min on {result.device})", fg="green")
    reporter.line(f"next: alisnet-export ptl {output}   # int8 .ptl converted from this QAT model, gated on parity")


COMMANDS = [qat_command]
