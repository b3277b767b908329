"""``manifest.json``: the contract between an exported bundle and the apps that consume it.

The JSON Schema lives in ``alisnet_export/schemas/manifest.schema.json``; every manifest this tool
writes is validated against it first. ``docs/bundle-contract.md`` explains each field for mobile
engineers. The Kotlin and Swift harness cores parse the same fields.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import jsonschema
import numpy as np

from . import __version__
from ._io import atomic_write
from .config import ModelConfig
from .errors import DataError
from .preprocess import SPEC_VERSION, normalize, resize_rgb

__all__ = [
    "SCHEMA_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "load_schema",
    "validate_manifest",
    "input_section",
    "output_section",
    "model_section",
    "provenance_section",
    "build_manifest",
    "write_manifest",
    "read_manifest",
    "check_preprocessing",
]

SCHEMA_VERSION = "1.0"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    text = resources.files("alisnet_export").joinpath("schemas/manifest.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_manifest(manifest: Mapping[str, Any], *, source: str = "manifest") -> None:
    """Raise :class:`DataError` listing every schema violation (path: message)."""
    validator = jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors[:10]]
        more = f"\n  (+{len(errors) - 10} more)" if len(errors) > 10 else ""
        raise DataError(f"{source} does not follow manifest schema {SCHEMA_VERSION}:\n" + "\n".join(lines) + more)


def input_section(config: ModelConfig, *, height: int, min_hw: tuple[int, int], max_hw: tuple[int, int],
                  min_pixels: int) -> dict[str, Any]:
    return {
        "name": INPUT_NAME,
        "layout": "NCHW",
        "dtype": "float32",
        "color_order": "RGB",
        "value_range": [0, 255],
        "normalization": {
            "mean": list(config.input.mean),
            "std": list(config.input.std),
            "formula": "x = (v / 255 - mean[c]) / std[c]",
        },
        "resize": {
            "policy": "fixed_height_keep_aspect_round_width",
            "height": height,
            "multiple": 32,
            "interpolation": "bilinear_half_pixel_no_antialias",
            "crop_margin": config.input.crop_margin,
        },
        "size_constraints": {
            "multiple_of": 32,
            "min_height": min_hw[0],
            "max_height": max_hw[0],
            "min_width": min_hw[1],
            "max_width": max_hw[1],
            "min_pixels": min_pixels,
        },
        "preprocessing_spec_version": SPEC_VERSION,
    }


def output_section(config: ModelConfig) -> dict[str, Any]:
    return {
        "name": OUTPUT_NAME,
        "shape": [1, config.num_classes, "H", "W"],
        "dtype": "float32",
        "meaning": "logits",
        "classes": ["background", "person"] + [f"class_{i}" for i in range(2, config.num_classes)],
        "foreground_channel": 1,
        "mask_rule": "logits[foreground_channel] > logits[0]",
        "mask_threshold": 0.5,
    }


def model_section(config: ModelConfig, *, parameters: int, checkpoint_file: str, checkpoint_sha256: str,
                  source_format: str, kind: str) -> dict[str, Any]:
    return {
        "variant": config.name,
        "config": config.to_dict(),
        "parameters": parameters,
        "checkpoint": {"file": checkpoint_file, "sha256": checkpoint_sha256, "source_format": source_format, "kind": kind},
    }


def provenance_section(command: Optional[str] = None) -> dict[str, str]:
    import torch

    return {
        "toolchain": f"alisnet-export {__version__}",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "command": command if command is not None else " ".join(["alisnet-export", *sys.argv[1:]]),
    }


def build_manifest(*, model: Mapping[str, Any], input: Mapping[str, Any], output: Mapping[str, Any],
                   artifacts: Sequence[Mapping[str, Any]], provenance: Mapping[str, str],
                   golden: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "model": dict(model),
        "input": dict(input),
        "output": dict(output),
        "artifacts": [dict(a) for a in artifacts],
        "provenance": dict(provenance),
    }
    if golden is not None:
        manifest["golden"] = dict(golden)
    validate_manifest(manifest)
    return manifest


def write_manifest(path: Path, manifest: Mapping[str, Any], *, force: bool = False) -> None:
    """Validate, then write atomically (never a half-written or invalid manifest)."""
    validate_manifest(manifest, source=str(path))
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"), force=force)


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON manifest: {exc}") from None
    validate_manifest(manifest, source=str(path))
    return manifest


def check_preprocessing(manifest: Mapping[str, Any], golden: Mapping[str, np.ndarray], *, atol: float = 1e-4) -> list[str]:
    """Re-run the manifest's preprocessing on ``source_rgb`` and compare with the golden ``input``.

    Returns a list of problems (empty when the manifest and the golden vectors agree). This is the
    Python twin of the harness cores' preprocessing check: a manifest whose normalisation or resize
    was changed fails here exactly as it fails on a phone.
    """
    problems: list[str] = []
    for name in ("source_rgb", "input"):
        if name not in golden:
            problems.append(f"golden vectors lack {name!r}")
    if problems:
        return problems
    import torch

    expected = golden["input"]
    h, w = int(expected.shape[2]), int(expected.shape[3])
    norm = manifest["input"]["normalization"]
    got = normalize(resize_rgb(golden["source_rgb"], (h, w)), norm["mean"], norm["std"])
    diff = float((got - torch.from_numpy(np.ascontiguousarray(expected))).abs().max())
    if diff > atol:
        problems.append(
            f"preprocessing per the manifest differs from the golden input by up to {diff:.4g} (> {atol}): "
            "the manifest's normalisation/resize no longer matches what the model was exported with"
        )
    return problems
