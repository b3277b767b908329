"""The ALiSNet network and its paper variants (one class, configured by :class:`ModelConfig`).

    image (N, 3, H, W), normalised RGB, H and W multiples of 32
      -> backbone levels res1..res5 (strides 2..32)
      -> [FPN top-down path, baselines only]
      -> Semantic-FPN head: per-level ConvBlocks + 2x upsampling, summed at stride 4
      -> 1x1 coarse predictor: (N, K, H/4, W/4)
      -> PointRend subdivision (2 steps x 8192 points): (N, K, H, W) logits

Quantization boundaries (eager QNNPACK): ``quant`` at the input, ``dequant_*`` before PointRend,
whose point geometry (topk, grid_sample, scatter) stays float.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.ao.quantization import DeQuantStub, QuantStub
from torch.nn import functional as F

from ..config import ModelConfig
from .backbones import LEVEL_NAMES, build_backbone
from .heads import FPN, SemSegFPNHead
from .point_rend import PointRendSemSeg, influenced_by

__all__ = ["ALiSNet", "build_model", "IGNORE_INDEX"]

IGNORE_INDEX = 255


class ALiSNet(nn.Module):
    """Semantic FPN (+/- top-down) + PointRend on a mobile backbone. ``forward`` returns logits."""

    #: capability flags, segmentation_models_pytorch style; tests check every variant honours them
    is_torch_scriptable = True
    is_torch_exportable = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.quant = QuantStub()
        self.backbone = build_backbone(config.backbone)
        levels = [LEVEL_NAMES.index(f) for f in config.in_features]
        self.level_indices: list[int] = levels
        in_channels = [self.backbone.out_channels[i] for i in levels]
        in_strides = [self.backbone.strides[i] for i in levels]
        if config.common_stride not in in_strides:
            raise ValueError(f"config {config.name}: in_features must include the stride-{config.common_stride} level")
        self.fine_level: int = in_strides.index(config.common_stride)
        self.fpn: Optional[FPN] = FPN(in_channels, config.fpn_dim) if config.top_down else None
        head_in = [config.fpn_dim] * len(levels) if config.top_down else in_channels
        self.head = SemSegFPNHead(
            head_in, in_strides, conv_dims=config.conv_dims, common_stride=config.common_stride,
            num_classes=config.num_classes,
        )
        self.dequant_logits = DeQuantStub()
        self.dequant_features = DeQuantStub()
        pr = config.point_rend
        self.point_rend: Optional[PointRendSemSeg] = None
        if pr.enabled:
            self.point_rend = PointRendSemSeg(
                head_in[self.fine_level], config.num_classes,
                subdivision_steps=pr.subdivision_steps, subdivision_num_points=pr.subdivision_num_points,
                train_num_points=pr.train_num_points, oversample_ratio=pr.oversample_ratio,
                importance_sample_ratio=pr.importance_sample_ratio, fc_dim=pr.fc_dim, num_fc=pr.num_fc,
                coarse_pred_each_layer=pr.coarse_pred_each_layer,
            )
        self.common_stride: int = config.common_stride

    def forward_coarse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Coarse logits (N, K, H/s, W/s) and the fine-grained stride-s features PointRend samples."""
        x = self.quant(x)
        levels = self.backbone(x)
        feats: list[Tensor] = []
        for i in self.level_indices:
            feats.append(levels[i])
        if self.fpn is not None:
            feats = self.fpn(feats)
        coarse_logits, _ = self.head(feats)
        return self.dequant_logits(coarse_logits), self.dequant_features(feats[self.fine_level])

    def forward(self, x: Tensor) -> Tensor:
        """Per-pixel class logits (N, K, H, W) for a normalised image batch (N, 3, H, W)."""
        coarse_logits, features = self.forward_coarse(x)
        return self.forward_refine(coarse_logits, features, x.shape[-2], x.shape[-1])

    def forward_refine(self, coarse_logits: Tensor, features: Tensor, height: int, width: int) -> Tensor:
        """PointRend (or plain upsampling) from :meth:`forward_coarse`'s outputs to ``height x width`` logits.

        Split from :meth:`forward` so PT2E can quantize the coarse part alone (the .pte exporter).
        """
        if self.point_rend is None:
            return F.interpolate(coarse_logits, scale_factor=float(self.common_stride), mode="bilinear", align_corners=False)
        return self._to_input_size(self.point_rend(coarse_logits, features), height, width)

    def _to_input_size(self, logits: Tensor, height: int, width: int) -> Tensor:
        """PointRend refines to stride common_stride / 2**steps; finish at input resolution."""
        if logits.shape[-1] != width:
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits

    @torch.jit.unused
    def forward_with_tie_zone(self, x: Tensor, margin: float) -> tuple[Tensor, Tensor]:
        """:meth:`forward`'s logits and the (N, H, W) bool pixels where PointRend's top-k point selection
        makes them depend on float rounding, for a computation that agrees with this one to within
        ``margin`` before the selection (see :meth:`PointRendSemSeg.forward_with_tie_zone`). The zone is
        empty without PointRend.
        """
        height, width = int(x.shape[-2]), int(x.shape[-1])
        coarse_logits, features = self.forward_coarse(x)
        if self.point_rend is None:
            zone = torch.zeros((x.shape[0], height, width), dtype=torch.bool, device=x.device)
            return self.forward_refine(coarse_logits, features, height, width), zone
        logits, zone = self.point_rend.forward_with_tie_zone(coarse_logits, features, margin)
        if zone.shape[-1] != width:
            zone = torch.stack([influenced_by(z, (height, width)) for z in zone])
        return self._to_input_size(logits, height, width), zone

    @torch.jit.unused
    def tie_zone(self, x: Tensor, margin: float) -> Tensor:
        """The zone of :meth:`forward_with_tie_zone` alone."""
        return self.forward_with_tie_zone(x, margin)[1]

    @torch.jit.unused
    def losses(self, images: Tensor, targets: Tensor, *, point_loss_weight: float = 1.0) -> dict[str, Tensor]:
        """The paper's training loss: cross-entropy of the upsampled coarse logits + PointRend point loss.

        ``targets`` (N, H, W) int64 with classes ``0..K-1`` and ``IGNORE_INDEX`` for "don't care".
        """
        coarse_logits, features = self.forward_coarse(images)
        upsampled = F.interpolate(coarse_logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        losses = {"loss_sem_seg": F.cross_entropy(upsampled, targets, ignore_index=IGNORE_INDEX)}
        if self.point_rend is not None:
            losses["loss_sem_seg_point"] = point_loss_weight * self.point_rend.point_loss(
                coarse_logits, features, targets, IGNORE_INDEX
            )
        return losses

    def fuse_model(self, is_qat: bool) -> None:
        """Fuse Conv-BN(-ReLU) and the point MLP's Conv1d-ReLU in place, for eager quantization."""
        self.backbone.fuse_model(is_qat)
        self.head.fuse_model(is_qat)
        if self.point_rend is not None:
            self.point_rend.point_head.fuse_model(is_qat)


def build_model(config: ModelConfig) -> ALiSNet:
    """A randomly initialised :class:`ALiSNet` for ``config`` (in eval mode)."""
    return ALiSNet(config).eval()
