"""``alisnet-export train-demo``: train a demo checkpoint (synthetic people, an image/mask folder, or COCO).

The data source is chosen by one flag each (``--synthetic``, ``--data``, ``--coco``); each flag maps
to a spec of :mod:`alisnet_export.data.sources`, which builds the training and held-out datasets, so a
new mode is one option, one spec and its opener. The recipe is :func:`alisnet_export.api.train_demo`;
this module parses the options and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..config import DEFAULT_VARIANT
from ._common import Reporter, human_size, json_option, output_options, pass_reporter

__all__ = ["COMMANDS", "parse_crop", "training_data"]

DEFAULT_CONFIG = DEFAULT_VARIANT


def parse_crop(text: str) -> tuple[int, int]:
    """``"256x192"`` -> ``(256, 192)`` (height x width, both multiples of 32)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected HEIGHTxWIDTH, e.g. 256x192", param_hint="--crop") from None
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise click.BadParameter(f"{text!r}: height and width must be positive multiples of 32 (the network's stride)",
                                 param_hint="--crop")
    return h, w


def parse_scale_range(text: str) -> tuple[float, float]:
    """``"0.75,1.35"`` -> ``(0.75, 1.35)`` (0 < LO <= HI)."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected LO,HI, e.g. 0.75,1.35", param_hint="--scale-range") from None
    if not 0 < lo <= hi:
        raise click.BadParameter(f"{text!r}: need 0 < LO <= HI", param_hint="--scale-range")
    return lo, hi


#: the data-source flags and "is this one given?"; exactly one must be
_SOURCE_FLAGS = [
    ("--synthetic", lambda o: bool(o["synthetic"])),
    ("--data", lambda o: o["data_dir"] is not None),
    ("--coco", lambda o: o["coco_json"] is not None),
]


def training_data(opts: dict[str, Any]) -> Any:
    """The one data source the options name, as a spec of :mod:`alisnet_export.data.sources`."""
    from ..data.sources import CocoData, FolderData, SyntheticData

    chosen = [flag for flag, given in _SOURCE_FLAGS if given(opts)]
    if len(chosen) != 1:
        what = "no data source" if not chosen else "several data sources (" + ", ".join(chosen) + ")"
        raise click.UsageError(f"{what}: choose exactly one of {', '.join(f for f, _ in _SOURCE_FLAGS)}.")
    if chosen == ["--synthetic"]:
        return SyntheticData(opts["synthetic_images"])
    if chosen == ["--data"]:
        return FolderData(opts["data_dir"], cache_images=opts.get("cache_images", False))
    if opts["coco_images"] is None:
        raise click.UsageError("--coco needs --images DIR, the folder its file names are relative to.")
    return CocoData(opts["coco_json"], opts["coco_images"])


@click.command("train-demo")
@click.option("--synthetic", is_flag=True, help="Train on generated synthetic people (exact masks, no files needed).")
@click.option("--data", "data_dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Train on DIR/images/* with binary masks DIR/masks/* of the same file stems, or on testbed:train[:N] "
                   "(the exact-ground-truth testbed at 1024 x 768, rendered on first use).")
@click.option("--coco", "coco_json", type=click.Path(path_type=Path, dir_okay=False), metavar="JSON",
              help="Train on COCO-style person annotations (instances merged per image); needs --images.")
@click.option("--images", "coco_images", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Folder the --coco file names are relative to.")
@click.option("--config", metavar="NAME|FILE.json", default=None,
              help=f"Model variant to train (default {DEFAULT_CONFIG}; on --resume, the one stored in the state).")
@click.option("--steps", default=2000, show_default=True, type=click.IntRange(1), help="Optimizer steps in total.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Images per step (per process).")
@click.option("--crop", "crop_text", default="256x192", show_default=True, metavar="HxW",
              help="Training crop (multiples of 32); synthetic images are generated at this size.")
@click.option("--lr", default=2e-3, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--warmup", default=100, show_default=True, type=click.IntRange(0), help="Linear warm-up steps before the cosine decay.")
@click.option("--bn-momentum", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="BatchNorm momentum while training (MnasNet's own 0.0003 leaves stale statistics in short runs).")
@click.option("--backbone-lr-mult", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Learning-rate factor for the backbone, e.g. 0.1 with --init-backbone: keeps the ImageNet features "
                   "a small dataset would otherwise overwrite.")
@click.option("--precise-bn", default=50, show_default=True, type=click.IntRange(0),
              help="Batches to re-estimate BatchNorm statistics on after training (0: skip).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA if available, else CPU.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0), help="Data-loading worker processes.")
@click.option("--resume", type=click.Path(path_type=Path), metavar="PATH",
              help="Continue from a training state (train_state_*.pth) or the folder holding them.")
@click.option("--checkpoint-every", default=500, show_default=True, type=click.IntRange(0),
              help="Write a resumable training state to OUTPUT.train/ every N steps (0: only at the end).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds data, augmentation, model init and splits.")
@click.option("--half/--no-half", default=True, show_default=True, help="Store the checkpoint's weights as fp16 (half the file).")
@click.option("--init-backbone", type=click.Path(path_type=Path, dir_okay=False), metavar="PATH",
              help="Start the backbone from torchvision ImageNet weights (a .pth state dict, read with weights_only).")
@click.option("--init-from", type=click.Path(path_type=Path, dir_okay=False), metavar="CKPT",
              help="Fine-tune: start the whole model from this float checkpoint (same config; loaded safely).")
@click.option("--scale-range", "scale_range_text", default="0.75,1.35", show_default=True, metavar="LO,HI",
              help="Augmentation: each sample is resized to the crop height times a log-uniform factor in [LO, HI] "
              "(above 1 the crop shows part of a person larger than the crop, as a 1024 px person-box input does).")
@click.option("--eval-images", default=100, show_default=True, type=click.IntRange(0),
              help="Held-out images to score at the end (synthetic: freshly generated; folder/COCO: split off).")
@click.option("--synthetic-images", default=None, type=click.IntRange(1),
              help="Distinct synthetic training images (default: steps x batch size, i.e. no repeats).")
@click.option("--cache-images", is_flag=True,
              help="--data: keep decoded images in memory after their first use (large images decode slower than "
                   "they augment; needs about 3 bytes per pixel of the data set).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@output_options("out/train-demo/alisnet_demo.pth")
@json_option
@pass_reporter
def train_demo_command(reporter: Reporter, **opts: Any) -> int:
    """Train an ALiSNet demo checkpoint and write it as a native checkpoint with its metrics.

    \b
    Exactly one data source:
      --synthetic                 generated people with exact masks (the test fixture)
      --data DIR                  DIR/images/NAME.jpg + DIR/masks/NAME.png
      --coco JSON --images DIR    COCO-style person annotations

    \b
    Resumable training states go to OUTPUT.train/ (every --checkpoint-every steps). Under torchrun
    (e.g. torchrun --nproc_per_node 2 -m alisnet_export train-demo ...) the processes train
    together (DDP) and rank 0 writes the outputs. Example, the committed fixture:
      alisnet-export train-demo --synthetic --steps 2000 --output models/alisnet_mnasnet_synthetic.pth
    """
    from .. import api

    same = ("config", "steps", "batch_size", "lr", "optimizer", "warmup", "bn_momentum", "backbone_lr_mult",
            "precise_bn", "init_backbone", "init_from", "eval_images", "seed", "half", "device", "workers", "resume",
            "checkpoint_every", "force")
    result = api.train_demo(training_data(opts), opts["output"], **{k: opts[k] for k in same},
                            crop=parse_crop(opts["crop_text"]), scale_range=parse_scale_range(opts["scale_range_text"]),
                            progress=not opts["no_progress"], log=reporter.line)
    if result is None:  # another torchrun process: rank 0 writes and reports
        return 0
    output = result.checkpoint
    reporter.line(f"saved {output} ({human_size(result.size_bytes)}, {result.steps} steps in "
                  f"{result.training_seconds / 60:.1f} min on {result.device})", fg="green")
    reporter.line(f"next: alisnet-export inspect {output}  |  alisnet-export predict {output} --image PHOTO")
    reporter.result({"ok": True, "checkpoint": str(output), "size_bytes": result.size_bytes,
                     "training_state": str(result.training_state), "meta": result.meta})
    return 0


COMMANDS = [train_demo_command]
