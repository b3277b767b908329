"""One runner interface for every artifact format; parity, eval and bench only talk to this.

A runner takes a preprocessed ``(1, 3, H, W)`` float32 array and returns ``(1, K, H, W)`` float32
logits. Runners for formats whose runtime is missing, or cannot run on this platform, raise
:class:`EnvironmentProblem` with the reason (e.g. Core ML prediction needs macOS). Which runner opens
which format is a column of the formats table (:mod:`alisnet_export.formats`), not a registry here.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from ..errors import DataError
from ..formats import format_of_path, format_spec

__all__ = ["Runner", "runner_for", "open_runner", "detect_format"]


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


def detect_format(path: Path) -> str:
    """The format name of the artifact at ``path``, from its suffix (:class:`DataError` if unknown)."""
    return format_of_path(path).name


def runner_for(fmt: str) -> Callable[[Path], Runner]:
    """The factory ``(path) -> Runner`` of format ``fmt``; its runtime is imported when it is called."""
    try:
        spec = format_spec(fmt)
    except ValueError as exc:
        raise DataError(f"no runner for artifact format {fmt!r}: {exc}") from None
    return spec.open_runner


def open_runner(path: Path, fmt: str | None = None) -> Runner:
    """A runner for the artifact at ``path`` (format from its suffix unless given)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such artifact")
    return runner_for(fmt or detect_format(path))(path)
