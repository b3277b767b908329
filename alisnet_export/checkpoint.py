"""Checkpoints: safe reading, detectron2 key mapping, and errors that say what to do.

Formats read (nothing is ever unpickled beyond tensors, numbers, strings and containers):

* **native** ``.pth``: ``{"model": state_dict, "config": {...}, "alisnet_export_version": str, "meta": {...}}``
  (optionally ``"qat": {...}`` for quantization-aware-training checkpoints); read with
  ``torch.load(weights_only=True)``.
* **detectron2** ``model_final.pth``: ``{"model": state_dict, ...}`` with ``backbone.*``,
  ``sem_seg_head.coarse_sem_seg_head.*`` and ``sem_seg_head.point_head.*`` keys; read with
  ``torch.load(weights_only=True)``.
* **detectron2** ``.pkl`` (model-zoo style, numpy arrays): read with :class:`_NumpyOnlyUnpickler`,
  an explicit allow-list of the numpy globals an array needs.

The detectron2 <-> native key mapping is one pure function each way
(:func:`detectron2_to_native`, :func:`native_to_detectron2`), timm's ``checkpoint_filter_fn`` pattern.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from . import __version__
from ._io import atomic_write, current_umask, sha256_file  # re-exported: writing lives in _io
from .config import ModelConfig, list_configs, load_config
from .errors import CheckpointError, ConfigError

__all__ = [
    "LoadedCheckpoint",
    "read_checkpoint_file",
    "load_checkpoint",
    "save_checkpoint",
    "detectron2_to_native",
    "native_to_detectron2",
    "check_state_dict",
    "sha256_file",
    "atomic_write",
    "current_umask",
]

# --------------------------------------------------------------------------------------------------
# Native name                               detectron2 name
# backbone.body.<torchvision name>          backbone.<name>  (backbone.bottom_up.<name> behind an FPN;
#                                           ResNeXt bodies use detectron2's stem/resN/convK/shortcut names)
# fpn.{lateral,output}.<i>.*                backbone.fpn_{lateral,output}<level>.*
# head.scale_heads.<i>.<j>.conv.weight      sem_seg_head.coarse_sem_seg_head.<feat>.<j>.weight
# head.scale_heads.<i>.<j>.norm.*           sem_seg_head.coarse_sem_seg_head.<feat>.<j>.norm.*
# head.predictor.*                          sem_seg_head.coarse_sem_seg_head.predictor.*
# point_rend.point_head.mlp.<k>.conv.*      sem_seg_head.point_head.fc<k+1>.*
# point_rend.point_head.predictor.*         sem_seg_head.point_head.predictor.*
# <feat> is "p2".."p5" behind an FPN and "res2".."res5" without (ALiSNet).
_HEAD_PREFIX = "sem_seg_head.coarse_sem_seg_head."
_POINT_PREFIX = "sem_seg_head.point_head."
def _feature_name(config: ModelConfig, level_pos: int) -> str:
    res = config.in_features[level_pos]  # "res2"
    return f"p{res[3:]}" if config.top_down else res


def _backbone_prefix(config: ModelConfig) -> str:
    return "backbone.bottom_up." if config.top_down else "backbone."


def _resnet_to_d2(key: str) -> str:
    m = re.match(r"^conv1\.weight$", key)
    if m:
        return "stem.conv1.weight"
    m = re.match(r"^bn1\.(.+)$", key)
    if m:
        return f"stem.conv1.norm.{m.group(1)}"
    m = re.match(r"^layer(\d)\.(\d+)\.conv(\d)\.weight$", key)
    if m:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}.conv{m.group(3)}.weight"
    m = re.match(r"^layer(\d)\.(\d+)\.bn(\d)\.(.+)$", key)
    if m:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}.conv{m.group(3)}.norm.{m.group(4)}"
    m = re.match(r"^layer(\d)\.(\d+)\.downsample\.0\.weight$", key)
    if m:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}.shortcut.weight"
    m = re.match(r"^layer(\d)\.(\d+)\.downsample\.1\.(.+)$", key)
    if m:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}.shortcut.norm.{m.group(3)}"
    return key


def _resnet_from_d2(key: str) -> str:
    m = re.match(r"^stem\.conv1\.weight$", key)
    if m:
        return "conv1.weight"
    m = re.match(r"^stem\.conv1\.norm\.(.+)$", key)
    if m:
        return f"bn1.{m.group(1)}"
    m = re.match(r"^res(\d)\.(\d+)\.conv(\d)\.weight$", key)
    if m:
        return f"layer{int(m.group(1)) - 1}.{m.group(2)}.conv{m.group(3)}.weight"
    m = re.match(r"^res(\d)\.(\d+)\.conv(\d)\.norm\.(.+)$", key)
    if m:
        return f"layer{int(m.group(1)) - 1}.{m.group(2)}.bn{m.group(3)}.{m.group(4)}"
    m = re.match(r"^res(\d)\.(\d+)\.shortcut\.weight$", key)
    if m:
        return f"layer{int(m.group(1)) - 1}.{m.group(2)}.downsample.0.weight"
    m = re.match(r"^res(\d)\.(\d+)\.shortcut\.norm\.(.+)$", key)
    if m:
        return f"layer{int(m.group(1)) - 1}.{m.group(2)}.downsample.1.{m.group(3)}"
    return key


def native_to_detectron2(state_dict: Mapping[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Rename a native state dict to detectron2's layout (the inverse of :func:`detectron2_to_native`).

    detectron2 norms are FrozenBatchNorm2d, which has no ``num_batches_tracked``: those are dropped.
    """
    out: dict[str, Tensor] = {}
    bb = _backbone_prefix(config)
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        out[_native_key_to_d2(key, config, bb)] = value
    return out


def _native_key_to_d2(key: str, config: ModelConfig, bb: str) -> str:
    if key.startswith("backbone.body."):
        rest = key[len("backbone.body."):]
        if config.backbone.startswith("resnext"):
            rest = _resnet_to_d2(rest)
        return bb + rest
    m = re.match(r"^fpn\.(lateral|output)\.(\d+)\.(.+)$", key)
    if m:
        lvl = _feature_name(config, int(m.group(2)))[1:]
        return f"backbone.fpn_{m.group(1)}{lvl}.{m.group(3)}"
    m = re.match(r"^head\.scale_heads\.(\d+)\.(\d+)\.(conv|norm)\.(.+)$", key)
    if m:
        feat = _feature_name(config, int(m.group(1)))
        sub = "" if m.group(3) == "conv" else "norm."
        return f"{_HEAD_PREFIX}{feat}.{m.group(2)}.{sub}{m.group(4)}"
    if key.startswith("head.predictor."):
        return _HEAD_PREFIX + key[len("head."):]
    m = re.match(r"^point_rend\.point_head\.mlp\.(\d+)\.conv\.(.+)$", key)
    if m:
        return f"{_POINT_PREFIX}fc{int(m.group(1)) + 1}.{m.group(2)}"
    if key.startswith("point_rend.point_head.predictor."):
        return _POINT_PREFIX + key[len("point_rend.point_head."):]
    raise CheckpointError(f"no detectron2 name for native key {key!r} (config {config.name})")


def detectron2_to_native(state_dict: Mapping[str, Any], config: ModelConfig) -> dict[str, Tensor]:
    """Rename a detectron2 state dict (``backbone.*``, ``sem_seg_head.*``) to this package's names.

    Values may be tensors or numpy arrays (``.pkl`` model-zoo files); they come back as tensors.
    Keys that belong to neither the backbone nor the semantic-segmentation head (e.g. a detectron2
    ``pixel_mean`` buffer) are returned under their original name so the caller can report them.
    """
    out: dict[str, Tensor] = {}
    bb = _backbone_prefix(config)
    feats = {_feature_name(config, i): i for i in range(len(config.in_features))}
    for key, value in state_dict.items():
        tensor = torch.as_tensor(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        out[_d2_key_to_native(key, config, bb, feats)] = tensor
    return out


def _d2_key_to_native(key: str, config: ModelConfig, bb: str, feats: dict[str, int]) -> str:
    if config.top_down:
        m = re.match(r"^backbone\.fpn_(lateral|output)(\d)\.(.+)$", key)
        if m:
            pos = feats.get(f"p{m.group(2)}")
            return key if pos is None else f"fpn.{m.group(1)}.{pos}.{m.group(3)}"
    if key.startswith(bb):
        rest = key[len(bb):]
        if config.backbone.startswith("resnext"):
            rest = _resnet_from_d2(rest)
        return "backbone.body." + rest
    if key.startswith(_HEAD_PREFIX):
        rest = key[len(_HEAD_PREFIX):]
        if rest.startswith("predictor."):
            return "head." + rest
        m = re.match(r"^([a-z0-9]+)\.(\d+)\.(norm\.)?(.+)$", rest)
        if m and m.group(1) in feats:
            part = "norm" if m.group(3) else "conv"
            return f"head.scale_heads.{feats[m.group(1)]}.{m.group(2)}.{part}.{m.group(4)}"
        return key
    if key.startswith(_POINT_PREFIX):
        rest = key[len(_POINT_PREFIX):]
        m = re.match(r"^fc(\d+)\.(.+)$", rest)
        if m:
            return f"point_rend.point_head.mlp.{int(m.group(1)) - 1}.conv.{m.group(2)}"
        return "point_rend.point_head." + rest
    return key


# --------------------------------------------------------------------------------------------------
# Safe reading
_ZIP_MAGIC = b"PK\x03\x04"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles containers of numpy arrays and plain values; refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")


def _unsafe_message(path: Path, exc: BaseException) -> str:
    m = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f"`{m.group(1)}`" if m else "an object that is not a tensor"
    return (
        f"{path}: refused to load: the file asks the unpickler to import {what}, which a weights checkpoint never "
        "needs, so it may try to run code. Nothing from it was executed. If you trust and produced this file, "
        "re-save only its state dict: torch.save({'model': model.state_dict()}, 'clean.pth')."
    )


def read_checkpoint_file(path: str | os.PathLike[str]) -> Any:
    """Read ``path`` without running code from it; raise :class:`CheckpointError` with a clear reason."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file. Pass a .pth/.pkl checkpoint, or omit CKPT for the demo model.")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file.")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read: {exc.strerror}") from None
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); the download or copy was probably interrupted.")
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path}: truncated or corrupt ({size} bytes): the zip archive inside a .pth file has no central "
                "directory. Copy or download the checkpoint again."
            )
        return _torch_load(path, size)
    if head[:1] != b"\x80":
        raise CheckpointError(
            f"{path}: not a checkpoint: expected a PyTorch .pth (zip) or a pickled .pkl file, found data starting "
            f"with {head!r}."
        )
    if path.suffix == ".pkl":
        try:
            with open(path, "rb") as f:
                return _NumpyOnlyUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as exc:
            if "Unsupported global" in str(exc):
                raise CheckpointError(_unsafe_message(path, exc)) from None
            raise CheckpointError(f"{path}: truncated or corrupt pickle: {exc}") from None
        except (EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
            raise CheckpointError(f"{path}: truncated or corrupt pickle ({size} bytes): {exc}") from None
    return _torch_load(path, size)  # legacy (non-zip) torch.save format


def _torch_load(path: Path, size: int) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text or "Unsupported operand" in text:
            raise CheckpointError(_unsafe_message(path, exc)) from None
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({size} bytes): {text.splitlines()[0]}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint ({size} bytes): {first}. Copy or download it again."
        ) from None


# --------------------------------------------------------------------------------------------------
# Interpreting what was read
@dataclass
class LoadedCheckpoint:
    """A checkpoint read and validated against its config; ``state_dict`` has native keys, float32."""

    path: Path
    config: ModelConfig
    state_dict: dict[str, Tensor]
    source_format: str  # "native" | "detectron2" | "detectron2-pkl"
    sha256: str
    size_bytes: int
    meta: dict[str, Any] = field(default_factory=dict)
    qat: Optional[dict[str, Any]] = None  # set for quantization-aware-training checkpoints
    stored_dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> tensor count, as in the file
    #: QAT checkpoints carry the float model they were fine-tuned from: parity's reference
    reference_state_dict: Optional[dict[str, Tensor]] = None

    @property
    def is_qat(self) -> bool:
        return self.qat is not None

    def build_model(self) -> torch.nn.Module:
        """The float model with these weights, in eval mode (not for QAT checkpoints)."""
        from .modeling import build_model

        if self.is_qat:
            raise CheckpointError(
                f"{self.path}: is a QAT checkpoint; build it with alisnet_export.quantize.load_qat_model instead"
            )
        model = build_model(self.config)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    from .modeling.alisnet import ALiSNet

    with torch.device("meta"):
        model = ALiSNet(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(state_dict: Mapping[str, Tensor], config: ModelConfig) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """``(missing, unexpected, shape_mismatches)`` of ``state_dict`` against ``config``'s model."""
    expected = _expected_shapes(config)
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(state_dict[k].shape), expected[k])
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    return missing, unexpected, mismatched


def _fits(state_dict: Mapping[str, Tensor], config: ModelConfig) -> bool:
    missing, unexpected, mismatched = check_state_dict(state_dict, config)
    return not (missing or unexpected or mismatched)


def _candidate_configs() -> list[ModelConfig]:
    out = []
    for name in list_configs():
        cfg = load_config(name)
        out += [cfg, cfg.with_pointrend(not cfg.point_rend.enabled)]
    return out


def _find_matching_config(raw: Mapping[str, Any], fmt: str) -> Optional[ModelConfig]:
    for cfg in _candidate_configs():
        sd = detectron2_to_native(raw, cfg) if fmt != "native" else raw
        if _fits(sd, cfg):
            return cfg
    return None


def _few(items: list[Any], n: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _extract(path: Path, obj: Any) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """``(raw_state_dict, format, container)`` from whatever the file held."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: not a checkpoint: it holds a {type(obj).__name__}, expected a dict with a 'model' state dict."
        )
    if "model" in obj and isinstance(obj["model"], Mapping):
        raw = dict(obj["model"])
        container = dict(obj)
    elif obj and all(isinstance(v, (Tensor, np.ndarray)) for v in obj.values()):
        raw, container = dict(obj), {}
    else:
        keys = _few(sorted(str(k) for k in obj.keys()))
        raise CheckpointError(
            f"{path}: not a checkpoint this tool understands: expected a dict with a 'model' state dict "
            f"(native or detectron2) or a plain state dict, found keys {keys}."
        )
    bad = [k for k, v in raw.items() if not isinstance(v, (Tensor, np.ndarray))]
    if bad:
        raise CheckpointError(f"{path}: the state dict has non-tensor entries: {_few(bad)}")
    if not raw:
        raise CheckpointError(f"{path}: the state dict is empty.")
    if any(k.startswith("sem_seg_head.") or k.startswith("backbone.bottom_up.") for k in raw):
        fmt = "detectron2-pkl" if path.suffix == ".pkl" else "detectron2"
    elif any(isinstance(v, np.ndarray) for v in raw.values()):
        fmt = "detectron2-pkl"
    else:
        fmt = "native"
    return raw, fmt, container


#: layout version of native checkpoints (``"format"`` in the file). Files without the key are version 0, the
#: layout before the key existed; :data:`_MIGRATIONS` upgrades an older layout one version at a time, as
#: torchvision's ``_version`` / ``_load_from_state_dict`` do, so a later layout change migrates old files
#: instead of failing on them.
CHECKPOINT_FORMAT = 1


def _v0_to_v1(container: dict[str, Any]) -> dict[str, Any]:
    """Version 0 -> 1: the same keys; version 1 only adds the ``format`` field."""
    return {**container, "format": 1}


_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _v0_to_v1}


def migrate_container(path: Path, container: dict[str, Any]) -> dict[str, Any]:
    """A native checkpoint's top-level dict upgraded to :data:`CHECKPOINT_FORMAT` (see :data:`_MIGRATIONS`)."""
    version = container.get("format", 0)
    if not isinstance(version, int) or version < 0:
        raise CheckpointError(f"{path}: unreadable checkpoint format {version!r}; expected an integer version")
    if version > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {version} is newer than this alisnet-export reads "
                              f"({CHECKPOINT_FORMAT}); upgrade alisnet-export (pip install -U alisnet-export).")
    while version < CHECKPOINT_FORMAT:
        container = _MIGRATIONS[version](container)
        version = container["format"]
    return container


def load_checkpoint(
    path: str | os.PathLike[str],
    config: ModelConfig | str | None = None,
    *,
    pointrend: Optional[bool] = None,
) -> LoadedCheckpoint:
    """Read, map and validate a checkpoint. ``config`` overrides the one stored in the file.

    ``pointrend=False`` drops PointRend (the paper's Table 3 ablation) from the config and ignores the
    point-head weights; ``True`` requires them.
    """
    path = Path(path)
    obj = read_checkpoint_file(path)
    raw, fmt, container = _extract(path, obj)
    if fmt == "native" and container:
        container = migrate_container(path, container)
    cfg: Optional[ModelConfig]
    if isinstance(config, str):
        cfg = load_config(config)
    else:
        cfg = config
    if cfg is None and isinstance(container.get("config"), Mapping):
        try:
            cfg = ModelConfig.from_dict(container["config"], source=f"{path} (embedded config)")
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
    qat = container.get("qat") if isinstance(container.get("qat"), Mapping) else None
    stored: dict[str, int] = {}
    for value in raw.values():
        name = str(value.dtype).replace("torch.", "")
        stored[name] = stored.get(name, 0) + 1
    if cfg is None:
        cfg = _find_matching_config(raw, fmt)
        if cfg is None:
            raise CheckpointError(
                f"{path}: a {fmt} checkpoint without an embedded config, and it fits none of the shipped configs "
                f"({', '.join(list_configs())}). Pass --config NAME_OR_JSON for the variant it was trained with."
            )
    if qat is not None:
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in raw.items()}
        reference = container.get("reference_model")
        if not isinstance(reference, Mapping):
            raise CheckpointError(
                f"{path}: a QAT checkpoint without the float model it was fine-tuned from ('reference_model'); "
                "re-create it with `alisnet-export qat`."
            )
        reference_sd = {k: (v.float() if v.is_floating_point() else v) for k, v in reference.items()}
        _validate(path, reference_sd, cfg, reference, "native")
        return LoadedCheckpoint(path, cfg, state, fmt, sha256_file(path), path.stat().st_size,
                                dict(container.get("meta") or {}), dict(qat), stored, reference_sd)
    state = detectron2_to_native(raw, cfg) if fmt != "native" else dict(raw)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    has_point_head = any(k.startswith("point_rend.") for k in state)
    if pointrend is False:
        cfg = cfg.with_pointrend(False)
        state = {k: v for k, v in state.items() if not k.startswith("point_rend.")}
    elif pointrend is None and cfg.point_rend.enabled and not has_point_head:
        cfg = cfg.with_pointrend(False)  # a coarse-only (Table 3 ablation) checkpoint
    _validate(path, state, cfg, raw, fmt)
    return LoadedCheckpoint(path, cfg, state, fmt, sha256_file(path), path.stat().st_size,
                            dict(container.get("meta") or {}), None, stored)


def _validate(path: Path, state: dict[str, Tensor], cfg: ModelConfig, raw: Mapping[str, Any], fmt: str) -> None:
    missing, unexpected, mismatched = check_state_dict(state, cfg)
    if not (missing or unexpected or mismatched):
        return
    other = _find_matching_config(raw, fmt)
    if other is not None and other.name != cfg.name:
        raise CheckpointError(
            f"{path}: checkpoint is for variant {other.name!r}, not {cfg.name!r} "
            f"(backbone {other.backbone}, top_down={other.top_down}). Pass --config {other.name.removesuffix('-no-pointrend')}"
            + (" --no-pointrend" if not other.point_rend.enabled else "")
            + "."
        )
    parts = [f"{path}: does not fit config {cfg.name!r} ({fmt} format):"]
    if mismatched:
        parts.append("shape mismatch: " + _few([f"{k} checkpoint {a} vs model {b}" for k, a, b in mismatched], 3))
    if missing:
        parts.append(f"{len(missing)} missing keys, e.g. {_few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, e.g. {_few(unexpected)}")
    parts.append("Check that --config names the variant the checkpoint was trained with.")
    raise CheckpointError(" ".join(parts))


# --------------------------------------------------------------------------------------------------
# Writing
def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (str subclasses such as ``torch.__version__`` become ``str``), so the
    checkpoint stays loadable with ``weights_only=True``, which refuses any other class."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {where} must be JSON-like data: {exc}") from None


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Tensor],
    config: ModelConfig,
    *,
    meta: Optional[Mapping[str, Any]] = None,
    qat: Optional[Mapping[str, Any]] = None,
    half: bool = False,
    force: bool = False,
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write a native checkpoint atomically. ``half`` stores floating tensors as fp16 (smaller file)."""
    path = Path(path)
    sd = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in state_dict.items()
    }
    payload: dict[str, Any] = {
        "model": sd,
        "config": config.to_dict(),
        "alisnet_export_version": __version__,
        "format": CHECKPOINT_FORMAT,
        "meta": _plain(dict(meta or {}), "meta"),
    }
    if qat is not None:
        payload["qat"] = _plain(dict(qat), "qat")
    if extra:
        payload.update(extra)
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()), force=force)
    return path
