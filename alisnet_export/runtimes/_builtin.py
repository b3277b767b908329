"""Importing this module registers every shipped runner (each imports its runtime lazily)."""

from . import torch_runners  # noqa: F401
from . import coreml_runner  # noqa: F401
from . import onnx_runner  # noqa: F401
from . import executorch_runner  # noqa: F401
