"""One training loop, shared by the demo checkpoints (``train-demo``) and quantization-aware training.

    model, dataset of (image, mask), TrainTransform, TrainOptions  ->  train()  ->  TrainResult
      each step: hooks(step, model) -> batch -> model.losses (coarse CE + PointRend point loss)
                 -> backward -> clip -> optimizer -> LR schedule (warmup + cosine | poly)
      every N steps (rank 0): an atomic training-state checkpoint that ``resume`` continues from

Determinism: sample ``i`` of epoch ``e`` is augmented with its own generator seeded by
``(seed, e, i)`` and the batch order is DistributedSampler's ``(seed, e)`` permutation, so a resumed
run sees the same batches as an uninterrupted one; the torch RNG (PointRend's random training
points) is saved per rank in every training state.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the loop joins the process group (gloo on CPU,
nccl on CUDA), shards batches with DistributedSampler and wraps :class:`TrainingLoss` in
DistributedDataParallel; only rank 0 writes checkpoints, logs and the progress bar.

MnasNet's BatchNorm momentum is 0.0003 (torchvision, after TensorFlow): in a short training the
running statistics barely move and the eval-mode model predicts nothing. ``bn_momentum`` overrides
it during training and :func:`recompute_bn_stats` ("precise BN") re-estimates them afterwards.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .._io import atomic_write
from ..errors import AlisnetError, CheckpointError, DataError, EnvironmentProblem
from ..evaluate.metrics import SegmentationMetrics, evaluate_miou

__all__ = [
    "TrainOptions",
    "TrainResult",
    "TrainingLoss",
    "TrainingDiverged",
    "Hook",
    "train",
    "resolve_device",
    "set_bn_momentum",
    "recompute_bn_stats",
    "lr_factor",
    "training_batches",
    "load_training_state",
    "state_dir_for",
    "prepare_state_dir",
    "hardware_info",
    "load_backbone_weights",
    "evaluate_miou",
    "SegmentationMetrics",
    "TRAINING_STATE_FORMAT",
]

TRAINING_STATE_FORMAT = "alisnet-export-training-state"
_STATE_GLOB = "train_state_*.pth"

#: ``hook(step, model)``: called before every step with the bare (not DDP-wrapped) model
Hook = Callable[[int, nn.Module], None]


class TrainingDiverged(AlisnetError):
    """The loss became NaN or infinite: the learning rate is too high for this data/model."""


@dataclass(frozen=True)
class TrainOptions:
    """How to train. ``steps`` counts optimizer steps (one batch per rank each)."""

    steps: int
    batch_size: int = 8  # per rank
    lr: float = 1e-3
    optimizer: str = "adamw"  # "adamw" | "sgd"
    weight_decay: float = 1e-4  # on conv/linear weights only, not on BN or biases
    momentum: float = 0.9  # SGD only
    schedule: str = "cosine"  # "cosine" | "poly" | "constant", after the warmup
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01  # cosine ends at lr * min_lr_ratio
    grad_clip: Optional[float] = 5.0  # max global gradient norm; None disables
    bn_momentum: Optional[float] = None  # e.g. 0.1: override BatchNorm momentum while training
    point_loss_weight: float = 1.0
    #: learning-rate factor for ``backbone.*`` parameters: below 1 keeps pretrained (ImageNet) features
    #: from being overwritten by a small, narrow dataset
    backbone_lr_mult: float = 1.0
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    threads: Optional[int] = None  # CPU threads per process; default: the cores this process may use / local ranks
    output_dir: Optional[Path] = None  # training states + train_log.jsonl (rank 0)
    checkpoint_every: int = 0  # steps between training states; 0: only the final one (if output_dir)
    keep_checkpoints: int = 2
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "poly", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'poly' or 'constant', got {self.schedule!r}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.checkpoint_every < 0:
            raise ValueError("lr must be > 0; warmup_steps and checkpoint_every must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_dir"] = None if self.output_dir is None else str(self.output_dir)
        return d


@dataclass
class TrainResult:
    model: nn.Module  # the bare model, trained, on ``device``, in train mode
    start_step: int  # > 0 when resumed
    steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, total loss averaged over ranks)
    seconds: float = 0.0  # wall time of the steps run by this call
    total_seconds: float = 0.0  # including the runs this one resumed from
    world_size: int = 1
    rank: int = 0
    device: str = "cpu"
    last_state: Optional[Path] = None  # the last training state written (rank 0)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class TrainingLoss(nn.Module):
    """``forward(images, targets) -> {name: loss}``: the model's own losses as a module, so
    DistributedDataParallel (which hooks ``forward``) can wrap the whole training computation."""

    def __init__(self, model: nn.Module, point_loss_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.point_loss_weight = point_loss_weight

    def forward(self, images: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return self.model.losses(images, targets, point_loss_weight=self.point_loss_weight)


# --------------------------------------------------------------------------------------------------
# Devices, threads, process group
def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available (one GPU per local rank), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EnvironmentProblem(f"--device {name}: this machine has no usable CUDA GPU; use --device cpu or auto.")
        return torch.device(name if ":" in name else f"cuda:{local_rank % torch.cuda.device_count()}")
    if name != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device("cpu")


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    created_group: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _join_process_group(device_name: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    created = False
    if not dist.is_initialized():
        use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(local_rank % max(1, torch.cuda.device_count()))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        created = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, local_world, created)


# --------------------------------------------------------------------------------------------------
# BatchNorm
def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def set_bn_momentum(model: nn.Module, momentum: Optional[float]) -> int:
    """Set every BatchNorm's momentum (``None``: cumulative average); returns how many were changed."""
    bns = _batch_norms(model)
    for bn in bns:
        bn.momentum = momentum
    return len(bns)


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[Any], num_batches: int, *,
                       device: Optional[torch.device] = None) -> int:
    """"Precise BN": reset every BatchNorm's running statistics and re-estimate them as the exact
    average over ``num_batches`` training batches (images, or ``(images, targets)`` tuples).

    Only the backbone and head run (``forward_coarse`` when the model has it): PointRend has no BN.
    Returns the number of batches used; the model's train/eval mode and BN momenta are restored.
    """
    bns = _batch_norms(model)
    if not bns or num_batches < 1:
        return 0
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    device = device or next(model.parameters()).device
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = exact mean over the batches seen
    model.train()
    forward = getattr(model, "forward_coarse", model)
    used = 0
    try:
        for batch in batches:
            if used >= num_batches:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            forward(images.to(device))
            used += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.train(was_training)
    return used


# --------------------------------------------------------------------------------------------------
# Optimizer and learning rate
def lr_factor(step: int, options: TrainOptions) -> float:
    """Multiplier of ``options.lr`` at ``step``: linear warmup, then cosine / poly(0.9) / constant."""
    if step < options.warmup_steps:
        return 0.001 + (1 - 0.001) * step / options.warmup_steps
    if options.schedule == "constant":
        return 1.0
    span = max(1, options.steps - options.warmup_steps)
    t = min(1.0, (step - options.warmup_steps) / span)
    if options.schedule == "poly":
        return (1.0 - t) ** 0.9
    return options.min_lr_ratio + (1 - options.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _is_backbone(name: str) -> bool:
    """``backbone.*`` (also under DDP's ``module.`` prefix)."""
    return name.split(".", 1)[0] == "backbone" or name.startswith("module.backbone.")


def _build_optimizer(model: nn.Module, options: TrainOptions) -> torch.optim.Optimizer:
    groups = []
    for backbone in (False, True):
        named = [(n, p) for n, p in model.named_parameters()
                 if p.requires_grad and _is_backbone(n) == backbone]
        mult = options.backbone_lr_mult if backbone else 1.0
        decay = [p for _, p in named if p.ndim > 1]
        no_decay = [p for _, p in named if p.ndim <= 1]  # BN and biases
        groups += [{"params": decay, "weight_decay": options.weight_decay, "lr_mult": mult},
                   {"params": no_decay, "weight_decay": 0.0, "lr_mult": mult}]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = options.lr * g["lr_mult"]
    if options.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=options.lr, momentum=options.momentum)
    return torch.optim.AdamW(groups, lr=options.lr)


# --------------------------------------------------------------------------------------------------
# Data: deterministic per-(epoch, index) augmentation and a resumable batch order
class _Augmented(Dataset):
    """``dataset[(index, epoch)]`` -> ``transform(*dataset[index], rng)`` with rng seeded by (seed, epoch, index)."""

    def __init__(self, dataset: Dataset, transform: Callable, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index])
        image, mask = self.dataset[index]
        return self.transform(image, mask, rng)


class _ResumableBatches(Sampler):
    """Endless batches of ``(index, epoch)`` keys for this rank, starting at ``start_step``.

    Epoch ``e`` is DistributedSampler's permutation for ``set_epoch(e)`` (the same for any number of
    DataLoader workers); the tail that does not fill a batch is dropped.
    """

    def __init__(self, num_items: int, batch_size: int, start_step: int, seed: int, rank: int, world_size: int) -> None:
        self.base = DistributedSampler(range(num_items), num_replicas=world_size, rank=rank, shuffle=True,
                                       seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.steps_per_epoch = len(self.base) // batch_size
        if self.steps_per_epoch < 1:
            raise DataError(f"the dataset has {num_items} items: too few for one batch of {batch_size} on each of "
                            f"{world_size} process(es); add data or lower --batch-size.")
        self.start_step = start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, offset = divmod(self.start_step, self.steps_per_epoch)
        while True:
            self.base.set_epoch(epoch)
            order = list(self.base)
            for b in range(offset, self.steps_per_epoch):
                yield [(i, epoch) for i in order[b * self.batch_size:(b + 1) * self.batch_size]]
            epoch, offset = epoch + 1, 0


def training_batches(dataset: Dataset, transform: Callable, batch_size: int, *, seed: int = 0, start_step: int = 0,
                     num_workers: int = 0, rank: int = 0, world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    """An endless DataLoader of augmented ``(images (N, 3, H, W), targets (N, H, W))`` batches.

    Batch ``k`` (counting from 0, for this ``rank``) is the same whatever ``start_step`` the loader
    starts from and however many workers load it: the loop resumes through ``start_step``, and
    precise BN uses a loader with another ``seed``.
    """
    batches = _ResumableBatches(len(dataset), batch_size, start_step, seed, rank, world_size)
    # its own generator: creating the iterator would otherwise draw from the global torch RNG and
    # shift PointRend's random training points on resume
    return DataLoader(_Augmented(dataset, transform, seed), batch_sampler=batches, num_workers=num_workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# Training states (checkpoints for resuming, readable with torch.load(weights_only=True))
def _rng_state(ctx: _Dist) -> dict[str, list[Tensor]]:
    mine = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    if not ctx.active:
        gathered = [mine]
    else:
        gathered = [None] * ctx.world_size
        dist.all_gather_object(gathered, mine)
    out: dict[str, list[Tensor]] = {"torch": [g["torch"] for g in gathered]}
    if all(g["cuda"] is not None for g in gathered):
        out["cuda"] = [g["cuda"] for g in gathered]
    return out


def _save_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, step: int,
                         options: TrainOptions, rng: Mapping[str, Any], ctx: _Dist, config: Optional[dict],
                         elapsed: float) -> None:
    payload = {
        "format": TRAINING_STATE_FORMAT,
        "version": 1,
        "step": step,
        "world_size": ctx.world_size,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": dict(rng),
        "elapsed_s": elapsed,
        "options": options.to_dict(),
        "config": config,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()), force=True)


def _latest_state(folder: Path) -> Path:
    states = sorted(folder.glob(_STATE_GLOB))
    if not states:
        raise CheckpointError(f"{folder}: holds no training state ({_STATE_GLOB}); pass a training-state file or the "
                              "folder a previous run wrote them to (its --output's .state folder).")
    return states[-1]


def load_training_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training state (a file, or a folder: its latest ``train_state_*.pth``) safely."""
    path = Path(path)
    if path.is_dir():
        path = _latest_state(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such training state; --resume takes a train_state_*.pth file or its folder.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise CheckpointError(f"{path}: holds no training state (not a torch.save archive, or truncated); --resume "
                              "takes the train_state_*.pth files a previous training run wrote, or their folder.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / unsafe files
        raise CheckpointError(f"{path}: cannot read it as a training state: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise CheckpointError(f"{path}: not a training state (a model checkpoint?); --resume takes the "
                              "train_state_*.pth files a previous training run wrote.")
    state["path"] = str(path)
    return state


def _prune_states(folder: Path, keep: int) -> None:
    for old in sorted(folder.glob(_STATE_GLOB))[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)


def state_dir_for(output: Path) -> Path:
    """Where a run writing checkpoint ``output`` (``NAME.pth``) keeps its training states: ``NAME.train/``."""
    output = Path(output)
    return output.with_name(output.name.removesuffix(".pth") + ".train")


def prepare_state_dir(state_dir: Path, resume: Optional[Path], force: bool) -> None:
    """Refuse to mix a new run's training states with an earlier run's (unless ``force``: they are deleted);
    a run that ``resume``s continues them."""
    from ..errors import OutputError

    old = sorted(state_dir.glob(_STATE_GLOB)) if state_dir.is_dir() else []
    if old and resume is None:
        if not force:
            raise OutputError(f"{state_dir}: holds training states of an earlier run; pass --resume {state_dir} to "
                              "continue it, or --force to start over (deletes them).")
        for path in old + [state_dir / "train_log.jsonl"]:
            path.unlink(missing_ok=True)


def hardware_info(device: str, world_size: int) -> dict[str, Any]:
    """What a run trained on, for the checkpoint's meta: device, CPU model, usable cores, threads, processes."""
    import platform

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


def load_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> int:
    """Start ``model``'s backbone from a torchvision ImageNet state dict at ``path`` (read with
    ``weights_only``); returns how many tensors were copied."""
    from ..modeling import load_imagenet_weights

    path = Path(path)
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


# --------------------------------------------------------------------------------------------------
def _configure_threads(options: TrainOptions, device: torch.device, ctx: _Dist) -> None:
    if device.type != "cpu" and options.threads is None:
        return
    threads = options.threads or max(1, _usable_cores() // ctx.local_world_size)
    torch.set_num_threads(threads)


def _restore(state: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             ctx: _Dist) -> int:
    where = state.get("path", "training state")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{where}: does not fit this model/optimizer ({str(exc).splitlines()[0][:200]}); "
                              "resume with the same --config and optimizer it was written with.") from None
    scheduler.load_state_dict(state["scheduler"])
    rng = state.get("rng") or {}
    if state.get("world_size") == ctx.world_size and len(rng.get("torch", [])) == ctx.world_size:
        torch.set_rng_state(rng["torch"][ctx.rank])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"][ctx.rank])
    return int(state["step"])


def train(model: nn.Module, dataset: Dataset, transform: Callable, options: TrainOptions, *,
          hooks: Sequence[Hook] = (), resume: Optional[str | os.PathLike[str] | Mapping[str, Any]] = None,
          config: Optional[Mapping[str, Any]] = None, loss: Optional[nn.Module] = None) -> TrainResult:
    """Train ``model`` (in place) on ``transform(image, mask, rng)`` of ``dataset`` items.

    ``resume``: a training state (path, folder or an already loaded dict) to continue from; the run
    then goes on to ``options.steps`` in total. On resume every hook is first called once for each
    step already done (no training happens) so step-scheduled hooks reach the same state.
    ``config`` (the model config dict) is stored in training states so a resume can rebuild the model.
    ``loss``: a module ``(images, targets) -> {name: loss}`` holding ``model`` (e.g. QAT's distillation
    loss); default :class:`TrainingLoss`, the paper's loss.
    """
    ctx = _join_process_group(options.device)
    device = resolve_device(options.device, ctx.local_rank)
    _configure_threads(options, device, ctx)
    model.to(device).train()
    if options.bn_momentum is not None:
        set_bn_momentum(model, options.bn_momentum)
    optimizer = _build_optimizer(model, options)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, options))
    torch.manual_seed(options.seed + 1000 * ctx.rank)
    start, earlier_seconds = 0, 0.0
    if resume is not None:
        state = resume if isinstance(resume, Mapping) else load_training_state(resume)
        start = _restore(state, model, optimizer, scheduler, ctx)
        earlier_seconds = float(state.get("elapsed_s", 0.0))
        if start >= options.steps:
            raise CheckpointError(f"{state.get('path', 'resume state')}: already at step {start}; "
                                  f"pass --steps larger than {start} to train further.")
        for done in range(start):
            for hook in hooks:
                hook(done, model)
    loss_module: nn.Module = loss if loss is not None else TrainingLoss(model, options.point_loss_weight)
    loss_module.to(device)
    if ctx.active:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    loader = training_batches(dataset, transform, options.batch_size, seed=options.seed, start_step=start,
                              num_workers=options.num_workers, rank=ctx.rank, world_size=ctx.world_size,
                              pin_memory=device.type == "cuda")
    result = TrainResult(model, start, options.steps, world_size=ctx.world_size, rank=ctx.rank, device=str(device),
                         total_seconds=earlier_seconds)
    main = ctx.rank == 0
    out_dir = Path(options.output_dir) if options.output_dir is not None else None
    log = _Log(out_dir / "train_log.jsonl" if (out_dir and main) else None)
    try:
        result.seconds, result.last_state = _run_steps(
            model, loss_module, optimizer, scheduler, loader, options, hooks, start, ctx, device, result, log,
            out_dir, _config_dict(model, config),
        )
        result.total_seconds += result.seconds
        if ctx.active:  # DDP keeps parameters equal; make the BN running statistics rank 0's as well
            for buf in model.buffers():
                dist.broadcast(buf, 0)
    finally:
        log.close()
        if ctx.created_group:
            dist.destroy_process_group()
    return result


def _config_dict(model: nn.Module, config: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """The model config to store in training states: the one given, else the model's own (ALiSNet has one)."""
    if config is not None:
        return dict(config)
    own = getattr(model, "config", None)
    return own.to_dict() if hasattr(own, "to_dict") else None


class _Log:
    """``train_log.jsonl``: one JSON object per logged step (rank 0 only)."""

    def __init__(self, path: Optional[Path]) -> None:
        self.file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def _run_steps(model, loss_module, optimizer, scheduler, loader, options: TrainOptions, hooks: Sequence[Hook], start: int,
               ctx: _Dist, device: torch.device, result: TrainResult, log: _Log, out_dir: Optional[Path],
               config: Optional[dict]) -> tuple[float, Optional[Path]]:
    from tqdm.auto import tqdm

    main = ctx.rank == 0
    bar = tqdm(total=options.steps, initial=start, disable=not (options.progress and main), file=sys.stderr,
               desc="train", unit="step", dynamic_ncols=True)
    last_state: Optional[Path] = None
    began = time.perf_counter()
    batches = iter(loader)
    try:
        for step in range(start, options.steps):
            for hook in hooks:
                hook(step, model)
            images, targets = next(batches)
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            parts = loss_module(images, targets)
            loss = sum(parts.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = None
            if options.grad_clip:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip))
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            values = torch.stack([loss.detach()] + [v.detach() for v in parts.values()]).float()
            if ctx.active:
                dist.all_reduce(values)
                values /= ctx.world_size
            total = float(values[0])
            if not math.isfinite(total):
                raise TrainingDiverged(f"the training loss became {total} at step {step}; lower --lr "
                                       f"(now {options.lr}) or check the data for empty/invalid masks.")
            done = step + 1
            result.losses.append((done, total))
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}", lr=f"{lr:.2e}", refresh=False)
            if options.log_every and (done % options.log_every == 0 or done == options.steps):
                record = {"step": done, "loss": total, "lr": lr, "seconds": round(time.perf_counter() - began, 2)}
                record.update({k: float(v) for k, v in zip(parts, values[1:])})
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                log.write(record)
            due = options.checkpoint_every and done % options.checkpoint_every == 0
            if out_dir is not None and (due or done == options.steps):
                rng = _rng_state(ctx)  # a collective: every rank takes part
                if main:
                    last_state = out_dir / f"train_state_{done:07d}.pth"
                    _save_training_state(last_state, model, optimizer, scheduler, done, options, rng, ctx, config,
                                         result.total_seconds + time.perf_counter() - began)
                    _prune_states(out_dir, options.keep_checkpoints)
    finally:
        bar.close()
    return time.perf_counter() - began, last_state
