"""Re-check artifacts that were exported earlier (``alisnet-export parity``), independently of the export run.

Each artifact is fed the way its manifest says an app must feed it (normalisation, resize), and the
float reference model the way its config says; if a manifest's normalisation was changed, or an
artifact's weights were, the outputs part and the gates fail. Artifacts without a manifest need an
explicit ``precision``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..config import ModelConfig
from ..errors import DataError, EnvironmentProblem
from ..manifest import read_manifest
from ..pipeline import artifact_sha256
from ..parity import GateResult, ParityReport, Thresholds, default_thresholds, run_parity
from ..formats import artifact_suffixes
from ..runtimes.base import Runner, detect_format, runner_for

__all__ = ["Target", "resolve_targets", "renormalizer", "check_target", "CheckResult", "foreign_checkpoint", "all_passed"]


@dataclass
class Target:
    """One artifact to check, with its manifest (entry) when there is one."""

    path: Path
    format: str
    precision: str
    manifest: Optional[dict[str, Any]] = None
    entry: Optional[dict[str, Any]] = None

    @property
    def name(self) -> str:
        return self.path.name


def _is_artifact(path: Path) -> bool:
    return path.suffix.lower() in artifact_suffixes()


def _targets_from_manifest(manifest_path: Path) -> list[Target]:
    manifest = read_manifest(manifest_path)
    targets = []
    for entry in manifest["artifacts"]:
        artifact = manifest_path.parent / entry["file"]
        if not artifact.exists():
            raise DataError(f"{manifest_path}: lists {entry['file']}, which is not in {manifest_path.parent}")
        targets.append(Target(artifact, entry["format"], entry["precision"], manifest, entry))
    return targets


def resolve_targets(path: Path, precision: Optional[str] = None) -> list[Target]:
    """Artifacts named by ``path``: a bundle folder, a manifest file, or one artifact (with its manifest
    beside it as ``NAME.manifest.json`` or in a ``manifest.json`` that lists it)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such artifact, bundle folder or manifest")
    if path.is_dir() and not _is_artifact(path):
        manifests = [path / "manifest.json"] if (path / "manifest.json").is_file() else sorted(path.glob("*.manifest.json"))
        if not manifests:
            raise DataError(f"{path}: a folder without manifest.json or NAME.manifest.json; pass an artifact file instead")
        return [t for m in manifests for t in _targets_from_manifest(m)]
    if path.suffix == ".json":
        return _targets_from_manifest(path)
    fmt = detect_format(path)
    for candidate in (path.with_name(path.name[: -len(path.suffix)] + ".manifest.json"), path.parent / "manifest.json"):
        if candidate.is_file():
            matching = [t for t in _targets_from_manifest(candidate) if t.path.name == path.name]
            if matching:
                return matching
    if precision is None:
        raise DataError(
            f"{path}: no manifest beside it (looked for {path.stem}.manifest.json and manifest.json); "
            "pass --precision float32|float16|int8|int8-weights so the right gates apply"
        )
    return [Target(path, fmt, precision)]


def renormalizer(from_mean: Sequence[float], from_std: Sequence[float], to_mean: Sequence[float],
                 to_std: Sequence[float]) -> Callable[[np.ndarray], np.ndarray]:
    """Map an input normalised one way to the same pixels normalised another way (identity if equal)."""
    fm, fs = np.asarray(from_mean, np.float32).reshape(1, 3, 1, 1), np.asarray(from_std, np.float32).reshape(1, 3, 1, 1)
    tm, ts = np.asarray(to_mean, np.float32).reshape(1, 3, 1, 1), np.asarray(to_std, np.float32).reshape(1, 3, 1, 1)
    if np.array_equal(fm, tm) and np.array_equal(fs, ts):
        return lambda x: x
    return lambda x: (((x * fs + fm) - tm) / ts).astype(np.float32)


@dataclass
class CheckResult:
    target: Target
    report: Optional[ParityReport] = None
    skipped: Optional[str] = None  # why it could not run here (e.g. Core ML off macOS)
    integrity: list[str] = field(default_factory=list)  # problems with the artifact vs its manifest
    runtime: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.skipped is None and self.report is not None and self.report.passed

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"artifact": str(self.target.path), "format": self.target.format,
                               "precision": self.target.precision, "integrity_problems": self.integrity}
        if self.skipped:
            out.update(status="skipped", reason=self.skipped)
        else:
            out.update(self.report.to_dict() if self.report else {})
            out["status"] = "passed" if self.passed else "failed"
            out["runtime"] = self.runtime
        return out


def check_target(target: Target, reference: Callable[[np.ndarray], np.ndarray], config: ModelConfig,
                 inputs: Sequence[tuple[str, np.ndarray]], *, thresholds: Optional[Thresholds] = None,
                 progress: Optional[Callable[[str], None]] = None, keep_masks: bool = False) -> CheckResult:
    """Integrity (sha256 vs manifest) and parity of one artifact against the float reference."""
    result = CheckResult(target)
    if target.entry is not None:
        actual = artifact_sha256(target.path)
        if actual != target.entry["sha256"]:
            result.integrity.append(
                f"{target.name}: sha256 {actual[:12]}... differs from the manifest's {target.entry['sha256'][:12]}...: "
                "the artifact was modified after export"
            )
    try:
        runner: Runner = runner_for(target.format)(target.path)
    except EnvironmentProblem as exc:
        result.skipped = str(exc)
        return result
    result.runtime = runner.describe()
    adapt = lambda x: x  # noqa: E731
    if target.manifest is not None:
        norm = target.manifest["input"]["normalization"]
        adapt = renormalizer(config.input.mean, config.input.std, norm["mean"], norm["std"])
    result.report = run_parity(reference, lambda x: runner(adapt(x)), inputs, artifact=target.name,
                               format=target.format, precision=target.precision,
                               thresholds=thresholds or default_thresholds(target.precision), progress=progress,
                               keep_masks=keep_masks)
    # a modified artifact fails even if its numbers happen to agree: CI must notice the change
    result.report.gates += [GateResult("artifact_sha256_matches_manifest", target.name, 0.0, 1.0, False)
                            for _ in result.integrity]
    return result


def foreign_checkpoint(target: Target, sha256: str) -> Optional[str]:
    """The sha256 of the float checkpoint ``target``'s manifest says it was exported from, when that is not
    ``sha256`` (the reference it is being checked against); None otherwise or without a manifest."""
    checkpoint = (target.manifest or {}).get("model", {}).get("checkpoint", {})
    recorded = checkpoint.get("sha256")
    return recorded if recorded and recorded != sha256 and checkpoint.get("kind") == "float" else None


def all_passed(results: Sequence[CheckResult]) -> bool:
    """The verdict of a re-check: every artifact that could run here passed, and at least one could."""
    return all(r.passed or r.skipped for r in results) and any(not r.skipped for r in results)
