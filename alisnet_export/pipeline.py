"""Export -> run -> parity -> golden vectors -> manifest, the same way for every format.

Nothing is written under its final name until it is complete: the exporter writes a temporary
artifact, the runner and the parity gate run on it, and only then is it renamed into place, next to
its parity report, golden vectors and manifest (each written atomically). Outputs that exist stop the
run before any work unless ``force`` is given. A failed parity gate still writes everything, with
the artifact marked ``failed`` in its manifest, and is reported to the caller (exit code 1).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ._io import atomic_write, check_writable, sha256_file
from .errors import EnvironmentProblem
from .exporters.base import ArtifactInfo, Exporter, ExportJob
from .formats import PRECISIONS
from .golden import encode_golden
from .manifest import build_manifest, input_section, model_section, output_section, provenance_section, write_manifest
from .parity import GateResult, ParityReport, Thresholds, default_thresholds, run_parity
from .quantize.qat import export_fidelity
from .preprocess import logits_to_mask, normalize, resize_rgb, target_size
from .runtimes.base import runner_for
from .runtimes.torch_runners import TorchModelRunner

__all__ = [
    "GOLDEN_HEIGHT",
    "ReferenceOutputs",
    "ArtifactRecord",
    "ExportOutcome",
    "artifact_sha256",
    "artifact_size",
    "planned_paths",
    "single_export_paths",
    "produce_artifact",
    "golden_tensors",
    "export_single",
]

#: golden vectors are small: the on-device self-check runs them in a fraction of a second
GOLDEN_HEIGHT = 256
class ReferenceOutputs:
    """The float model's logits (and PointRend tie zones) on the session's inputs, computed once and shared by
    every artifact of a run; a :class:`~alisnet_export.parity.TieZoneReference`."""

    def __init__(self, runner: TorchModelRunner, inputs: Sequence[tuple[str, np.ndarray]]) -> None:
        self.runner = runner
        self.inputs = list(inputs)
        self._cache: dict[int, np.ndarray] = {}
        self._zones: dict[tuple[int, float], Optional[np.ndarray]] = {}

    def _cached(self, x: np.ndarray) -> bool:
        """Whether ``x`` is one of :attr:`inputs` (the same array object): only those are cached, so an id
        can never be reused by another array while its entry lives."""
        return any(x is kept for _, kept in self.inputs)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self._cached(x):
            return self.runner(x)
        if id(x) not in self._cache:
            self._cache[id(x)] = self.runner(x)
        return self._cache[id(x)]

    def tie_zone(self, x: np.ndarray, margin: float) -> Optional[np.ndarray]:
        """PointRend's tie zone of the float model for ``x`` at ``margin`` (see :mod:`..parity`), cached for
        :attr:`inputs`; the logits of the same pass fill the logits cache."""
        if not self._cached(x):
            return self.runner.run_with_tie_zone(x, margin)[1]
        key = (id(x), margin)
        if key not in self._zones:
            logits, self._zones[key] = self.runner.run_with_tie_zone(x, margin)
            self._cache.setdefault(id(x), logits)
        return self._zones[key]


@dataclass
class ArtifactRecord:
    path: Path
    entry: dict[str, Any]  # the manifest's artifacts[] item
    info: ArtifactInfo
    report: Optional[ParityReport]
    export_seconds: float
    parity_seconds: float
    golden_logits: Optional[np.ndarray]  # None when the artifact cannot run here
    files: dict[str, Path] = field(default_factory=dict)
    #: why parity did not run (--no-parity, or the runtime cannot run on this platform)
    not_run_reason: Optional[str] = None

    @property
    def status(self) -> str:
        """The manifest's parity status: ``passed``, ``failed`` or ``not_run`` (``--no-parity``, or a runtime
        that cannot run here; :attr:`not_run_reason` says which)."""
        return self.entry["parity"]["status"]


def planned_paths(exporter: Exporter, out_dir: Path, name: str) -> dict[str, Path]:
    paths = {"artifact": out_dir / f"{name}{exporter.suffix}", "parity": out_dir / f"{name}.parity.json"}
    for suffix in exporter.sidecar_suffixes:
        paths[suffix] = out_dir / f"{name}{suffix}"
    return paths


def single_export_paths(exporter: Exporter, out_dir: Path, name: str) -> list[Path]:
    """Every file a single-format export writes."""
    return [*planned_paths(exporter, out_dir, name).values(), out_dir / f"{name}.manifest.json",
            out_dir / f"{name}.golden.algv"]


def _move_into_place(tmp: Path, final: Path) -> None:
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(tmp, final)


def produce_artifact(
    exporter: Exporter,
    job: ExportJob,
    *,
    out_dir: Path,
    name: str,
    force: bool,
    reference: ReferenceOutputs,
    golden_input: np.ndarray,
    thresholds: Optional[Thresholds] = None,
    run_parity_gate: bool = True,
    progress: Callable[[str], None] = lambda message: None,
) -> ArtifactRecord:
    """Export one artifact, run it, gate it, and move it into place with its parity report."""
    exporter.check_precision(job.precision)
    job = dataclasses.replace(job, name=name, thresholds=thresholds or default_thresholds(job.precision))
    paths = planned_paths(exporter, out_dir, name)
    check_writable(list(paths.values()), force)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out_dir))
    try:
        tmp = tmp_root / paths["artifact"].name
        start = time.perf_counter()
        info = exporter.export(job, tmp)
        export_seconds = time.perf_counter() - start
        not_run_reason = None if run_parity_gate else "skipped with --no-parity"
        try:
            runner = runner_for(exporter.format)(tmp)
        except EnvironmentProblem as exc:
            if not exporter.checks_without_runtime:
                raise
            runner, not_run_reason = None, str(exc)  # e.g. Core ML off macOS: info.checks stand in
        start = time.perf_counter()
        report: Optional[ParityReport] = None
        if run_parity_gate and runner is not None:
            report = run_parity(reference, runner, reference.inputs, artifact=paths["artifact"].name,
                                format=exporter.format, precision=job.precision,
                                thresholds=job.thresholds, progress=progress)
        golden_logits = runner(golden_input) if runner is not None else None
        parity_seconds = time.perf_counter() - start
        binary = exporter.runtime_sidecars(tmp, job, golden_input, golden_logits, info) if runner is not None else {}
        for suffix, content in [*info.sidecars.items(), *binary.items()]:
            if suffix not in paths:
                raise AssertionError(f"{exporter.format} exporter wrote undeclared sidecar {suffix}")
            write = ((lambda p, c=content: p.write_bytes(c)) if isinstance(content, bytes)
                     else (lambda p, c=content: p.write_text(c, encoding="utf-8")))
            atomic_write(paths[suffix], write, force=True)
        for suffix in [s for s in exporter.sidecar_suffixes if s not in info.sidecars and s not in binary]:
            paths.pop(suffix)  # declared but not produced (the artifact could not run here)
        fidelity = None
        if report is not None and job.qat_model is not None:  # the artifact vs the QAT model it came from
            fidelity = export_fidelity(job.qat_model, runner, reference.inputs)
            report.gates.append(GateResult("export_fidelity_min_mean_iou", "mean (vs the QAT model's fake-quantized "
                                           "forward)", fidelity["mean_iou"], fidelity["min_mean_iou"], fidelity["passed"]))
        if report is not None:
            report_text = json.dumps({**report.to_dict(), "runtime": runner.describe()}, indent=2) + "\n"
            atomic_write(paths["parity"], lambda p: p.write_text(report_text, encoding="utf-8"), force=True)
        _move_into_place(tmp, paths["artifact"])
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    artifact = paths["artifact"]
    entry = {
        "id": f"{exporter.format}-{job.precision}",
        "format": exporter.format,
        "file": artifact.name,
        "size_bytes": artifact_size(artifact),
        "sha256": artifact_sha256(artifact),
        "precision": job.precision,
        "quantization": info.quantization,
        "runtime": info.runtime,
        "parity": _parity_entry(report, paths["parity"].name, not_run_reason, info.checks),
        "golden_tolerances": dict(PRECISIONS[job.precision].golden),
    }
    if info.metadata:
        entry["metadata"] = info.metadata
    if fidelity is not None:
        entry["quantization"] = {**entry["quantization"], "export_fidelity": fidelity}
    if report is not None and job.parity_images is not None:
        entry["parity"]["images"] = job.parity_images
    if report is None:
        paths.pop("parity")
    return ArtifactRecord(artifact, entry, info, report, export_seconds, parity_seconds, golden_logits, paths,
                          not_run_reason if report is None else None)


def _parity_entry(report: Optional[ParityReport], report_file: str, not_run_reason: Optional[str],
                  checks: dict[str, Any]) -> dict[str, Any]:
    if report is None:
        entry: dict[str, Any] = {"status": "not_run", "reason": not_run_reason or "not run"}
        if checks:
            entry["checked_instead"] = checks
        return entry
    return {"status": "passed" if report.passed else "failed", "summary": report.summary(),
            "thresholds": report.thresholds.to_dict(), "report": report_file,
            "failures": [g.describe() for g in report.failures]}


def artifact_size(path: Path) -> int:
    """Bytes of a file, or of all files in a package folder (.mlpackage)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def artifact_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (sorted relative paths and their hashes)."""
    if not path.is_dir():
        return sha256_file(path)
    import hashlib

    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def golden_tensors(source_rgb: np.ndarray, mean: Sequence[float], std: Sequence[float],
                   height: int = GOLDEN_HEIGHT) -> np.ndarray:
    """The golden ``input``: ``source_rgb`` through preprocessing-spec steps 3-4 at ``height``."""
    size = target_size(source_rgb.shape[0], source_rgb.shape[1], height)
    return normalize(resize_rgb(source_rgb, size), mean, std).numpy()


@dataclass
class ExportOutcome:
    record: ArtifactRecord
    manifest_path: Path
    golden_path: Path
    manifest: dict[str, Any]

    @property
    def passed(self) -> bool:
        """No parity gate failed: True also when parity did not run (``record.status == "not_run"``; the
        commands exit 0 then and say why)."""
        return self.record.status != "failed"


def export_single(
    exporter: Exporter,
    job: ExportJob,
    *,
    out_dir: Path,
    name: str,
    force: bool,
    reference: ReferenceOutputs,
    golden_source: tuple[str, np.ndarray],
    height: int,
    thresholds: Optional[Thresholds] = None,
    run_parity_gate: bool = True,
    command: Optional[str] = None,
    progress: Callable[[str], None] = lambda message: None,
) -> ExportOutcome:
    """One artifact with its own manifest and golden vectors (``NAME.manifest.json``, ``NAME.golden.algv``)."""
    cfg = job.loaded.config
    manifest_path, golden_path = out_dir / f"{name}.manifest.json", out_dir / f"{name}.golden.algv"
    check_writable(single_export_paths(exporter, out_dir, name), force)
    source_name, source_rgb = golden_source
    golden_input = golden_tensors(source_rgb, cfg.input.mean, cfg.input.std)
    record = produce_artifact(exporter, job, out_dir=out_dir, name=name, force=force, reference=reference,
                              golden_input=golden_input, thresholds=thresholds, run_parity_gate=run_parity_gate,
                              progress=progress)
    reference_logits = reference.runner(golden_input)
    tensors = {
        "source_rgb": source_rgb,
        "input": golden_input,
        "logits.float": reference_logits,
        "mask.float": logits_to_mask(reference_logits).astype(np.uint8),
    }
    if record.golden_logits is not None:  # absent when the artifact cannot run here (Core ML off macOS)
        tensors[f"logits.{record.entry['id']}"] = record.golden_logits
    data = encode_golden(tensors)
    atomic_write(golden_path, lambda p: p.write_bytes(data), force=True)
    manifest = build_manifest(
        model=model_section(cfg, parameters=sum(p.numel() for p in job.reference.parameters()),
                            checkpoint_file=job.loaded.path.name, checkpoint_sha256=job.loaded.sha256,
                            source_format=job.loaded.source_format, kind="qat" if job.loaded.is_qat else "float"),
        input=input_section(cfg, height=height, min_hw=job.bounds.min_hw, max_hw=job.bounds.max_hw,
                            min_pixels=job.bounds.min_pixels),
        output=output_section(cfg),
        artifacts=[record.entry],
        provenance=provenance_section(command),
        golden={"file": golden_path.name, "sha256": sha256_file(golden_path), "format": "ALGV1",
                "tensors": {k: list(np.shape(v)) for k, v in tensors.items()}, "source": source_name},
    )
    write_manifest(manifest_path, manifest, force=True)
    return ExportOutcome(record, manifest_path, golden_path, manifest)
