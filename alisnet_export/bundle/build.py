"""A bundle: every artifact of one model in one folder, with one manifest, one golden file and a zip.

Layout (docs/bundle-contract.md section 1)::

    NAME/
      manifest.json                      one entry per artifact in ``artifacts``
      golden.algv                        source_rgb, input, logits.float, mask.float, logits.<artifact id>
      VARIANT-<id>.<ext>                 each artifact (id = FORMAT-PRECISION, e.g. ptl-int8)
      VARIANT-<id>.parity.json           its parity report (absent where parity could not run)
      VARIANT-<id>.ops.yaml              .ptl only: the selective-build operator list
      summary.json                       every requested target's outcome, export failures included
      tests/test_bundle_parity.py        the runtime-only parity suite (``pytest NAME/``)
      tests/parity_cases.npz
    NAME.zip                             the folder, zipped (entries under ``NAME/``)

The float model, its outputs on the parity photos, the calibration photos and the golden input are
built once and shared by every target. A target that fails (export error, or parity gate) does not stop
the others: it is recorded and the caller decides the exit code. The bundle is built in a temporary
folder beside the destination and renamed into place only at the end, so a bundle is never half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .._io import atomic_write, current_umask, ensure_folder, refuse_existing, sha256_file
from ..errors import AlisnetError, DataError, OutputError
from ..exporters.base import Exporter, ExportJob, SizeBounds
from ..formats import Target, parse_targets
from ..golden import encode_golden
from ..manifest import build_manifest, input_section, model_section, output_section, provenance_section, write_manifest
from ..parity import Thresholds
from ..pipeline import ArtifactRecord, ReferenceOutputs, golden_tensors, produce_artifact
from ..preprocess import logits_to_mask

__all__ = [
    "Target",
    "TargetResult",
    "BundleOutcome",
    "parse_targets",
    "common_bounds",
    "bundle_paths",
    "check_bundle_writable",
    "build_bundle",
]

MANIFEST = "manifest.json"
GOLDEN = "golden.algv"
SUMMARY = "summary.json"
#: the emitted parity suite stores float logits per photo: above this height the .npz gets large
TESTS_MAX_HEIGHT = 384


def common_bounds(exporters: Sequence[Exporter], config: Any) -> SizeBounds:
    """Input sizes every artifact accepts: one ``input.size_constraints`` holds for the whole bundle.

    Each exporter is then asked for its bounds within this intersection (it may tighten ``min_pixels``).
    """
    each = [e.bounds_for(config) for e in exporters]
    common = SizeBounds(
        min_hw=(max(b.min_hw[0] for b in each), max(b.min_hw[1] for b in each)),
        max_hw=(min(b.max_hw[0] for b in each), min(b.max_hw[1] for b in each)),
        min_pixels=max(b.min_pixels for b in each),
    )
    for e in exporters:  # every exporter must accept the intersection unchanged
        common = e.bounds_for(config, common)
    return common


def bundle_paths(folder: Path) -> tuple[Path, Path]:
    """``(folder, zip)``: the zip lies beside the folder as ``NAME.zip``."""
    folder = Path(folder)
    return folder, folder.parent / f"{folder.name}.zip"


def check_bundle_writable(folder: Path, force: bool) -> None:
    """Fail before any work if the folder holds anything or the zip exists (without ``force``), or the
    parent cannot be written. An existing empty folder is fine."""
    folder, zip_path = bundle_paths(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} exists and is not a folder; choose another --output")
    refuse_existing((folder, zip_path), force, verb="replace it",
                    exists=lambda p: p.exists() and (p.is_file() or any(p.iterdir())))
    ensure_folder(folder.parent)


@dataclass
class TargetResult:
    target: Target
    #: passed | failed (parity gate) | not_run (parity could not run here, e.g. Core ML on Linux) | error (export)
    status: str
    record: Optional[ArtifactRecord] = None
    error: Optional[str] = None
    seconds: float = 0.0

    def to_dict(self, folder: Path) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.target.id, "format": self.target.format,
                               "precision": self.target.precision, "status": self.status,
                               "seconds": round(self.seconds, 2)}
        if self.record is not None:
            entry = self.record.entry
            out.update({"file": entry["file"], "path": str(folder / entry["file"]), "size_bytes": entry["size_bytes"],
                        "sha256": entry["sha256"], "quantization": entry["quantization"]["scheme"],
                        "parity": entry["parity"], "export_seconds": round(self.record.export_seconds, 2),
                        "parity_seconds": round(self.record.parity_seconds, 2)})
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class BundleOutcome:
    folder: Path
    zip_path: Optional[Path]  # None when no artifact was produced (nothing written)
    manifest: Optional[dict[str, Any]]
    results: list[TargetResult] = field(default_factory=list)
    tests: dict[str, Path] = field(default_factory=dict)

    @property
    def export_failed(self) -> bool:
        return any(r.status == "error" for r in self.results)

    @property
    def parity_failed(self) -> bool:
        return any(r.status == "failed" for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 every target passed (Core ML on Linux: not_run counts, with a note); 4 an export failed;
        1 a parity gate failed."""
        from ..errors import EXIT_EXPORT, EXIT_GATE_FAILED, EXIT_OK

        return EXIT_EXPORT if self.export_failed else EXIT_GATE_FAILED if self.parity_failed else EXIT_OK


def _zip_folder(folder: Path, dest: Path, arc_root: str) -> None:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            if p.is_dir():
                zf.write(p, f"{arc_root}/{rel}/")
            else:
                zf.write(p, f"{arc_root}/{rel}")


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished bundle onto ``final``; an old one (--force) is moved aside first, then removed."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_bundle(
    targets: Sequence[Target],
    *,
    folder: Path,
    force: bool,
    loaded: Any,
    reference_model: Any,
    qat_model: Any,
    reference: ReferenceOutputs,
    photos: Sequence[Path],
    calibration: Callable[[], list],
    calibration_info: dict[str, Any],
    parity_images: Optional[dict[str, Any]] = None,
    golden_source: tuple[str, np.ndarray],
    height: int,
    thresholds: Callable[[str], Thresholds],
    command: Optional[str] = None,
    log: Callable[[str], None] = lambda message: None,
    on_target: Callable[[Target, str], None] = lambda target, stage: None,
    progress: Callable[[str], None] = lambda image_name: None,
) -> BundleOutcome:
    """Export every target into a temporary folder beside ``folder``, then move it (and its zip) into place."""
    folder = Path(folder)
    folder, zip_path = bundle_paths(folder)
    check_bundle_writable(folder, force)
    cfg = loaded.config
    exporters = {t: t.spec.new_exporter() for t in targets}
    for t, e in exporters.items():
        e.check_precision(t.precision)
    bounds = common_bounds(list(exporters.values()), cfg)
    for input_name, x in reference.inputs:
        try:
            bounds.check(x.shape[2], x.shape[3], what=f"parity input {input_name}")
        except DataError as exc:
            raise DataError(f"{exc} (the bundle's size bounds are what every target accepts: "
                            f"{bounds.min_hw[0]}x{bounds.min_hw[1]} to {bounds.max_hw[0]}x{bounds.max_hw[1]}); "
                            "lower --height, or leave out the target that limits it") from None
    in_section = input_section(cfg, height=height, min_hw=bounds.min_hw, max_hw=bounds.max_hw,
                               min_pixels=bounds.min_pixels)
    metadata = {"variant": cfg.name, "input": in_section, "output": output_section(cfg),
                "provenance": provenance_section(command)}
    source_name, source_rgb = golden_source
    golden_input = golden_tensors(source_rgb, cfg.input.mean, cfg.input.std)
    reference_logits = reference.runner(golden_input)

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    results: list[TargetResult] = []
    try:
        # the emitted suite first: its float logits come from the reference before any exporter touched it
        from .emitted_suite import write_bundle_tests

        on_target(targets[0], "writing the emitted parity tests")
        margins = sorted({m for m in (thresholds(t.precision).max_abs_logit for t in targets) if m is not None})
        tests = write_bundle_tests(tmp, photos, cfg, reference_model, height=min(height, TESTS_MAX_HEIGHT),
                                   tie_margins=margins)
        for target in targets:
            exporter = exporters[target]
            on_target(target, "export")
            job = ExportJob(loaded, reference_model, target.precision, calibration, exporter.bounds_for(cfg, bounds),
                            log=lambda m, t=target: log(f"[{t.id}] {m}"), qat_model=qat_model, metadata=metadata,
                            parity_images=parity_images,
                            qat_info=dict(loaded.qat) if loaded.is_qat else {},
                            calibration_info={} if loaded.is_qat else dict(calibration_info))
            start = time.perf_counter()
            try:
                record = produce_artifact(exporter, job, out_dir=tmp, name=f"{cfg.name}-{target.id}", force=False,
                                          reference=reference, golden_input=golden_input,
                                          thresholds=thresholds(target.precision), progress=progress)
            except AlisnetError as exc:
                results.append(TargetResult(target, "error", error=str(exc), seconds=time.perf_counter() - start))
                log(f"[{target.id}] export failed: {exc}")
                continue
            except Exception as exc:  # an exporter bug: keep the others, show where it came from
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                results.append(TargetResult(target, "error", error=f"internal error: {detail}",
                                            seconds=time.perf_counter() - start))
                log(f"[{target.id}] export failed with an internal error (please report it):\n"
                    + traceback.format_exc())
                continue
            results.append(TargetResult(target, record.status, record=record, seconds=time.perf_counter() - start))

        records = [r.record for r in results if r.record is not None]
        if not records:  # nothing to bundle: leave nothing behind
            return BundleOutcome(folder, None, None, results)
        on_target(targets[-1], "manifest, golden vectors, zip")
        tensors: dict[str, np.ndarray] = {
            "source_rgb": source_rgb,
            "input": golden_input,
            "logits.float": reference_logits,
            "mask.float": logits_to_mask(reference_logits).astype(np.uint8),
        }
        for record in records:
            if record.golden_logits is not None:  # absent when it cannot run here (Core ML off macOS)
                tensors[f"logits.{record.entry['id']}"] = record.golden_logits
        data = encode_golden(tensors)
        atomic_write(tmp / GOLDEN, lambda p: p.write_bytes(data))
        manifest = build_manifest(
            model=model_section(cfg, parameters=sum(p.numel() for p in reference_model.parameters()),
                                checkpoint_file=loaded.path.name, checkpoint_sha256=loaded.sha256,
                                source_format=loaded.source_format, kind="qat" if loaded.is_qat else "float"),
            input=in_section,
            output=output_section(cfg),
            artifacts=[r.entry for r in records],
            provenance=provenance_section(command),
            golden={"file": GOLDEN, "sha256": sha256_file(tmp / GOLDEN), "format": "ALGV1",
                    "tensors": {k: list(np.shape(v)) for k, v in tensors.items()}, "source": source_name},
        )
        write_manifest(tmp / MANIFEST, manifest)
        summary = {"bundle": folder.name, "targets": [r.to_dict(folder) for r in results]}
        summary_text = json.dumps(summary, indent=2) + "\n"
        atomic_write(tmp / SUMMARY, lambda p: p.write_text(summary_text, encoding="utf-8"))
        atomic_write(zip_path, lambda p: _zip_folder(tmp, p, folder.name), force=force)
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp made it private; a bundle is meant to be shared
        _swap_into_place(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in results:  # the records point into the temporary folder: re-point them at the bundle
        if r.record is not None:
            r.record.path = folder / r.record.path.name
            r.record.files = {k: folder / p.name for k, p in r.record.files.items()}
    return BundleOutcome(folder, zip_path, manifest, results, {k: folder / "tests" / p.name for k, p in tests.items()})
