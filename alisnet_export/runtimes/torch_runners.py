"""Runners backed by PyTorch: the float model itself (the reference) and the lite interpreter (.ptl)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import DataError
from .base import Runner

__all__ = ["TorchModelRunner", "LiteInterpreterRunner", "open_ptl"]


class TorchModelRunner(Runner):
    """Eager (or scripted) ``torch.nn.Module``: the float reference every artifact is compared with."""

    format = "torch"

    def __init__(self, model: torch.nn.Module, name: str = "float model") -> None:
        super().__init__(Path(name))
        self.model = model.eval()

    def run(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    def run_with_tie_zone(self, x: np.ndarray, margin: float) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """:meth:`run`'s logits and, in the same pass, PointRend's (H, W) bool tie zone for one image
        (``ALiSNet.forward_with_tie_zone``); the zone is None for other models."""
        if not hasattr(self.model, "forward_with_tie_zone"):
            return self.run(x), None
        with torch.inference_mode():
            logits, zone = self.model.forward_with_tie_zone(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), margin)
        return logits.numpy(), zone[0].numpy()

    def describe(self) -> dict[str, Any]:
        return {"format": "torch-eager", "torch": torch.__version__}


class LiteInterpreterRunner(Runner):
    """A ``.ptl`` run by ``torch.jit.mobile._load_for_lite_interpreter``: the runtime phones use."""

    format = "ptl"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        import torch.jit.mobile  # noqa: F401  (not imported by `import torch`)

        try:
            self.module = torch.jit.mobile._load_for_lite_interpreter(str(path))
        except RuntimeError as exc:
            raise DataError(f"{path}: not a loadable lite-interpreter (.ptl) file: {str(exc).splitlines()[0]}") from None
        self.bytecode_version = torch.jit.mobile._get_model_bytecode_version(str(path))

    def run(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    def describe(self) -> dict[str, Any]:
        return {"format": "ptl", "runtime": "torch lite interpreter", "torch": torch.__version__,
                "bytecode_version": self.bytecode_version, "quantized_engine": torch.backends.quantized.engine}


def open_ptl(path: Path) -> Runner:
    """The runner of a .ptl artifact (the factory the formats table names)."""
    torch.backends.quantized.engine = "qnnpack"  # the engine the phones use; int8 .ptl needs it
    return LiteInterpreterRunner(path)
