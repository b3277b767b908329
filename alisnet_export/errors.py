"""User-facing errors and the exit codes the CLI maps them to.

Every error names the file (or option) involved, what was expected, what was found and what to do.
The CLI catches :class:`AlisnetError` subclasses and exits with ``exit_code``; anything else is a bug
and exits with 70 (``EX_SOFTWARE``) and a traceback.
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_GATE_FAILED",
    "EXIT_USAGE",
    "EXIT_INPUT",
    "EXIT_EXPORT",
    "EXIT_ENVIRONMENT",
    "EXIT_INTERNAL",
    "AlisnetError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "OutputError",
    "ExportError",
    "EnvironmentProblem",
]

EXIT_OK = 0
EXIT_GATE_FAILED = 1  # a parity / accuracy gate failed: the artifact was written but must not ship
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_INPUT = 3  # bad checkpoint, config, image or dataset
EXIT_EXPORT = 4  # an export or conversion step failed
EXIT_ENVIRONMENT = 5  # a required runtime/package is missing or the platform cannot do this
EXIT_INTERNAL = 70  # a bug in alisnet-export: please report it

EXIT_CODES_HELP = """Exit codes:
  0   success
  1   a parity/accuracy gate failed (the artifact is written and marked failed)
  2   bad command line
  3   bad input: checkpoint, config, image, dataset, or an output that exists
  4   export or conversion failed
  5   missing runtime or unsupported platform (e.g. Core ML prediction off macOS)
  70  internal error (a bug: please report it with the traceback)"""


class AlisnetError(Exception):
    """Base class of errors that are the user's input's fault or the environment's, not a bug."""

    exit_code = EXIT_INPUT


class CheckpointError(AlisnetError):
    """A checkpoint cannot be read, is unsafe, or does not fit the model."""


class ConfigError(AlisnetError):
    """A model config is missing, malformed or inconsistent."""


class DataError(AlisnetError):
    """An image or dataset is missing, unreadable or malformed."""


class OutputError(AlisnetError):
    """An output path exists (without --force) or cannot be written."""


class ExportError(AlisnetError):
    """An exporter or converter failed."""

    exit_code = EXIT_EXPORT


class EnvironmentProblem(AlisnetError):
    """A runtime is not installed or the platform cannot run it (e.g. Core ML outside macOS)."""

    exit_code = EXIT_ENVIRONMENT
