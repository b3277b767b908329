"""Core ML (``.mlpackage``) runner: ``coremltools.models.MLModel.predict``, which only works on macOS.

On any other platform opening the runner raises :class:`EnvironmentProblem` (exit code 5) saying so:
there is no Core ML framework to predict with. The export still succeeds there with parity
``not_run`` and the package checks of :func:`alisnet_export.exporters.coreml.check_package` instead.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, EnvironmentProblem
from .base import Runner

__all__ = ["CoreMLRunner", "PREDICTION_NEEDS_MACOS", "open_coreml"]

PREDICTION_NEEDS_MACOS = "Core ML prediction needs macOS"


class CoreMLRunner(Runner):
    """An ``.mlpackage`` run by Core ML through coremltools (macOS only).

    Tensor-input packages get the normalised input as is. Image-input packages (``--image-input``) get
    the input turned back into 8-bit RGB pixels (``round((x * std + mean) * 255)``), as an app feeds
    them: that rounding is part of what parity measures for them.
    """

    format = "coreml"

    def __init__(self, path: Path, compute_units: str = "CPU_ONLY") -> None:
        super().__init__(path)
        import coremltools as ct

        self.compute_units = compute_units
        try:
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as exc:
            raise DataError(f"{path}: Core ML could not load this package: {str(exc).splitlines()[0]}") from None
        spec = self.model.get_spec()
        self.input_name = spec.description.input[0].name
        self.output_name = spec.description.output[0].name
        self.image_input = spec.description.input[0].type.WhichOneof("Type") == "imageType"
        user = dict(spec.description.metadata.userDefined)
        if self.image_input:
            try:
                self.mean = np.asarray(json.loads(user["alisnet.mean"]), np.float32).reshape(3, 1, 1)
                self.std = np.asarray(json.loads(user["alisnet.std"]), np.float32).reshape(3, 1, 1)
            except (KeyError, ValueError):
                raise DataError(f"{path}: an image-input package without alisnet.mean/alisnet.std metadata; "
                                "re-export it with alisnet-export coreml --image-input") from None

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.image_input:
            from PIL import Image

            pixels = np.clip(np.rint((x[0] * self.std + self.mean) * 255.0), 0, 255).astype(np.uint8)
            feed: Any = Image.fromarray(pixels.transpose(1, 2, 0), mode="RGB")
        else:
            feed = x
        return np.asarray(self.model.predict({self.input_name: feed})[self.output_name], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        import coremltools as ct

        return {"format": "coreml", "runtime": "Core ML via coremltools", "coremltools": ct.__version__,
                "platform": f"macOS {platform.mac_ver()[0]} {platform.machine()}", "compute_units": self.compute_units,
                "input": "image" if self.image_input else "multiarray"}


def open_coreml(path: Path) -> Runner:
    """The runner of a .coreml artifact (the factory the formats table names)."""
    if platform.system() != "Darwin":
        raise EnvironmentProblem(
            f"{PREDICTION_NEEDS_MACOS} (the Core ML framework); this is {platform.system()} {platform.machine()}, "
            f"so {Path(path).name} cannot be run here. Run its parity on a Mac: "
            "`alisnet-export parity NAME.mlpackage --reference CKPT` or `pytest -m macos`"
        )
    return CoreMLRunner(path)
