"""Runners: one per artifact format, all behind :class:`~alisnet_export.runtimes.base.Runner`."""

from .base import FORMAT_SUFFIXES, Runner, detect_format, open_runner, register_runner, runner_for
from .torch_runners import LiteInterpreterRunner, TorchModelRunner

__all__ = ["FORMAT_SUFFIXES", "Runner", "LiteInterpreterRunner", "TorchModelRunner", "detect_format", "open_runner",
           "register_runner", "runner_for"]
