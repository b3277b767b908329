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

The loop is :func:`alisnet_export.training.train` (progress bar, periodic resumable states, DDP under
torchrun); the schedule is :func:`alisnet_export.quantize.eager.qat_schedule`.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import click

from ._common import Reporter, check_multiple_of_32, human_size, json_option, pass_reporter, resolve_checkpoint
from .train_cmd import _hardware, _prepare_state_dir, parse_crop, select_source

__all__ = ["COMMANDS", "qat_steps", "schedule_steps"]


def qat_steps(*, epochs: Optional[float], steps: Optional[int], num_images: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps for ``--steps`` or ``--epochs`` (passes over the training images, all ranks together)."""
    if steps is not None:
        return steps
    per_step = batch_size * world_size
    return max(1, math.ceil((epochs or 1.0) * num_images / per_step))


def schedule_steps(total: int, freeze_bn_at: float, freeze_observers_at: float) -> tuple[int, int]:
    """Steps at which BN statistics and then the observers freeze (fractions of the run, observers last).

    The observers always see at least one step: frozen at step 0 they would hold no ranges (a one-step run
    never freezes them)."""
    bn = min(total - 1, int(round(freeze_bn_at * total)))
    obs = min(total - 1, max(bn, int(round(freeze_observers_at * total))))
    return bn, max(1, obs)


def _agreement_text(a: dict[str, float]) -> str:
    return f"mask IoU {a['mean_iou']:.4f} (min {a['min_iou']:.4f}), contour {a['mean_boundary_px']:.2f} px"


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
    import torch

    from ..checkpoint import load_checkpoint
    from ..data import TrainTransform
    from .._io import refuse_existing
    from ..errors import CheckpointError
    from ..evaluation import evaluate_miou
    from ..quantize import eager
    from ..quantize.equalize import equalize_for_quantization
    from ..quantize.qat import DistillationLoss, agreement, as_runner, save_qat_checkpoint, seed_activation_ranges
    from ..samples import calibration_inputs, image_sets_for, parity_inputs
    from ..training import TrainOptions, load_training_state, train

    output: Path = opts["output"]
    refuse_existing([output], opts["force"])
    crop = parse_crop(opts.pop("crop_text"))
    ckpt_path = resolve_checkpoint(opts["ckpt"])
    loaded = load_checkpoint(ckpt_path, opts["config"])
    if loaded.is_qat:
        raise CheckpointError(f"{ckpt_path}: is already a QAT checkpoint; pass the float checkpoint it came from, "
                              "or --resume the QAT run's training states to fine-tune further.")
    source = select_source({**opts, "synthetic": False, "crop": crop})
    state_dir = output.with_name(output.name.removesuffix(".pth") + ".train")
    _prepare_state_dir(state_dir, opts["resume"], opts["force"])
    resume_state = load_training_state(opts["resume"]) if opts["resume"] is not None else None

    reference = loaded.build_model()
    height = opts["height"] or loaded.config.input.resize_height
    check_multiple_of_32(("--height", height))
    options_q = eager.EagerQuantOptions(per_channel=not opts["per_tensor"], quantize_point_head=not opts["float_point_head"])
    # every training image resized to the deployment height before the crop: the scale the app runs at
    factor = height / crop[0]
    transform = TrainTransform(crop, loaded.config.input.mean, loaded.config.input.std, scale_range=(factor, factor))
    check_set, calibration_set = image_sets_for(loaded.sha256, opts["check_images"], opts["calibration_images"],
                                                calibrate=True, warn=lambda m: reporter.line(f"warning: {m}", fg="yellow"))
    check_inputs = list(parity_inputs(list(check_set.paths), loaded.config, height=height, person_crops=False))
    calibration = calibration_inputs(list(calibration_set.paths), loaded.config, height=height)
    # even out activation ranges before the fake quantizers are placed (the float function is unchanged)
    start, equalization = equalize_for_quantization(reference, calibration, enabled=not opts["no_equalize"],
                                                    log=reporter.line)
    prepared = eager.prepare(start, qat=True, options=options_q)
    calibrated_start = not opts["no_calibrated_start"]
    if calibrated_start:
        observed = eager.prepare(start, qat=False, options=options_q)
        eager.calibrate(observed, calibration)
        seeded = seed_activation_ranges(prepared, observed)
        eager.disable_activation_observers(prepared)  # now: the checks below must not move the calibrated ranges
        reporter.line(f"{seeded} activation ranges seeded from PTQ calibration on {len(calibration)} images at {height} px "
                      f"({calibration_set.source})")
        ptq = eager.convert(observed)
        del observed
    float_runner = as_runner(reference)
    agreement_start = agreement(float_runner, as_runner(prepared), check_inputs)
    ptq_agreement = agreement(float_runner, as_runner(ptq), check_inputs) if calibrated_start else None
    reporter.line(f"before QAT, fake-quantized vs float on {check_set.source}: {_agreement_text(agreement_start)}"
                  + (f"; PTQ int8: {_agreement_text(ptq_agreement)}" if ptq_agreement else ""))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    steps = qat_steps(epochs=opts["epochs"], steps=opts["steps"], num_images=len(source.train),
                      batch_size=opts["batch_size"], world_size=world_size)
    bn_step, obs_step = schedule_steps(steps, opts["freeze_bn_at"], opts["freeze_observers_at"])
    options = TrainOptions(
        steps=steps, batch_size=opts["batch_size"], lr=opts["lr"], warmup_steps=min(opts["warmup"], steps // 2),
        bn_momentum=opts["bn_momentum"], seed=opts["seed"], num_workers=opts["workers"], device=opts["device"],
        output_dir=state_dir, checkpoint_every=opts["checkpoint_every"], progress=not opts["no_progress"],
    )
    reporter.line(f"QAT ({eager.ENGINE}) of {loaded.config.name} from {ckpt_path} on {source.trained_on}: {steps} steps x "
                  f"{options.batch_size}{f' x {world_size} processes' if world_size > 1 else ''} at {crop[0]}x{crop[1]} "
                  f"crops of {height} px images; BN frozen from step {bn_step}, "
                  + ("activation ranges calibrated and frozen, " if calibrated_start else "")
                  + f"weight ranges from step {obs_step}; loss: distillation"
                  + (f" + {opts['gt_weight']} x ground truth" if opts["gt_weight"] else ""))
    hook = eager.qat_schedule(freeze_bn_step=bn_step, freeze_observer_step=obs_step,
                              freeze_activation_observer_step=0 if calibrated_start else None)
    loss = DistillationLoss(prepared, reference, gt_weight=opts["gt_weight"])
    result = train(prepared, source.train, transform, options, hooks=[hook], resume=resume_state,
                   config=loaded.config.to_dict(), loss=loss)
    if not result.is_main:
        return 0
    prepared.to("cpu").eval()
    try:  # prove now that it converts, rather than at export time
        int8 = eager.convert(prepared)
        with torch.inference_mode():
            int8(torch.zeros(1, 3, 64, 64))
    except Exception as exc:
        raise CheckpointError(f"the fine-tuned QAT model does not convert to int8: {str(exc).splitlines()[0]}") from exc
    metrics = None
    if source.held_out is not None:
        metrics = evaluate_miou(prepared, source.held_out, progress=not opts["no_progress"])
        reporter.line(f"held-out (fake-quantized model): {metrics.summary()}")
    agreement_end = agreement(float_runner, as_runner(prepared), check_inputs)
    reporter.line(f"after QAT, fake-quantized vs float on {check_set.source}: {_agreement_text(agreement_end)}"
                  + (" (better than the start)" if agreement_end["mean_iou"] > agreement_start["mean_iou"]
                     else " (NOT better than the start: try a lower --lr or more data)"),
                  fg="green" if agreement_end["mean_iou"] > agreement_start["mean_iou"] else "yellow")
    info = {
        "steps": steps,
        "batch_size": options.batch_size * result.world_size,
        "crop": list(crop),
        "freeze_bn_step": bn_step,
        "freeze_observer_step": obs_step,
        "equalization": equalization,
        "height": height,
        "calibrated_start": calibrated_start,
        "calibration": {**calibration_set.to_dict(), "height": height} if calibrated_start else None,
        "loss": {"distillation": True, "gt_weight": opts["gt_weight"]},
        "lr": opts["lr"],
        "agreement_with_float": {"images": check_set.to_dict(), "start": agreement_start, "end": agreement_end,
                                 "ptq_int8": ptq_agreement},
        "data": source.trained_on,
        "float_checkpoint": str(ckpt_path),
        "float_checkpoint_sha256": loaded.sha256,
        "training_time_s": round(result.total_seconds, 1),
        "hardware": _hardware(result.device, result.world_size),
        "metrics": None if metrics is None else metrics.to_dict(),
        "command": shlex.join(["alisnet-export", *sys.argv[1:]]),
        "torch_version": str(torch.__version__),
    }
    meta = {**loaded.meta, "description": f"QAT ({eager.ENGINE}) fine-tune of {ckpt_path.name}"}
    save_qat_checkpoint(output, prepared, loaded.config, reference=reference.state_dict(), options=options_q, info=info,
                        meta=meta, force=opts["force"])
    size = output.stat().st_size
    reporter.line(f"saved QAT checkpoint {output} ({human_size(size)}, {steps} steps in "
                  f"{result.total_seconds / 60:.1f} min on {result.device})", fg="green")
    reporter.line(f"next: alisnet-export ptl {output}   # int8 .ptl converted from this QAT model, gated on parity")
    reporter.result({"ok": True, "checkpoint": str(output), "size_bytes": size, "qat": info,
                     "training_state": None if result.last_state is None else str(result.last_state)})
    return 0


COMMANDS = [qat_command]
