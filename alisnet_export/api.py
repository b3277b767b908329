"""The Python surface: what a notebook or a CI script calls, and what the CLI's export commands call.

    >>> from alisnet_export import api
    >>> session = api.prepare()                          # the embedded default, its parity and calibration sets
    >>> outcome = api.export(session, "ptl", "out/")     # int8 .ptl + manifest + golden + parity report
    >>> api.export(session, "onnx", "out/", options={"ort_format": True})  # a format's options: OnnxOptions
    >>> outcome.passed, outcome.record.entry["parity"]["summary"]["mean_iou"]
    >>> bundle = api.bundle(session, "ptl,onnx", "out/bundle/demo")
    >>> results = api.recheck("out/alisnet_mnasnet-int8.ptl", reference=session.loaded.path)

A :class:`Session` is everything an export needs that does not depend on the format: the checkpoint, the
float reference model (and the QAT model of a QAT checkpoint), the parity images preprocessed the
paper's way with the float model's outputs on them (computed once, shared by every format), the
calibration images (built on first use, int8 only) and the golden-vector source. Data flows one way:
``prepare`` reads, ``export``/``bundle`` write, nothing here prints (pass ``log`` to hear progress).

At 1024 px call :func:`keep_freed_memory` once, first (the command line does): glibc's default allocator
page-faults every large activation in again on each forward, which doubled the time of a forward here
(docs/design.md 4.11). It is not done on import, because it changes the whole process's allocator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .allocator import keep_freed_memory
from .checkpoint import LoadedCheckpoint, load_checkpoint
from .parity import Thresholds, default_thresholds
from .pipeline import ExportOutcome, ReferenceOutputs
from .samples import ImageSet, calibration_inputs, golden_source, image_sets_for, parity_inputs

__all__ = ["keep_freed_memory", "Session", "prepare", "export", "bundle", "RecheckPlan", "plan_recheck", "recheck", "thresholds_for",
           "QatResult", "qat", "TrainDemoResult", "train_demo", "PredictResult", "predict"]

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@dataclass
class Session:
    """A checkpoint prepared for export (see the module docstring). Build it with :func:`prepare`."""

    loaded: LoadedCheckpoint
    reference: torch.nn.Module  # the float model every artifact is judged against
    qat_model: Optional[torch.nn.Module]  # the fake-quantized model of a QAT checkpoint
    parity_set: ImageSet
    calibration_set: Optional[ImageSet]  # None for QAT checkpoints and float-only sessions
    height: int
    calibration_height: int
    inputs: list[tuple[str, np.ndarray]]  # the parity inputs, (1, 3, H, W) float32
    reference_outputs: ReferenceOutputs  # the float logits (and PointRend tie zones) on ``inputs``
    golden: tuple[str, np.ndarray] = field(default_factory=golden_source)
    warnings: list[str] = field(default_factory=list)
    _calibration: Optional[list[torch.Tensor]] = field(default=None, repr=False)

    @property
    def config(self):
        return self.loaded.config

    def calibration(self) -> list[torch.Tensor]:
        """The int8 calibration inputs at ``calibration_height``, built once on first use."""
        if self.calibration_set is None:
            raise ValueError(f"{self.loaded.path}: this session has no calibration set (a QAT checkpoint, or "
                             "prepare(..., calibrate=False))")
        if self._calibration is None:
            self._calibration = calibration_inputs(list(self.calibration_set.paths), self.config,
                                                   height=self.calibration_height)
        return self._calibration


def prepare(ckpt: Optional[str | Path | LoadedCheckpoint] = None, *, config: Optional[str] = None, pointrend: Optional[bool] = None,
            images: Sequence[str | Path] = (), calibration_images: Sequence[str | Path] = (), height: int = 1024,
            calibration_height: Optional[int] = None, person_crops: bool = True, calibrate: bool = True,
            log: Log = _quiet) -> Session:
    """Load ``ckpt`` (a path, default the embedded default, or an already loaded checkpoint) and prepare its
    parity and calibration images.

    ``images`` / ``calibration_images``: files, folders or named sets (``samples``, ``testbed:SPLIT[:N]``);
    empty means the checkpoint's own sets (``models/zoo.json``), disjoint by construction. Warnings (few
    calibration images, calibration images that are also parity images) go to ``log`` and
    :attr:`Session.warnings`. ``calibrate=False`` skips the calibration set (float exports only)."""
    from .quantize.qat import load_qat_model
    from .runtimes.torch_runners import TorchModelRunner
    from .zoo import default_checkpoint

    if isinstance(ckpt, LoadedCheckpoint):
        loaded = ckpt
    else:
        loaded = load_checkpoint(Path(ckpt) if ckpt is not None else default_checkpoint().path, config, pointrend=pointrend)
    qat_model = None
    if loaded.is_qat:
        qat_model, reference, _ = load_qat_model(loaded)
    else:
        reference = loaded.build_model()
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        log(f"warning: {message}")

    # a QAT checkpoint checks on the image sets of the float checkpoint it was fine-tuned from
    source_sha256 = (loaded.qat or {}).get("float_checkpoint_sha256") if loaded.is_qat else loaded.sha256
    parity_set, calibration_set = image_sets_for(source_sha256, images, calibration_images,
                                                 calibrate=calibrate and not loaded.is_qat, warn=warn)
    inputs = list(parity_inputs(list(parity_set.paths), loaded.config, height=height, reference=reference,
                                person_crops=person_crops))
    return Session(loaded, reference, qat_model, parity_set, calibration_set, height, calibration_height or height,
                   inputs, ReferenceOutputs(TorchModelRunner(reference), inputs), warnings=warnings)


def thresholds_for(precision: str, **overrides: Any) -> Thresholds:
    """The default gates of ``precision`` with the given ones replaced (``None`` keeps the default)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(default_thresholds(precision), **given)


def export(session: Session, target: Any, out: str | Path, *, precision: Optional[str] = None, name: Optional[str] = None,
           force: bool = False, thresholds: Optional[Thresholds] = None, run_parity: bool = True,
           options: Any = None, bounds=None, command: Optional[str] = None, log: Log = _quiet,
           progress: Callable[[str], None] = lambda image_name: None) -> ExportOutcome:
    """Export ``session``'s model to ``target`` in folder ``out``: ``NAME.<ext>``, ``NAME.manifest.json``,
    ``NAME.golden.algv`` and ``NAME.parity.json``.

    ``target``: a format name (``ptl``, ``pte``, ``onnx``, ``coreml``: a row of
    :data:`alisnet_export.formats.FORMATS`) with its ``options`` (that exporter's options dataclass, e.g.
    ``PtlOptions(keep_float=KeepFloat(auto=True))`` or ``OnnxOptions(ort_format=True)``, or a dict of its
    fields), or an already configured :class:`~alisnet_export.exporters.base.Exporter`. ``precision``
    defaults to the format's default (int8; Core ML fp16). The returned outcome's ``passed`` is False when a
    gate failed; the artifact is then written and marked failed."""
    from ._io import check_writable
    from .errors import DataError
    from .exporters.base import ExportJob
    from .formats import format_spec
    from .manifest import input_section, output_section, provenance_section
    from .pipeline import export_single, single_export_paths

    if isinstance(target, str):
        try:
            exporter = format_spec(target).new_exporter(options)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    elif options is not None:
        raise DataError("options go with a format name; a configured exporter already has its own")
    else:
        exporter = target
    precision = precision or exporter.default_precision
    exporter.check_precision(precision)
    cfg, out = session.config, Path(out)
    bounds = exporter.bounds_for(cfg, bounds)
    name = name or f"{cfg.name}-{precision}"
    check_writable(single_export_paths(exporter, out, name), force)  # fail before any work
    for input_name, x in session.inputs:
        bounds.check(x.shape[2], x.shape[3], what=f"parity input {input_name}")
    metadata = {
        "variant": cfg.name,
        "input": input_section(cfg, height=session.height, min_hw=bounds.min_hw, max_hw=bounds.max_hw,
                               min_pixels=bounds.min_pixels),
        "output": output_section(cfg),
        "provenance": provenance_section(),
    }
    calibration_info = ({**session.calibration_set.to_dict(), "height": session.calibration_height}
                        if precision == "int8" and session.calibration_set is not None and not session.loaded.is_qat
                        else {})
    job = ExportJob(session.loaded, session.reference, precision, session.calibration, bounds, log=log,
                    qat_model=session.qat_model, metadata=metadata, parity_images=session.parity_set.to_dict(),
                    qat_info=dict(session.loaded.qat) if session.loaded.is_qat else {},
                    calibration_info=calibration_info)
    return export_single(exporter, job, out_dir=out, name=name, force=force, reference=session.reference_outputs,
                         golden_source=session.golden, height=session.height,
                         thresholds=thresholds or default_thresholds(precision),
                         run_parity_gate=run_parity, command=command, progress=progress)


def bundle(session: Session, targets: str | Sequence[Any], out: str | Path, *, float_: bool = False, force: bool = False,
           thresholds: Optional[Callable[[str], Thresholds]] = None, command: Optional[str] = None, log: Log = _quiet,
           on_target: Callable[[Any, str], None] = lambda target, stage: None,
           progress: Callable[[str], None] = lambda image_name: None):
    """Every target (``"ptl,pte,onnx,coreml"``, ``"ptl:float32,onnx"``, or parsed targets) in one bundle folder
    ``out`` (+ ``out.zip``) with one manifest, one golden file and the emitted parity suite."""
    from .bundle.build import build_bundle, check_bundle_writable, parse_targets

    parsed = parse_targets(targets, float_=float_) if isinstance(targets, str) else list(targets)
    out = Path(out)
    check_bundle_writable(out, force)
    calibration_info = ({} if session.calibration_set is None
                        else {**session.calibration_set.to_dict(), "height": session.calibration_height})
    return build_bundle(
        parsed, folder=out, force=force, loaded=session.loaded, reference_model=session.reference,
        qat_model=session.qat_model, reference=session.reference_outputs, photos=list(session.parity_set.paths),
        calibration=session.calibration, calibration_info=calibration_info, parity_images=session.parity_set.to_dict(),
        golden_source=session.golden, height=session.height, thresholds=thresholds or default_thresholds,
        command=command, log=log, on_target=on_target, progress=progress)


@dataclass
class RecheckPlan:
    """What re-checking shipped artifacts needs, prepared once for all of them (see :func:`plan_recheck`)."""

    targets: list[Any]  # parity_check targets: each artifact with its manifest
    loaded: LoadedCheckpoint  # the float reference checkpoint
    model: torch.nn.Module
    height: int
    inputs: list[tuple[str, np.ndarray]]
    reference: ReferenceOutputs  # each input's float logits (and tie zone), once for all targets


def plan_recheck(artifact: str | Path, *, reference: Optional[str | Path] = None, config: Optional[str] = None,
                 images: Sequence[str | Path] = (), height: Optional[int] = None, person_crops: bool = True,
                 precision: Optional[str] = None) -> RecheckPlan:
    """Resolve ``artifact`` (a file, a NAME.manifest.json or a bundle folder), load the float ``reference``
    (default: the embedded default; a QAT checkpoint is refused) and preprocess ``images`` (default: the
    reference's parity set) at ``height`` (default: the manifest's, else 1024)."""
    from .errors import DataError
    from .verify.recheck import resolve_targets
    from .runtimes.torch_runners import TorchModelRunner
    from .samples import default_image_sets, resolve_image_set
    from .zoo import default_checkpoint

    targets = resolve_targets(Path(artifact), precision)
    path = Path(reference) if reference is not None else default_checkpoint().path
    loaded = load_checkpoint(path, config)
    if loaded.is_qat:
        raise DataError(f"{path}: a QAT checkpoint; --reference must be the float model the artifact should match")
    model = loaded.build_model()
    manifest_height = next((t.manifest["input"]["resize"]["height"] for t in targets if t.manifest), None)
    height = height or manifest_height or 1024
    if height % 32:
        raise DataError(f"--height {height} is not a multiple of 32")
    photos = resolve_image_set(images, default=default_image_sets(loaded.sha256)[0])
    inputs = list(parity_inputs(list(photos.paths), loaded.config, height=height, reference=model,
                                person_crops=person_crops))
    return RecheckPlan(targets, loaded, model, height, inputs, ReferenceOutputs(TorchModelRunner(model), inputs))


def recheck(artifact: str | Path, *, reference: Optional[str | Path] = None, config: Optional[str] = None,
            images: Sequence[str | Path] = (), height: Optional[int] = None, person_crops: bool = True,
            precision: Optional[str] = None, thresholds: Optional[Callable[[str], Thresholds]] = None) -> list[Any]:
    """Check shipped artifacts against the float ``reference`` checkpoint (:func:`plan_recheck` says which
    images, at which height). Returns one result per artifact (``.report`` is None for an artifact whose
    runtime cannot run here)."""
    from .verify.recheck import check_target

    plan = plan_recheck(artifact, reference=reference, config=config, images=images, height=height,
                        person_crops=person_crops, precision=precision)
    gates = thresholds or default_thresholds
    return [check_target(t, plan.reference, plan.loaded.config, plan.inputs, thresholds=gates(t.precision))
            for t in plan.targets]


# --------------------------------------------------------------------------------------------------
# Quantization-aware fine-tuning (``alisnet-export qat``): the recipe of docs/design.md section 4.10,
# built from the pieces in quantize/qat.py and the one training loop.
@dataclass
class QatResult:
    """What :func:`qat` wrote and measured (rank 0 of a torchrun run; the other ranks get None)."""

    checkpoint: Path  # the QAT checkpoint (``ptl`` converts it to int8)
    size_bytes: int
    info: dict[str, Any]  # its ``qat`` section: schedule, data, image sets, agreement, timings, hardware
    check_set: ImageSet  # the held-out images the agreement with the float model was measured on
    agreement_start: dict[str, float]  # fake-quantized vs float before fine-tuning (mean/min IoU, contour px)
    agreement_end: dict[str, float]  # ... and after
    ptq_agreement: Optional[dict[str, float]]  # the PTQ int8 model vs float (None without a calibrated start)
    metrics: Any  # SegmentationMetrics of the fake-quantized model on the held-out images, else None
    training_state: Optional[Path]  # the last resumable training state
    device: str
    steps: int
    training_seconds: float  # including the runs this one resumed from
    seconds: float  # the whole call
    export_fidelity: Optional[dict[str, Any]] = None  # with ``check_export_fidelity``: int8 vs the QAT model

    @property
    def improved(self) -> bool:
        """Whether fine-tuning brought the fake-quantized model closer to the float model (mean mask IoU)."""
        return self.agreement_end["mean_iou"] > self.agreement_start["mean_iou"]


@dataclass
class _QatRun:
    """A QAT run between its checks and its checkpoint: models, data, image sets and the start's measures."""

    ckpt_path: Path
    loaded: LoadedCheckpoint
    reference: torch.nn.Module  # the float model: the teacher, and what agreement is measured against
    source: Any  # data.sources.DataSource
    state_dir: Path
    resume_state: Optional[dict[str, Any]]
    height: int
    check_set: ImageSet
    calibration_set: ImageSet
    check_inputs: list[tuple[str, np.ndarray]]
    calibration: list[torch.Tensor]
    prepared: Any = None  # the fake-quantized model being fine-tuned
    equalization: Optional[dict[str, Any]] = None
    agreement_start: Optional[dict[str, float]] = None
    ptq_agreement: Optional[dict[str, float]] = None


def _qat_run(ckpt: Optional[str | Path], data: Any, output: Path, *, config: Optional[str], crop: tuple[int, int],
             height: Optional[int], calibration_images: Sequence[str | Path], check_images: Sequence[str | Path],
             eval_images: int, seed: int, resume: Optional[str | Path], force: bool, log: Log) -> _QatRun:
    """Every check that can fail before work (output, checkpoint kind, data, training states, height), then
    the float model and the image sets at the deployment height."""
    from ._io import refuse_existing
    from .data.sources import open_training_data
    from .errors import CheckpointError, DataError
    from .train.trainer import load_training_state, prepare_state_dir, state_dir_for
    from .zoo import default_checkpoint

    refuse_existing([output], force)
    ckpt_path = Path(ckpt) if ckpt is not None else default_checkpoint().path
    loaded = load_checkpoint(ckpt_path, config)
    if loaded.is_qat:
        raise CheckpointError(f"{ckpt_path}: is already a QAT checkpoint; pass the float checkpoint it came from, "
                              "or --resume the QAT run's training states to fine-tune further.")
    source = open_training_data(data, crop=crop, eval_images=eval_images, seed=seed)
    state_dir = state_dir_for(output)
    prepare_state_dir(state_dir, None if resume is None else Path(resume), force)
    resume_state = load_training_state(resume) if resume is not None else None
    reference = loaded.build_model()
    height = height or loaded.config.input.resize_height
    if height % 32:
        raise DataError(f"--height {height} is not a multiple of 32")
    check_set, calibration_set = image_sets_for(loaded.sha256, check_images, calibration_images, calibrate=True,
                                                warn=lambda m: log(f"warning: {m}"))
    check_inputs = list(parity_inputs(list(check_set.paths), loaded.config, height=height, person_crops=False))
    calibration = calibration_inputs(list(calibration_set.paths), loaded.config, height=height)
    return _QatRun(ckpt_path, loaded, reference, source, state_dir, resume_state, height, check_set, calibration_set,
                   check_inputs, calibration)


def _qat_start(run: _QatRun, options: Any, *, equalize: bool, calibrated_start: bool, log: Log) -> None:
    """Place the fake quantizers (after equalization), seed their activation ranges from PTQ calibration,
    and measure where the fake-quantized (and the PTQ int8) model starts against the float model."""
    from .quantize import eager
    from .quantize.equalize import equalize_for_quantization
    from .quantize.qat import agreement, as_runner, calibrated_start as seed_from_ptq, describe_agreement

    # even out activation ranges before the fake quantizers are placed (the float function is unchanged)
    start, run.equalization = equalize_for_quantization(run.reference, run.calibration, enabled=equalize, log=log)
    run.prepared = eager.prepare(start, qat=True, options=options)
    ptq = None
    if calibrated_start:
        seeded, ptq = seed_from_ptq(run.prepared, start, run.calibration, options)
        log(f"{seeded} activation ranges seeded from PTQ calibration on {len(run.calibration)} images at "
            f"{run.height} px ({run.calibration_set.source})")
    float_runner = as_runner(run.reference)
    run.agreement_start = agreement(float_runner, as_runner(run.prepared), run.check_inputs)
    run.ptq_agreement = agreement(float_runner, as_runner(ptq), run.check_inputs) if ptq is not None else None
    log(f"before QAT, fake-quantized vs float on {run.check_set.source}: {describe_agreement(run.agreement_start)}"
        + (f"; PTQ int8: {describe_agreement(run.ptq_agreement)}" if run.ptq_agreement else ""))


def _qat_train(run: _QatRun, *, epochs: Optional[float], steps: Optional[int], batch_size: int, crop: tuple[int, int],
               calibrated_start: bool, gt_weight: float, lr: float, warmup: int, freeze_bn_at: float,
               freeze_observers_at: float, bn_momentum: float, device: str, workers: int, checkpoint_every: int,
               seed: int, progress: bool, log: Log) -> tuple[Any, dict[str, Any]]:
    """Fine-tune ``run.prepared`` on the schedule, distilling the float model; returns the training
    result and the schedule (steps, BN and observer freeze steps) for the checkpoint."""
    import os

    from .data import TrainTransform
    from .quantize import eager
    from .quantize.qat import DistillationLoss, qat_steps, schedule_steps
    from .train.trainer import TrainOptions, train

    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    total = qat_steps(epochs=epochs, steps=steps, num_images=len(run.source.train), batch_size=batch_size,
                      world_size=world_size)
    bn_step, obs_step = schedule_steps(total, freeze_bn_at, freeze_observers_at)
    options = TrainOptions(steps=total, batch_size=batch_size, lr=lr, warmup_steps=min(warmup, total // 2),
                           bn_momentum=bn_momentum, seed=seed, num_workers=workers, device=device,
                           output_dir=run.state_dir, checkpoint_every=checkpoint_every, progress=progress)
    log(f"QAT ({eager.ENGINE}) of {run.loaded.config.name} from {run.ckpt_path} on {run.source.trained_on}: {total} "
        f"steps x {batch_size}{f' x {world_size} processes' if world_size > 1 else ''} at {crop[0]}x{crop[1]} "
        f"crops of {run.height} px images; BN frozen from step {bn_step}, "
        + ("activation ranges calibrated and frozen, " if calibrated_start else "")
        + f"weight ranges from step {obs_step}; loss: distillation"
        + (f" + {gt_weight} x ground truth" if gt_weight else ""))
    hook = eager.qat_schedule(freeze_bn_step=bn_step, freeze_observer_step=obs_step,
                              freeze_activation_observer_step=0 if calibrated_start else None)
    cfg, factor = run.loaded.config, run.height / crop[0]
    # every training image resized to the deployment height before the crop: the scale the app runs at
    transform = TrainTransform(crop, cfg.input.mean, cfg.input.std, scale_range=(factor, factor))
    result = train(run.prepared, run.source.train, transform, options, hooks=[hook], resume=run.resume_state,
                   config=cfg.to_dict(), loss=DistillationLoss(run.prepared, run.reference, gt_weight=gt_weight))
    return result, {"steps": total, "batch_size": batch_size * result.world_size, "crop": list(crop),
                    "freeze_bn_step": bn_step, "freeze_observer_step": obs_step}


def qat(ckpt: Optional[str | Path], data: Any, output: str | Path, *, config: Optional[str] = None,
        epochs: Optional[float] = None, steps: Optional[int] = None, batch_size: int = 8,
        crop: tuple[int, int] = (384, 288), height: Optional[int] = None,
        calibration_images: Sequence[str | Path] = (), check_images: Sequence[str | Path] = (),
        calibrated_start: bool = True, gt_weight: float = 0.0, lr: float = 2e-5, warmup: int = 20,
        freeze_bn_at: float = 0.0, freeze_observers_at: float = 0.75, bn_momentum: float = 0.01,
        per_channel: bool = True, quantize_point_head: bool = True, equalize: bool = True, device: str = "auto",
        workers: int = 0, resume: Optional[str | Path] = None, checkpoint_every: int = 100, eval_images: int = 0,
        seed: int = 0, progress: bool = True, force: bool = False, check_export_fidelity: bool = False,
        command: Optional[str] = None, log: Log = _quiet) -> Optional[QatResult]:
    """Quantization-aware fine-tuning (QNNPACK) of the float checkpoint ``ckpt`` (default: the embedded
    default) on ``data``; writes the QAT checkpoint ``output``, which ``export(prepare(output), "ptl", ...)``
    (or ``alisnet-export ptl``) converts to int8.

    ``data``: a folder with ``images/`` and ``masks/``, ``"testbed:train[:N]"``, or a spec from
    :mod:`alisnet_export.data.sources` (``FolderData``, ``CocoData``). The recipe (docs/design.md section 4.10):
    equalize; PTQ-calibrate at the deployment ``height`` (default: the config's resize height) on
    ``calibration_images`` (default: the checkpoint's calibration set) and seed the fake quantizers' activation
    ranges from it, frozen (``calibrated_start=False``: empty observers that learn from the crops); fine-tune on
    ``crop``s cut from images resized to ``height``, distilling the float model (plus ``gt_weight`` x the paper's
    loss on the labels), BN statistics frozen from ``freeze_bn_at`` and weight ranges from ``freeze_observers_at``
    of the run; prove that the result converts to int8. ``steps`` overrides ``epochs`` (default: one pass over
    the data, torchrun ranks together). Resumable training states go to ``OUTPUT.train/``.

    Before and after, the fake-quantized model's agreement with the float model is measured on
    ``check_images`` (default: the checkpoint's parity set). ``check_export_fidelity`` also measures the
    int8 model converted here against the QAT model (what ``ptl``'s export-fidelity gate measures on the
    .ptl). ``command`` is recorded in the checkpoint. Returns None on torchrun ranks other than 0."""
    import time

    from .quantize import eager
    from .quantize.qat import agreement, as_runner, convert_checked, export_fidelity, save_qat_checkpoint
    from .train.trainer import hardware_info

    began, output = time.perf_counter(), Path(output)
    run = _qat_run(ckpt, data, output, config=config, crop=crop, height=height, calibration_images=calibration_images,
                   check_images=check_images, eval_images=eval_images, seed=seed, resume=resume, force=force, log=log)
    options = eager.EagerQuantOptions(per_channel=per_channel, quantize_point_head=quantize_point_head)
    _qat_start(run, options, equalize=equalize, calibrated_start=calibrated_start, log=log)
    result, schedule = _qat_train(
        run, epochs=epochs, steps=steps, batch_size=batch_size, crop=crop, calibrated_start=calibrated_start,
        gt_weight=gt_weight, lr=lr, warmup=warmup, freeze_bn_at=freeze_bn_at, freeze_observers_at=freeze_observers_at,
        bn_momentum=bn_momentum, device=device, workers=workers, checkpoint_every=checkpoint_every, seed=seed,
        progress=progress, log=log)
    if not result.is_main:
        return None
    int8 = convert_checked(run.prepared)
    fidelity = export_fidelity(run.prepared, as_runner(int8), run.check_inputs) if check_export_fidelity else None
    metrics = None
    if run.source.held_out is not None:
        from .evaluate.metrics import evaluate_miou

        metrics = evaluate_miou(run.prepared, run.source.held_out, progress=progress)
        log(f"held-out (fake-quantized model): {metrics.summary()}")
    agreement_end = agreement(as_runner(run.reference), as_runner(run.prepared), run.check_inputs)
    info = {
        **schedule, "equalization": run.equalization, "height": run.height, "calibrated_start": calibrated_start,
        "calibration": {**run.calibration_set.to_dict(), "height": run.height} if calibrated_start else None,
        "loss": {"distillation": True, "gt_weight": gt_weight}, "lr": lr,
        "agreement_with_float": {"images": run.check_set.to_dict(), "start": run.agreement_start, "end": agreement_end,
                                 "ptq_int8": run.ptq_agreement},
        "data": run.source.trained_on, "float_checkpoint": str(run.ckpt_path),
        "float_checkpoint_sha256": run.loaded.sha256, "training_time_s": round(result.total_seconds, 1),
        "hardware": hardware_info(result.device, result.world_size),
        "metrics": None if metrics is None else metrics.to_dict(), "command": command,
        "torch_version": str(torch.__version__),
    }
    meta = {**run.loaded.meta, "description": f"QAT ({eager.ENGINE}) fine-tune of {run.ckpt_path.name}"}
    save_qat_checkpoint(output, run.prepared, run.loaded.config, reference=run.reference.state_dict(), options=options,
                        info=info, meta=meta, force=force)
    return QatResult(output, output.stat().st_size, info, run.check_set, run.agreement_start, agreement_end,
                     run.ptq_agreement, metrics, result.last_state, result.device, schedule["steps"],
                     result.total_seconds, time.perf_counter() - began, fidelity)


# --------------------------------------------------------------------------------------------------
# Demo checkpoints (``alisnet-export train-demo``): the float recipe on the same training loop.
@dataclass
class TrainDemoResult:
    """What :func:`train_demo` wrote (rank 0 of a torchrun run; the other ranks get None)."""

    checkpoint: Path
    size_bytes: int
    meta: dict[str, Any]  # the checkpoint's meta: data, recipe, hardware, timings, held-out metrics, command
    metrics: Any  # SegmentationMetrics on the held-out images, else None
    training_state: Optional[Path]  # the last resumable training state
    device: str
    steps: int
    training_seconds: float  # including the runs this one resumed from


def _training_config(config: Optional[str], resume_state: Optional[dict[str, Any]]) -> Any:
    """``config``, else the one stored in the resumed state, else :data:`config.DEFAULT_VARIANT`; a given
    config must match the stored one."""
    from .config import DEFAULT_VARIANT, ModelConfig, load_config
    from .errors import CheckpointError

    stored = (resume_state or {}).get("config")
    if stored is not None and config is None:
        return ModelConfig.from_dict(stored, source=f"{resume_state['path']} (stored config)")
    cfg = load_config(config or DEFAULT_VARIANT)
    if stored is not None and stored.get("name") != cfg.name:
        raise CheckpointError(f"{resume_state['path']}: was trained with config {stored.get('name')!r}, "
                              f"not {cfg.name!r}; drop --config to use the stored one.")
    return cfg


def _initial_weights(model: torch.nn.Module, config_name: str, init_backbone: Optional[str | Path],
                     init_from: Optional[str | Path], log: Log) -> None:
    """Start from ImageNet backbone weights and/or a whole float checkpoint of the same config."""
    from .train.trainer import load_backbone_weights

    if init_backbone is not None:
        copied = load_backbone_weights(model, init_backbone)
        log(f"backbone: {copied} tensors from {init_backbone}")
    if init_from is not None:
        start = load_checkpoint(Path(init_from), config_name)
        model.load_state_dict(start.state_dict, strict=True)
        log(f"fine-tuning from {init_from} ({start.config.name}, sha256 {start.sha256[:12]})")


def _train_demo_command(data: Any, config: str, output: Path, r: dict[str, Any]) -> str:
    """The canonical ``alisnet-export train-demo`` line that reproduces a run (every option spelled out)."""
    import shlex

    from .data.sources import CocoData, SyntheticData, as_spec

    spec, args = as_spec(data), ["alisnet-export", "train-demo"]
    if isinstance(spec, SyntheticData):
        args += ["--synthetic"] + (["--synthetic-images", str(spec.images)] if spec.images else [])
    elif isinstance(spec, CocoData):
        args += ["--coco", str(spec.annotations), "--images", str(spec.images)]
    else:
        args += ["--data", str(spec.root)] + (["--cache-images"] if spec.cache_images else [])
    h, w = r["crop"]
    args += ["--config", config, "--steps", str(r["steps"]), "--batch-size", str(r["batch_size"]), "--crop", f"{h}x{w}",
             "--lr", str(r["lr"]), "--optimizer", r["optimizer"], "--warmup", str(r["warmup"]),
             "--bn-momentum", str(r["bn_momentum"]), "--backbone-lr-mult", str(r["backbone_lr_mult"]),
             "--precise-bn", str(r["precise_bn"]), "--eval-images", str(r["eval_images"]), "--seed", str(r["seed"]),
             "--half" if r["half"] else "--no-half"]
    if r["init_backbone"] is not None:
        args += ["--init-backbone", str(r["init_backbone"])]
    if r["init_from"] is not None:
        args += ["--init-from", str(r["init_from"])]
    args += ["--scale-range", ",".join(str(v) for v in r["scale_range"]), "--output", str(output)]
    return shlex.join(args)


def train_demo(data: Any, output: str | Path, *, config: Optional[str] = None, steps: int = 2000, batch_size: int = 8,
               crop: tuple[int, int] = (256, 192), lr: float = 2e-3, optimizer: str = "adamw", warmup: int = 100,
               bn_momentum: float = 0.1, backbone_lr_mult: float = 1.0, precise_bn: int = 50,
               scale_range: tuple[float, float] = (0.75, 1.35), init_backbone: Optional[str | Path] = None,
               init_from: Optional[str | Path] = None, eval_images: int = 100, seed: int = 0, half: bool = True,
               device: str = "auto", workers: int = 0, resume: Optional[str | Path] = None, checkpoint_every: int = 500,
               progress: bool = True, force: bool = False, log: Log = _quiet) -> Optional[TrainDemoResult]:
    """Train an ALiSNet float checkpoint on ``data`` and write it to ``output`` with its metrics in the meta.

    ``data``: :class:`~alisnet_export.data.sources.SyntheticData`, a folder / ``"testbed:train[:N]"`` or another
    spec of :mod:`alisnet_export.data.sources`. ``config`` defaults to the one stored in the ``resume``d
    training state, else ``alisnet_mnasnet``. ``eval_images`` are held out and scored at the end; ``precise_bn``
    batches re-estimate the BatchNorm statistics after training. Returns None on torchrun ranks other than 0."""
    from ._io import refuse_existing
    from .checkpoint import save_checkpoint
    from .data import TrainTransform
    from .data.sources import open_training_data
    from .evaluate.metrics import evaluate_miou
    from .modeling import build_model
    from .train.trainer import (TrainOptions, hardware_info, load_training_state, prepare_state_dir, recompute_bn_stats,
                           state_dir_for, train, training_batches)

    recipe = dict(steps=steps, batch_size=batch_size, crop=crop, lr=lr, optimizer=optimizer, warmup=warmup,
                  bn_momentum=bn_momentum, backbone_lr_mult=backbone_lr_mult, precise_bn=precise_bn,
                  eval_images=eval_images, seed=seed, half=half, init_backbone=init_backbone, init_from=init_from,
                  scale_range=scale_range)
    output = Path(output)
    refuse_existing([output], force)
    prepare_state_dir(state_dir_for(output), None if resume is None else Path(resume), force)
    resume_state = load_training_state(resume) if resume is not None else None
    cfg = _training_config(config, resume_state)
    source = open_training_data(data, crop=crop, eval_images=eval_images, seed=seed, synthetic_images=steps * batch_size)
    torch.manual_seed(seed)
    model = build_model(cfg)
    if resume_state is None:
        _initial_weights(model, cfg.name, init_backbone, init_from, log)
    transform = TrainTransform(crop, cfg.input.mean, cfg.input.std, scale_range=scale_range)
    options = TrainOptions(steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer,
                           warmup_steps=min(warmup, steps // 2), bn_momentum=bn_momentum, seed=seed,
                           backbone_lr_mult=backbone_lr_mult, num_workers=workers, device=device,
                           output_dir=state_dir_for(output), checkpoint_every=checkpoint_every, progress=progress)
    log(f"training {cfg.name} on {source.trained_on}: {steps} steps x {batch_size} at {crop[0]}x{crop[1]}")
    result = train(model, source.train, transform, options, resume=resume_state, config=cfg.to_dict())
    if not result.is_main:
        return None
    used_bn = 0
    if precise_bn:
        bn_batches = training_batches(source.train, transform, batch_size, seed=seed + 7)
        used_bn = recompute_bn_stats(model, bn_batches, precise_bn)
    model.eval()
    metrics = None
    if source.held_out is not None:
        metrics = evaluate_miou(model, source.held_out, progress=progress)
        log(f"held-out: {metrics.summary()}")
    meta = {
        "description": f"ALiSNet demo checkpoint ({cfg.name}) trained by `alisnet-export train-demo`",
        "trained_on": source.trained_on, "steps": steps, "batch_size": batch_size * result.world_size,
        "crop": list(crop), "training_time_s": round(result.total_seconds, 1),
        "hardware": hardware_info(result.device, result.world_size),
        "metrics": None if metrics is None else {**metrics.to_dict(), "eval_size": list(crop)},
        "command": _train_demo_command(data, cfg.name, output, recipe), "seed": seed,
        "recipe": {k: v for k, v in options.to_dict().items() if k not in ("output_dir", "progress", "device")},
        "precise_bn_batches": used_bn, "init_backbone": None if init_backbone is None else str(init_backbone),
        "init_from": None if init_from is None else str(init_from), "torch_version": torch.__version__,
    }
    save_checkpoint(output, model.state_dict(), cfg, meta=meta, half=half, force=force)
    return TrainDemoResult(output, output.stat().st_size, meta, metrics, result.last_state, result.device, steps,
                           result.total_seconds)


# --------------------------------------------------------------------------------------------------
# Masks and overlays of photos (``alisnet-export predict``).
@dataclass
class PredictResult:
    """What :func:`predict` ran and wrote."""

    checkpoint: Optional[Path]  # the float checkpoint, when it ran (no artifact, or compare_float)
    artifact: Optional[Path]
    variant: Optional[str]
    results: list[dict[str, Any]]  # per image: image, input_hw, seconds, foreground_fraction, mask, overlay[, vs_float]


def _open_artifact(path: Path, config: Optional[str]) -> Any:
    """The artifact's runner and preprocessing (from the manifest beside it), as ``eval`` opens it."""
    from .errors import DataError, EnvironmentProblem
    from .evaluate.paper import open_targets

    targets = open_targets([path], config)
    if len(targets) != 1:
        raise DataError(f"{path}: holds {len(targets)} artifacts; pass one artifact file")
    if targets[0].skipped:
        raise EnvironmentProblem(f"{path}: cannot run here: {targets[0].skipped}")
    return targets[0]


def _predict_image(image_path: Path, out: Path, *, model: Any, loaded: Optional[LoadedCheckpoint], target: Any,
                   height: int, box: Optional[tuple[int, int, int, int]], margin: float, compare_float: bool,
                   force: bool) -> dict[str, Any]:
    """Segment one photo with ``target`` (an opened artifact) or else ``model``; write its mask and overlay
    (and with ``compare_float``, the comparison with ``model``); returns its row of :attr:`PredictResult.results`."""
    import time

    from ._io import atomic_write
    from .parity import compare_logits
    from .preprocess import load_rgb_image, mask_to_original, preprocess
    from .visualize import comparison_panel, mask_overlay, save_png

    mean, std = (target.mean, target.std) if target is not None else (loaded.config.input.mean, loaded.config.input.std)
    tag = f".{target.format}-{target.precision}" if target is not None else ""
    image = load_rgb_image(image_path)
    pre = preprocess(image, mean=mean, std=std, height=height, box=box, margin=margin)
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
    mask_path, overlay_path = out / f"{stem}{tag}.mask.png", out / f"{stem}{tag}.overlay.png"
    atomic_write(mask_path, lambda tmp: save_png(mask, tmp), force=force)
    atomic_write(overlay_path, lambda tmp: save_png(mask_overlay(image, mask), tmp), force=force)
    row = {"image": str(image_path), "input_hw": list(pre.tensor.shape[-2:]), "seconds": seconds,
           "foreground_fraction": float(mask.mean()), "mask": str(mask_path), "overlay": str(overlay_path)}
    if compare_float:
        ref_pre = preprocess(image, mean=loaded.config.input.mean, std=loaded.config.input.std, height=height, box=box,
                             margin=margin)
        with torch.inference_mode():
            ref_logits = model(ref_pre.tensor)
        m = compare_logits(stem, ref_logits.numpy(), logits.numpy())
        float_mask = mask_to_original(ref_logits, ref_pre)
        compare_path = out / f"{stem}{tag}.compare.png"
        atomic_write(compare_path, lambda tmp: save_png(comparison_panel(image, float_mask, mask), tmp), force=force)
        row["vs_float"] = {"mask_iou": m.mask_iou, "boundary_mean_px": m.boundary_mean_px,
                           "boundary_p95_px": m.boundary_p95_px, "compare": str(compare_path),
                           "pixels_differ": int(np.sum(float_mask != mask))}
    return row


def predict(images: Sequence[str | Path], output: str | Path, *, ckpt: Optional[str | Path] = None,
            config: Optional[str] = None, pointrend: Optional[bool] = None, height: int = 1024,
            box: Optional[tuple[int, int, int, int]] = None, artifact: Optional[str | Path] = None,
            compare_float: bool = False, force: bool = False,
            on_image: Callable[[dict[str, Any]], None] = lambda row: None) -> PredictResult:
    """Segment ``images`` (files, folders or named sets; empty: the built-in samples) with the float checkpoint
    ``ckpt`` (default: the embedded default), or with an exported ``artifact`` run by its runtime with the
    preprocessing of its manifest; write ``NAME[.FORMAT-PRECISION].mask.png`` and ``.overlay.png`` to
    ``output``. ``box`` (x0, y0, x1, y1): crop every photo to this person box plus the margin first.
    ``compare_float`` (with an artifact) also runs the float model and writes ``.compare.png`` with IoU and
    contour distance. ``on_image`` hears each image's row as it is done."""
    from .errors import DataError
    from .samples import resolve_image_set
    from .zoo import default_checkpoint

    if compare_float and artifact is None:
        raise ValueError("compare_float compares an artifact with the float model; give artifact")
    model = loaded = target = None
    if artifact is None or compare_float:
        loaded = load_checkpoint(Path(ckpt) if ckpt is not None else default_checkpoint().path, config,
                                 pointrend=pointrend)
        if loaded.is_qat:
            raise DataError(f"{loaded.path}: is a QAT checkpoint; predict runs float checkpoints (export it with `ptl` first)")
        model = loaded.build_model()
    if artifact is not None:
        target = _open_artifact(Path(artifact), config)
    margin = target.info.get("crop_margin") if target is not None else None
    margin = margin if margin is not None else (loaded.config.input.crop_margin if loaded is not None else 0.10)
    rows = []
    for image_path in resolve_image_set(images, default="samples").paths:
        rows.append(_predict_image(image_path, Path(output), model=model, loaded=loaded, target=target, height=height,
                                   box=box, margin=margin, compare_float=compare_float, force=force))
        on_image(rows[-1])
    return PredictResult(None if loaded is None else Path(loaded.path), None if artifact is None else Path(artifact),
                         loaded.config.name if loaded is not None else target.info.get("variant"), rows)
