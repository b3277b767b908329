"""Model configs: one small JSON file per variant in ``models/`` (timm-style "one config per variant").

Field names follow detectron2's config keys where one exists (``common_stride``, ``conv_dims``,
``subdivision_steps``, ``subdivision_num_points``, ``oversample_ratio``, ``importance_sample_ratio``)
so that a reader of the PointRend paper or of detectron2 finds the symbol they expect.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

__all__ = [
    "BACKBONES",
    "DEFAULT_VARIANT",
    "PointRendConfig",
    "InputConfig",
    "ModelConfig",
    "load_config",
    "list_configs",
    "models_dir",
]

#: Backbones the modeling code can build, with the torchvision builder each one mirrors.
BACKBONES = ("mnasnet1_0", "mobilenet_v2", "mobilenet_v3_large", "resnext101_32x8d")

#: the variant ``train-demo`` trains when none is given or stored (the paper's ALiSNet)
DEFAULT_VARIANT = "alisnet_mnasnet"


@dataclass(frozen=True)
class PointRendConfig:
    """PointRend head (Kirillov et al. 2020), detectron2 ``MODEL.POINT_HEAD`` semantics."""

    enabled: bool = True
    subdivision_steps: int = 2
    subdivision_num_points: int = 8192
    train_num_points: int = 2048
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    fc_dim: int = 256
    num_fc: int = 3
    coarse_pred_each_layer: bool = True


@dataclass(frozen=True)
class InputConfig:
    """What the network expects; the mobile harnesses implement the same contract."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, on values scaled to [0, 1]
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    size_divisibility: int = 32
    resize_height: int = 1024
    crop_margin: float = 0.10


@dataclass(frozen=True)
class ModelConfig:
    """One network variant.

    ``top_down`` selects Semantic FPN with the FPN top-down path (detectron2's baseline) or the
    ALiSNet simplification that feeds backbone levels straight into the per-level ConvBlocks.
    """

    name: str
    backbone: str
    top_down: bool = False
    fpn_dim: int = 256
    conv_dims: int = 128
    common_stride: int = 4
    num_classes: int = 2
    in_features: tuple[str, ...] = ("res2", "res3", "res4", "res5")
    point_rend: PointRendConfig = field(default_factory=PointRendConfig)
    input: InputConfig = field(default_factory=InputConfig)
    description: str = ""
    paper: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"config {self.name!r}: unknown backbone {self.backbone!r}; expected one of {', '.join(BACKBONES)}"
            )
        if self.num_classes < 2:
            raise ConfigError(f"config {self.name!r}: num_classes must be >= 2 (background + person), got {self.num_classes}")
        if self.common_stride not in (2, 4, 8):
            raise ConfigError(f"config {self.name!r}: common_stride must be 2, 4 or 8, got {self.common_stride}")
        bad = [f for f in self.in_features if f not in ("res1", "res2", "res3", "res4", "res5")]
        if bad or not self.in_features:
            raise ConfigError(f"config {self.name!r}: in_features must be a non-empty subset of res1..res5, got {list(self.in_features)}")
        pr = self.point_rend
        if pr.subdivision_steps < 0 or pr.subdivision_num_points < 1 or pr.num_fc < 1 or pr.fc_dim < 1:
            raise ConfigError(f"config {self.name!r}: point_rend values must be positive: {pr}")
        if not 0.0 <= pr.importance_sample_ratio <= 1.0 or pr.oversample_ratio < 1.0:
            raise ConfigError(
                f"config {self.name!r}: need 0 <= importance_sample_ratio <= 1 and oversample_ratio >= 1, got {pr}"
            )
        if self.input.size_divisibility % 32:
            raise ConfigError(f"config {self.name!r}: input.size_divisibility must be a multiple of 32")

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["in_features"] = list(self.in_features)
        d["input"]["mean"] = list(self.input.mean)
        d["input"]["std"] = list(self.input.std)
        d["paper"] = dict(self.paper)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> "ModelConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: a model config must be a JSON object, found {type(data).__name__}")
        data = dict(data)
        _reject_unknown(data, cls, source)
        if "name" not in data or "backbone" not in data:
            raise ConfigError(f"{source}: a model config needs at least 'name' and 'backbone'")
        pr = data.pop("point_rend", {}) or {}
        inp = data.pop("input", {}) or {}
        _reject_unknown(pr, PointRendConfig, f"{source} (point_rend)")
        _reject_unknown(inp, InputConfig, f"{source} (input)")
        for key in ("mean", "std"):
            if key in inp:
                if len(inp[key]) != 3:
                    raise ConfigError(f"{source}: input.{key} needs 3 values (R, G, B), got {inp[key]}")
                inp[key] = tuple(float(v) for v in inp[key])
        if "in_features" in data:
            data["in_features"] = tuple(data["in_features"])
        try:
            return cls(point_rend=PointRendConfig(**pr), input=InputConfig(**inp), **data)
        except TypeError as exc:  # wrong value types end up here
            raise ConfigError(f"{source}: {exc}") from None

    def with_pointrend(self, enabled: bool) -> "ModelConfig":
        """The same variant with PointRend on or off (the paper's Table 3 ablation)."""
        if enabled == self.point_rend.enabled:
            return self
        suffix = "" if enabled else "-no-pointrend"
        name = self.name.removesuffix("-no-pointrend") + suffix
        return dataclasses.replace(self, name=name, point_rend=dataclasses.replace(self.point_rend, enabled=enabled))


def _reject_unknown(data: Mapping[str, Any], cls: type, source: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)}")


_PACKAGE_DIR = Path(__file__).resolve().parent


def models_dir() -> Path:
    """Where the shipped model configs and checkpoints live, in a checkout and after ``pip install .``.

    In a checkout (or an editable install) they are the top-level ``models/`` folder. A regular install
    copies that folder into the package as ``alisnet_export/_models`` (see ``setup.cfg``,
    ``package_dir``). ``ALISNET_EXPORT_MODELS`` overrides both.
    """
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


def list_configs() -> list[str]:
    """Names of the configs shipped in ``models/``."""
    return sorted(p.stem for p in models_dir().glob("*.json") if p.stem != "zoo")


def load_config(name_or_path: str | Path) -> ModelConfig:
    """Load a config by shipped name (``alisnet_mnasnet``) or by path to a JSON file."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        candidate = models_dir() / f"{name_or_path}.json"
        if candidate.is_file():
            path = candidate
        elif not path.is_file():
            raise ConfigError(
                f"config {str(name_or_path)!r} not found: it is neither a file nor a shipped config. "
                f"Shipped configs: {', '.join(list_configs())}"
            )
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist. Shipped configs: {', '.join(list_configs())}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    return ModelConfig.from_dict(data, source=str(path))
