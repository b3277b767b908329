"""Where the shipped model configs and checkpoints live, in a checkout and after ``pip install .``.

In a checkout (or an editable install) they are the top-level ``models/`` folder. A regular install
copies that folder into the package as ``alisnet_export/_models`` (see ``setup.cfg``,
``package_dir``). ``ALISNET_EXPORT_MODELS`` overrides both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["models_dir", "ZooEntry", "zoo_entries", "default_checkpoint", "fixture_checkpoint", "register_checkpoint"]

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
    """The small synthetic-people checkpoint: fast test fixture and extra training data."""
    return zoo_entries()[_zoo()["fixture"]]


def register_checkpoint(path: Path, *, name: str, role: Optional[str] = None, extra_meta: Optional[dict[str, Any]] = None) -> ZooEntry:
    """Copy nothing; record ``path`` (already inside :func:`models_dir`) in ``zoo.json`` with its sha256,
    file size and the meta stored in the checkpoint (plus ``extra_meta``). ``role``: "default" and/or
    "fixture" (comma-separated) makes it the embedded default or the test fixture."""
    from .checkpoint import load_checkpoint, sha256_file

    path = Path(path).resolve()
    root = models_dir().resolve()
    if path.parent != root:
        raise ValueError(f"{path}: a zoo checkpoint must live in {root}")
    loaded = load_checkpoint(path)
    data = _zoo()
    meta = {**loaded.meta, **(extra_meta or {}), "file_size_bytes": path.stat().st_size}
    data["checkpoints"][name] = {"file": path.name, "config": loaded.config.name, "sha256": sha256_file(path), "meta": meta}
    for r in (role or "").split(","):
        if r:
            data[r.strip()] = name
    (models_dir() / "zoo.json").write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return zoo_entries()[name]
