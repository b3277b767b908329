"""Runners: one per artifact format, all behind :class:`~alisnet_export.runtimes.base.Runner`."""

from .base import Runner, detect_format, open_runner, runner_for
from .torch_runners import LiteInterpreterRunner, TorchModelRunner

__all__ = ["Runner", "LiteInterpreterRunner", "TorchModelRunner", "detect_format", "open_runner", "runner_for"]
