"""QAT checkpoints: a fake-quantized model plus the float model it was fine-tuned from.

Layout (a native checkpoint, readable with ``torch.load(weights_only=True)``)::

    {"model": <state dict of the prepared (fused, fake-quantized) model>,
     "config": {...}, "alisnet_export_version": str, "meta": {...},
     "qat": {"engine": "qnnpack", "options": {...EagerQuantOptions}, "steps": int, "data": str, ...},
     "reference_model": <float state dict the fine-tune started from: parity's reference>}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ..checkpoint import LoadedCheckpoint, save_checkpoint
from ..config import ModelConfig
from ..errors import CheckpointError
from ..modeling import build_model
from . import eager

__all__ = ["save_qat_checkpoint", "load_qat_model"]


def save_qat_checkpoint(path: Path, prepared: nn.Module, config: ModelConfig, *, reference: Mapping[str, torch.Tensor],
                        options: eager.EagerQuantOptions, info: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None,
                        force: bool = False) -> Path:
    qat = {"engine": eager.ENGINE, "options": options.to_dict(), **info}
    return save_checkpoint(path, prepared.state_dict(), config, meta=meta, qat=qat, force=force,
                           extra={"reference_model": {k: v.detach().cpu() for k, v in reference.items()}})


def load_qat_model(loaded: LoadedCheckpoint) -> tuple[nn.Module, nn.Module, eager.EagerQuantOptions]:
    """``(prepared QAT model in eval mode, float reference model, options)`` from a QAT checkpoint."""
    if not loaded.is_qat or loaded.reference_state_dict is None:
        raise CheckpointError(f"{loaded.path}: not a QAT checkpoint")
    try:
        options = eager.EagerQuantOptions(**loaded.qat.get("options", {}))
    except TypeError as exc:
        raise CheckpointError(f"{loaded.path}: unreadable QAT options {loaded.qat.get('options')}: {exc}") from None
    reference = build_model(loaded.config)
    reference.load_state_dict(loaded.reference_state_dict)
    prepared = eager.prepare(reference, qat=True, options=options)
    try:
        prepared.load_state_dict(loaded.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise CheckpointError(
            f"{loaded.path}: the QAT state does not fit config {loaded.config.name!r} with options {options}: "
            + " ".join(first[:3])
        ) from None
    return prepared.eval(), reference.eval(), options
