"""One runner interface for every artifact format; parity, eval and bench only talk to this.

A runner takes a preprocessed ``(1, 3, H, W)`` float32 array and returns ``(1, K, H, W)`` float32
logits. Runners for formats whose runtime is missing, or cannot run on this platform, raise
:class:`EnvironmentProblem` with the reason (e.g. Core ML prediction needs macOS).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from ..errors import DataError

__all__ = ["Runner", "register_runner", "runner_for", "open_runner", "detect_format", "FORMAT_SUFFIXES"]

#: file suffix -> artifact format
FORMAT_SUFFIXES = {".ptl": "ptl", ".pte": "pte", ".onnx": "onnx", ".mlpackage": "coreml", ".ort": "onnx"}

_REGISTRY: dict[str, Callable[[Path], "Runner"]] = {}


class Runner(abc.ABC):
    """Runs one artifact on CPU."""

    format: ClassVar[str]

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """``x`` (1, 3, H, W) float32 -> logits (1, K, H, W) float32."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)

    def describe(self) -> dict[str, Any]:
        """What ran it (runtime name and version, delegates...), for reports."""
        return {"format": self.format, "path": str(self.path)}


def register_runner(fmt: str) -> Callable[[Callable[[Path], Runner]], Callable[[Path], Runner]]:
    """Register a factory ``(path) -> Runner`` for ``fmt``; the factory may import its runtime lazily."""

    def deco(factory: Callable[[Path], Runner]) -> Callable[[Path], Runner]:
        _REGISTRY[fmt] = factory
        return factory

    return deco


def detect_format(path: Path) -> str:
    path = Path(path)
    fmt = FORMAT_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unknown artifact format {path.suffix or '(no suffix)'!r}; expected one of "
            f"{', '.join(sorted(FORMAT_SUFFIXES))}"
        )
    return fmt


def runner_for(fmt: str) -> Callable[[Path], Runner]:
    from . import _builtin  # noqa: F401  (registers the shipped runners)

    try:
        return _REGISTRY[fmt]
    except KeyError:
        raise DataError(f"no runner for artifact format {fmt!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def open_runner(path: Path, fmt: str | None = None) -> Runner:
    """A runner for the artifact at ``path`` (format from its suffix unless given)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such artifact")
    return runner_for(fmt or detect_format(path))(path)
