"""``alisnet-export train-demo``: train a demo checkpoint (synthetic people, an image/mask folder, or COCO).

The data source is chosen by one flag each (``--synthetic``, ``--data``, ``--coco``); each source is
one entry of :data:`_SOURCES` with a function that builds its training and held-out datasets, so a
new mode is one option plus one builder.
"""

from __future__ import annotations

import os
import platform
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import click

from ._common import Reporter, human_size, json_option, output_options, pass_reporter

__all__ = ["COMMANDS", "DataSource", "parse_crop"]

#: held-out synthetic images use another seed stream than the training images (``seed + this``)
HELD_OUT_SEED_OFFSET = 1_000_000
DEFAULT_CONFIG = "alisnet_mnasnet"


@dataclass
class DataSource:
    """What a data mode hands the trainer."""

    train: Any  # a Dataset of (image uint8 (H, W, 3), mask) pairs
    held_out: Optional[Any]  # the same, never trained on; None when --eval-images is 0
    trained_on: str  # for the checkpoint's meta


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


def _split(dataset: Any, held_out: int, seed: int, name: str) -> tuple[Any, Optional[Any]]:
    """A seeded random split of a real dataset into (train, held-out)."""
    import torch
    from torch.utils.data import Subset

    from ..errors import DataError

    if held_out == 0:
        return dataset, None
    if held_out >= len(dataset):
        raise DataError(f"{name}: has {len(dataset)} images, so --eval-images {held_out} leaves none to train on; "
                        "lower --eval-images.")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, order[held_out:]), Subset(dataset, order[:held_out])


def _synthetic_source(opts: dict[str, Any]) -> DataSource:
    from ..data import SyntheticPeople

    h, w = opts["crop"]
    count = opts["synthetic_images"] or opts["steps"] * opts["batch_size"]
    train = SyntheticPeople(count, h, w, seed=opts["seed"])
    held = SyntheticPeople(opts["eval_images"], h, w, seed=opts["seed"] + HELD_OUT_SEED_OFFSET) if opts["eval_images"] else None
    return DataSource(train, held, f"synthetic people (alisnet_export.data.synthetic): {train.describe()}")


def _folder_source(opts: dict[str, Any]) -> DataSource:
    from ..data import SegmentationFolder

    root: Path = opts["data_dir"]
    if str(root).startswith("testbed:"):
        from ..data.testbed import testbed_dataset

        data = testbed_dataset(str(root), cache=opts.get("cache_images", False))
    else:
        data = SegmentationFolder(root / "images", root / "masks", cache=opts.get("cache_images", False))
    train, held = _split(data, opts["eval_images"], opts["seed"], str(root))
    return DataSource(train, held, f"{len(train)} of {data.describe()}")


def _coco_source(opts: dict[str, Any]) -> DataSource:
    from ..data import CocoPersonDataset

    if opts["coco_images"] is None:
        raise click.UsageError("--coco needs --images DIR, the folder its file names are relative to.")
    data = CocoPersonDataset(opts["coco_json"], opts["coco_images"])
    train, held = _split(data, opts["eval_images"], opts["seed"], str(opts["coco_json"]))
    return DataSource(train, held, f"{len(train)} of {data.describe()} (person instances merged, crowds ignored)")


#: (flag shown to the user, "is this mode selected?", builder); exactly one must be selected
_SOURCES: list[tuple[str, Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], DataSource]]] = [
    ("--synthetic", lambda o: bool(o["synthetic"]), _synthetic_source),
    ("--data", lambda o: o["data_dir"] is not None, _folder_source),
    ("--coco", lambda o: o["coco_json"] is not None, _coco_source),
]


def select_source(opts: dict[str, Any]) -> DataSource:
    chosen = [(flag, build) for flag, active, build in _SOURCES if active(opts)]
    flags = ", ".join(flag for flag, _, _ in _SOURCES)
    if len(chosen) != 1:
        what = "no data source" if not chosen else "several data sources (" + ", ".join(f for f, _ in chosen) + ")"
        raise click.UsageError(f"{what}: choose exactly one of {flags}.")
    return chosen[0][1](opts)


def _hardware(device: str, world_size: int) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    info: dict[str, Any] = {"device": device, "cpu": cpu, "cpu_cores": cores, "threads": torch.get_num_threads(),
                            "processes": world_size}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _recipe_command(opts: dict[str, Any]) -> str:
    """The canonical command line that reproduces this run (every option spelled out)."""
    args = ["alisnet-export", "train-demo"]
    if opts["synthetic"]:
        args.append("--synthetic")
        if opts["synthetic_images"]:
            args += ["--synthetic-images", str(opts["synthetic_images"])]
    if opts["data_dir"] is not None:
        args += ["--data", str(opts["data_dir"])] + (["--cache-images"] if opts.get("cache_images") else [])
    if opts["coco_json"] is not None:
        args += ["--coco", str(opts["coco_json"]), "--images", str(opts["coco_images"])]
    h, w = opts["crop"]
    args += ["--config", opts["config"], "--steps", str(opts["steps"]), "--batch-size", str(opts["batch_size"]),
             "--crop", f"{h}x{w}", "--lr", str(opts["lr"]), "--optimizer", opts["optimizer"], "--warmup", str(opts["warmup"]),
             "--bn-momentum", str(opts["bn_momentum"]), "--backbone-lr-mult", str(opts["backbone_lr_mult"]),
             "--precise-bn", str(opts["precise_bn"]),
             "--eval-images", str(opts["eval_images"]), "--seed", str(opts["seed"]), "--half" if opts["half"] else "--no-half"]
    if opts["init_backbone"] is not None:
        args += ["--init-backbone", str(opts["init_backbone"])]
    if opts["init_from"] is not None:
        args += ["--init-from", str(opts["init_from"])]
    args += ["--scale-range", ",".join(str(v) for v in opts["scale_range"])]
    args += ["--output", str(opts["output"])]
    return shlex.join(args)


def _load_backbone_weights(model: Any, path: Path) -> int:
    import torch

    from ..errors import CheckpointError
    from ..modeling import load_imagenet_weights

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; --init-backbone takes a torchvision ImageNet checkpoint (.pth).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unsafe pickles and corrupt files raise many types
        raise CheckpointError(f"{path}: cannot read it safely as a state dict: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict of ImageNet weights.")
    try:
        return load_imagenet_weights(model.backbone, state, source=str(path))
    except ValueError as exc:
        raise CheckpointError(f"{exc}. Pass ImageNet weights for backbone {model.config.backbone}.") from None


def _prepare_state_dir(state_dir: Path, resume: Optional[Path], force: bool) -> None:
    from ..errors import OutputError

    old = sorted(state_dir.glob("train_state_*.pth")) if state_dir.is_dir() else []
    if old and resume is None:
        if not force:
            raise OutputError(f"{state_dir}: holds training states of an earlier run; pass --resume {state_dir} to "
                              "continue it, or --force to start over (deletes them).")
        for path in old + [state_dir / "train_log.jsonl"]:
            path.unlink(missing_ok=True)


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
    import torch

    from ..checkpoint import save_checkpoint
    from ..config import load_config
    from ..data import TrainTransform
    from .._io import refuse_existing
    from ..errors import CheckpointError
    from ..modeling import build_model
    from ..training import TrainOptions, load_training_state, recompute_bn_stats, train, training_batches
    from ..evaluation import evaluate_miou

    output: Path = opts["output"]
    opts["crop"] = parse_crop(opts.pop("crop_text"))
    refuse_existing([output], opts["force"])
    state_dir = output.with_name(output.name.removesuffix(".pth") + ".train")
    _prepare_state_dir(state_dir, opts["resume"], opts["force"])
    resume_state = load_training_state(opts["resume"]) if opts["resume"] is not None else None
    stored_config = (resume_state or {}).get("config")
    if stored_config is not None and opts["config"] is None:
        from ..config import ModelConfig

        config = ModelConfig.from_dict(stored_config, source=f"{resume_state['path']} (stored config)")
    else:
        config = load_config(opts["config"] or DEFAULT_CONFIG)
        if stored_config is not None and stored_config.get("name") != config.name:
            raise CheckpointError(f"{resume_state['path']}: was trained with config {stored_config.get('name')!r}, "
                                  f"not {config.name!r}; drop --config to use the stored one.")
    opts["config"] = config.name
    source = select_source(opts)
    torch.manual_seed(opts["seed"])
    model = build_model(config)
    if opts["init_backbone"] is not None and resume_state is None:
        copied = _load_backbone_weights(model, opts["init_backbone"])
        reporter.line(f"backbone: {copied} tensors from {opts['init_backbone']}")
    if opts["init_from"] is not None and resume_state is None:
        from ..checkpoint import load_checkpoint

        start = load_checkpoint(opts["init_from"], config.name)
        model.load_state_dict(start.state_dict, strict=True)
        reporter.line(f"fine-tuning from {opts['init_from']} ({start.config.name}, sha256 {start.sha256[:12]})")
    opts["scale_range"] = parse_scale_range(opts.pop("scale_range_text"))
    transform = TrainTransform(opts["crop"], config.input.mean, config.input.std, scale_range=opts["scale_range"])
    options = TrainOptions(
        steps=opts["steps"], batch_size=opts["batch_size"], lr=opts["lr"], optimizer=opts["optimizer"],
        warmup_steps=min(opts["warmup"], opts["steps"] // 2), bn_momentum=opts["bn_momentum"], seed=opts["seed"],
        backbone_lr_mult=opts["backbone_lr_mult"],
        num_workers=opts["workers"], device=opts["device"], output_dir=state_dir,
        checkpoint_every=opts["checkpoint_every"], progress=not opts["no_progress"],
    )
    reporter.line(f"training {config.name} on {source.trained_on}: {options.steps} steps x {options.batch_size} "
                  f"at {opts['crop'][0]}x{opts['crop'][1]}")
    result = train(model, source.train, transform, options, resume=resume_state, config=config.to_dict())
    if not result.is_main:
        return 0
    used_bn = 0
    if opts["precise_bn"]:
        bn_batches = training_batches(source.train, transform, options.batch_size, seed=opts["seed"] + 7)
        used_bn = recompute_bn_stats(model, bn_batches, opts["precise_bn"])
    model.eval()
    metrics = None
    if source.held_out is not None:
        metrics = evaluate_miou(model, source.held_out, progress=not opts["no_progress"])
        reporter.line(f"held-out: {metrics.summary()}")
    hardware = _hardware(result.device, result.world_size)
    meta = {
        "description": f"ALiSNet demo checkpoint ({config.name}) trained by `alisnet-export train-demo`",
        "trained_on": source.trained_on,
        "steps": options.steps,
        "batch_size": options.batch_size * result.world_size,
        "crop": list(opts["crop"]),
        "training_time_s": round(result.total_seconds, 1),
        "hardware": hardware,
        "metrics": None if metrics is None else {**metrics.to_dict(), "eval_size": list(opts["crop"])},
        "command": _recipe_command(opts),
        "seed": opts["seed"],
        "recipe": {k: v for k, v in options.to_dict().items() if k not in ("output_dir", "progress", "device")},
        "precise_bn_batches": used_bn,
        "init_backbone": None if opts["init_backbone"] is None else str(opts["init_backbone"]),
        "init_from": None if opts["init_from"] is None else str(opts["init_from"]),
        "torch_version": torch.__version__,
    }
    save_checkpoint(output, model.state_dict(), config, meta=meta, half=opts["half"], force=opts["force"])
    size = output.stat().st_size
    reporter.line(f"saved {output} ({human_size(size)}, {options.steps} steps in {result.total_seconds / 60:.1f} min on "
                  f"{hardware['device']})", fg="green")
    reporter.line(f"next: alisnet-export inspect {output}  |  alisnet-export predict {output} --image PHOTO")
    reporter.result({"ok": True, "checkpoint": str(output), "size_bytes": size, "training_state": str(result.last_state),
                     "meta": meta})
    return 0


COMMANDS = [train_demo_command]
