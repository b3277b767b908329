"""Where the shipped model configs and checkpoints live, in a checkout and after ``pip install .``.

In a checkout (or an editable install) they are the top-level ``models/`` folder. A regular install
copies that folder into the package as ``alisnet_export/_models`` (see ``setup.cfg``,
``package_dir``). ``ALISNET_EXPORT_MODELS`` overrides both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["models_dir", "ZooEntry", "zoo_entries", "default_checkpoint", "fixture_checkpoint"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def models_dir() -> Path:
    env = os.environ.get("ALISNET_EXPORT_MODELS")
    if env:
        return Path(env)
    installed = _PACKAGE_DIR / "_models"
    if (installed / "zoo.json").is_file():
        return installed
    checkout = _PACKAGE_DIR.parent / "models"
    if (checkout / "zoo.json").is_file():
        return checkout
    raise FileNotFoundError(
        f"cannot find the model zoo: neither {installed} nor {checkout} holds zoo.json. "
        "Reinstall alisnet-export (pip install .) or set ALISNET_EXPORT_MODELS to the models/ folder."
    )


@dataclass(frozen=True)
class ZooEntry:
    """A shipped checkpoint and its metadata (torchvision-style weight metadata)."""

    name: str
    file: str
    config: str
    sha256: str
    meta: dict[str, Any]

    @property
    def path(self) -> Path:
        return models_dir() / self.file


def _zoo() -> dict[str, Any]:
    return json.loads((models_dir() / "zoo.json").read_text(encoding="utf-8"))


def zoo_entries() -> dict[str, ZooEntry]:
    data = _zoo()
    return {
        name: ZooEntry(name=name, file=e["file"], config=e["config"], sha256=e.get("sha256", ""), meta=e.get("meta", {}))
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
    """The small synthetic-people checkpoint: fast test fixture and extra training data."""
    return zoo_entries()[_zoo()["fixture"]]
