"""``.pte`` runner: the ExecuTorch runtime's Python bindings (``executorch.runtime``), XNNPACK included."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import Runner

__all__ = ["ExecuTorchRunner", "open_pte", "executorch_version"]


class ExecuTorchRunner(Runner):
    """Loads the program once and runs its ``forward`` method on CPU."""

    format = "pte"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from executorch.runtime import Runtime

        self.runtime = Runtime.get()
        try:
            self.program = self.runtime.load_program(Path(path))
            self.method = self.program.load_method("forward")
        except (RuntimeError, ValueError) as exc:
            raise DataError(f"{path}: not a loadable ExecuTorch program (.pte): {str(exc).splitlines()[0]}") from None
        # the input's planned sizes are the export's upper bounds; ExecuTorch itself does not check
        # each dimension (a taller-but-narrower input runs), so the runner does
        sizes = list(self.program.metadata("forward").input_tensor_meta(0).sizes())
        self.max_hw = (int(sizes[2]), int(sizes[3]))

    def run(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[2], x.shape[3]
        if h % 32 or w % 32:
            raise DataError(f"{self.path}: input {h}x{w} is not a multiple of 32 (the .pte accepts multiples of 32 "
                            "within the size bounds in its manifest); resize or pad the image")
        if h > self.max_hw[0] or w > self.max_hw[1]:
            raise DataError(f"{self.path}: input {h}x{w} is larger than the {self.max_hw[0]}x{self.max_hw[1]} the .pte "
                            "was exported for; resize the image, or re-export with a larger --max-size")
        try:
            out = self.method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        except RuntimeError as exc:
            raise DataError(f"{self.path}: ExecuTorch refused input {h}x{w} ({str(exc).splitlines()[0]}); check the "
                            "size bounds in the manifest (input.size_constraints)") from None
        return out[0].numpy()

    def describe(self) -> dict[str, Any]:
        return {"format": "pte", "runtime": "executorch", "executorch": executorch_version(), "max_hw": list(self.max_hw),
                "backends": sorted(self.runtime.backend_registry.registered_backend_names)}


def executorch_version() -> str:
    """The installed ExecuTorch's version (the runtime that runs a .pte here; the manifests record it)."""
    try:
        return metadata.version("executorch")
    except metadata.PackageNotFoundError:  # pragma: no cover - the pinned stack installs it
        return "unknown"


def open_pte(path: Path) -> Runner:
    """The runner of a .pte artifact (the factory the formats table names)."""
    return ExecuTorchRunner(path)
