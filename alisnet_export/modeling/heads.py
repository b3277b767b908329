"""Semantic FPN (Kirillov et al. 2019), with or without the FPN top-down path.

* ``FPN``: detectron2's FPN (lateral 1x1 + top-down nearest 2x + output 3x3), used by the
  paper's baselines (Table 1: ResNeXt101/MnasNet/MobileNetV3 + FPN + PointRend).
* ``SemSegFPNHead``: detectron2's ``SemSegFPNHead``: each level goes through
  ``max(1, log2(stride) - log2(common_stride))`` ConvBlocks (conv3x3-BN-ReLU), each followed by a 2x
  bilinear upsampling until ``common_stride``; the levels are summed; a 1x1 conv predicts coarse
  logits. ALiSNet feeds the backbone levels straight in (no top-down path).

Adds use ``FloatFunctional`` so the head runs int8 under eager QNNPACK quantization.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized import FloatFunctional
from torch.nn import functional as F

__all__ = ["ConvBlock", "FPN", "SemSegFPNHead"]


class ConvBlock(nn.Sequential):
    """conv3x3 - BN - ReLU (names ``conv``/``norm``/``relu``; detectron2's ``Conv2d(norm=...)``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                norm=nn.BatchNorm2d(out_channels),
                relu=nn.ReLU(inplace=True),
            )
        )
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")  # c2_msra_fill

    def fuse_model(self, is_qat: bool) -> None:
        fuse = torch.ao.quantization.fuse_modules_qat if is_qat else torch.ao.quantization.fuse_modules
        fuse(self, ["conv", "norm", "relu"], inplace=True)


class _Upsample2x(nn.Module):
    """2x bilinear upsampling (align_corners=False), written as a module so it scripts and quantizes."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class FPN(nn.Module):
    """detectron2 FPN over ``in_channels`` (strides 4..32 here), returning same-stride maps of ``out_channels``."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, out_channels, 1) for c in in_channels])
        self.output = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels])
        self.adds = nn.ModuleList([FloatFunctional() for _ in in_channels[1:]])
        for conv in list(self.lateral) + list(self.output):
            nn.init.kaiming_uniform_(conv.weight, a=1)  # detectron2 c2_xavier_fill
            nn.init.zeros_(conv.bias)
        self.num_levels = len(in_channels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        # lateral connections, coarsest first, then the top-down path
        laterals: list[Tensor] = []
        for i, conv in enumerate(self.lateral):
            laterals.append(conv(features[i]))
        prev = laterals[-1]
        results: list[Tensor] = [prev]
        for j, add in enumerate(self.adds):
            i = self.num_levels - 2 - j
            prev = add.add(laterals[i], F.interpolate(prev, scale_factor=2.0, mode="nearest"))
            results.insert(0, prev)
        outs: list[Tensor] = []
        for i, conv in enumerate(self.output):
            outs.append(conv(results[i]))
        return outs


class SemSegFPNHead(nn.Module):
    """Per-level ConvBlocks + 2x upsampling to ``common_stride``, summed; 1x1 coarse predictor.

    ``forward`` returns ``(coarse_logits, features)``, both at ``common_stride``; ``features`` are
    the fine-grained features PointRend samples.
    """

    def __init__(self, in_channels: list[int], in_strides: list[int], *, conv_dims: int, common_stride: int,
                 num_classes: int) -> None:
        super().__init__()
        if any(s < common_stride for s in in_strides):
            raise ValueError(f"every input stride must be >= common_stride={common_stride}, got {in_strides}")
        self.scale_heads = nn.ModuleList()
        for channels, stride in zip(in_channels, in_strides):
            ops: list[nn.Module] = []
            head_length = max(1, int(math.log2(stride) - math.log2(common_stride)))
            for k in range(head_length):
                ops.append(ConvBlock(channels if k == 0 else conv_dims, conv_dims))
                if stride != common_stride:
                    ops.append(_Upsample2x())
            self.scale_heads.append(nn.Sequential(*ops))
        self.adds = nn.ModuleList([FloatFunctional() for _ in in_channels[1:]])
        self.predictor = nn.Conv2d(conv_dims, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        per_level: list[Tensor] = []
        for i, head in enumerate(self.scale_heads):
            per_level.append(head(features[i]))
        x = per_level[0]
        for i, add in enumerate(self.adds):
            x = add.add(x, per_level[i + 1])
        return self.predictor(x), x

    def fuse_model(self, is_qat: bool) -> None:
        for m in self.modules():
            if isinstance(m, ConvBlock):
                m.fuse_model(is_qat)
