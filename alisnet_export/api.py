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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .checkpoint import LoadedCheckpoint, load_checkpoint
from .parity import Thresholds, default_thresholds
from .pipeline import ExportOutcome, ReferenceOutputs
from .samples import ImageSet, calibration_inputs, golden_source, image_sets_for, parity_inputs

__all__ = ["Session", "prepare", "export", "bundle", "RecheckPlan", "plan_recheck", "recheck", "thresholds_for"]

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
    from .bundle import build_bundle, check_bundle_writable, parse_targets

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
    from .parity_check import resolve_targets
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
    from .parity_check import check_target

    plan = plan_recheck(artifact, reference=reference, config=config, images=images, height=height,
                        person_crops=person_crops, precision=precision)
    gates = thresholds or default_thresholds
    return [check_target(t, plan.reference, plan.loaded.config, plan.inputs, thresholds=gates(t.precision))
            for t in plan.targets]
