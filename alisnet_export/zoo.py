"""The shipped checkpoints (``models/zoo.json``: the embedded default and the test fixture) and the
table of shipped variants. Where ``models/`` is found is :func:`alisnet_export.config.models_dir`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import list_configs, load_config, models_dir

__all__ = ["models_dir", "ZooEntry", "zoo_entries", "default_checkpoint", "fixture_checkpoint",
           "real_photos_checkpoint", "variant_table"]


@dataclass(frozen=True)
class ZooEntry:
    """A shipped checkpoint and its metadata (torchvision-style weight metadata)."""

    name: str
    file: str
    config: str
    sha256: str
    meta: dict[str, Any]
    #: default image sets (see :func:`alisnet_export.samples.resolve_image_set`): {"parity": ..., "calibration": ...}
    image_sets: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return models_dir() / self.file


def _zoo() -> dict[str, Any]:
    return json.loads((models_dir() / "zoo.json").read_text(encoding="utf-8"))


def zoo_entries() -> dict[str, ZooEntry]:
    data = _zoo()
    return {
        name: ZooEntry(name=name, file=e["file"], config=e["config"], sha256=e.get("sha256", ""), meta=e.get("meta", {}),
                       image_sets=e.get("image_sets", {}))
        for name, e in data["checkpoints"].items()
    }


def default_checkpoint() -> ZooEntry:
    """The embedded default that every command uses when no CKPT is given."""
    from .errors import CheckpointError

    name, entries = _zoo().get("default"), zoo_entries()
    if name not in entries:
        raise CheckpointError(
            f"{models_dir() / 'zoo.json'}: no embedded default checkpoint is registered (default: {name!r}); "
            "pass a checkpoint file (CKPT) explicitly"
        )
    return entries[name]


def fixture_checkpoint() -> ZooEntry:
    """The checkpoint tests use: the paper's ALiSNet trained on the exact-ground-truth testbed."""
    return zoo_entries()[_zoo()["fixture"]]


def real_photos_checkpoint() -> ZooEntry:
    """The real-people demo: distilled offline from a portrait-matting teacher, for photos of people."""
    return zoo_entries()[_zoo()["real_photos"]]


def variant_table() -> list[dict[str, Any]]:
    """Parameters and float32 size of every shipped variant, beside the paper's Table 1 sizes."""
    import torch

    from .modeling.alisnet import ALiSNet

    rows = []
    for name in list_configs():
        cfg = load_config(name)
        with torch.device("meta"):  # shapes only: no memory, no time
            model = ALiSNet(cfg)
        params = sum(p.numel() for p in model.parameters())
        point = sum(p.numel() for p in model.point_rend.parameters()) if model.point_rend is not None else 0
        rows.append({
            "variant": name, "backbone": cfg.backbone, "top_down": cfg.top_down, "parameters": params,
            "point_head_parameters": point, "float32_mb": params * 4 / 1e6, "int8_weights_mb": params / 1e6,
            "paper_mb": cfg.paper.get("size_mb"), "paper_qat_mb": cfg.paper.get("size_mb_qat"),
            "paper_table": cfg.paper.get("table", ""),
        })
    return rows
