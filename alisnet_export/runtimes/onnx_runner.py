"""``.onnx`` and ``.ort`` files run by ONNX Runtime on CPU (``CPUExecutionProvider``).

The same session type reads both: an ``.ort`` file is ONNX Runtime's flatbuffer format for ONNX
Runtime Mobile / minimal builds, which the full Python package loads too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, EnvironmentProblem
from .base import Runner

__all__ = ["OnnxRuntimeRunner", "OrtCallable", "PROVIDERS", "open_onnx"]

#: phones run the CPU provider too (NNAPI / Core ML providers are app-side choices)
PROVIDERS = ["CPUExecutionProvider"]


class OnnxRuntimeRunner(Runner):
    """An ONNX Runtime ``InferenceSession`` on CPU for one ``.onnx`` / ``.ort`` artifact."""

    format = "onnx"

    def __init__(self, path: Path, *, threads: int = 0) -> None:
        super().__init__(path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise EnvironmentProblem("onnxruntime is not installed; it is a dependency of alisnet-export: "
                                     "reinstall it with `pip install -e .` (or `make venv`)") from None
        self._ort = ort
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about unused initializers in QDQ graphs
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=PROVIDERS)
        except Exception as exc:  # ORT raises its own exception types (InvalidGraph, Fail, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise DataError(f"{path}: ONNX Runtime cannot load it as an ONNX/ORT model: {first}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise DataError(f"{path}: expected a model with one input (the image), found {len(inputs)}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        try:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise DataError(f"{self.path}: ONNX Runtime failed on a {'x'.join(map(str, x.shape))} input "
                            f"(check the manifest's size constraints): {first}") from None

    def describe(self) -> dict[str, Any]:
        return {"format": "onnx", "runtime": "onnxruntime", "onnxruntime": self._ort.__version__,
                "providers": self.session.get_providers(), "file_format": self.path.suffix.lstrip(".").lower(),
                "input": self.input_name, "output": self.output_name}


class OrtCallable:
    """An ONNX model run as parity runs it (:class:`OnnxRuntimeRunner`), called like an eager model (tensor in,
    tensor out): what ``--keep-float auto`` and ``quant-report`` judge their QDQ models with."""

    def __init__(self, path: Path) -> None:
        self.runner = OnnxRuntimeRunner(path)

    def __call__(self, x: Any) -> Any:
        import torch

        return torch.from_numpy(self.runner.run(x.numpy()))


def open_onnx(path: Path) -> Runner:
    """The runner of a .onnx artifact (the factory the formats table names)."""
    return OnnxRuntimeRunner(path)
