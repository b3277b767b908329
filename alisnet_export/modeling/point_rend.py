"""PointRend for semantic segmentation (Kirillov et al. 2020), detectron2 ``projects/PointRend`` semantics.

Shape shorthand used below:
    N: batch size            C: channels of the fine-grained features
    K: number of classes     P: number of points
    H, W: height and width of the map being refined

Points are ``(x, y)`` in ``[0, 1] x [0, 1]`` image-normalised coordinates; ``point_sample`` maps them
to ``grid_sample``'s ``[-1, 1]`` with ``align_corners=False``, so ``(0.5 / W, 0.5 / H)`` is the centre
of the top-left cell of a W x H grid at any resolution.

Export notes (see docs/design.md section 4.3): on ``torch.export`` paths the number of refined points is
the constant ``subdivision_num_points`` with ``torch._check(H * W >= N)`` (``min`` becomes ``sym_min``,
which ExecuTorch rejects); cell coordinates come from the flat index in float with ``floor``
(``remainder`` on indices breaks the dynamo ONNX exporter).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization import DeQuantStub, QuantStub
from torch.nn import functional as F

__all__ = [
    "min_input_pixels",
    "point_sample",
    "calculate_uncertainty",
    "num_points_to_refine",
    "get_uncertain_point_coords_on_grid",
    "get_uncertain_point_coords_with_randomness",
    "ambiguous_selection",
    "influenced_by",
    "StandardPointHead",
    "PointRendSemSeg",
]


def min_input_pixels(config) -> int:
    """Smallest ``H * W`` of the network input that an *exported* PointRend model accepts.

    Exported, every subdivision step refines exactly ``subdivision_num_points`` cells (top-k with a
    constant k, ``torch._check(H * W >= N)``); the first step refines the coarse logits (stride
    ``common_stride``) upsampled 2x, i.e. ``H * W / (common_stride / 2) ** 2`` cells. 0 when PointRend is
    off or has no subdivision step. ``config``: a :class:`~alisnet_export.config.ModelConfig`.
    """
    pr = config.point_rend
    if not pr.enabled or pr.subdivision_steps == 0:
        return 0
    return pr.subdivision_num_points * config.common_stride ** 2 // 4  # common_stride is 2, 4 or 8: exact


def point_sample(input: Tensor, point_coords: Tensor, mode: str = "bilinear") -> Tensor:
    """Sample ``input`` (N, C, H, W) at ``point_coords`` (N, P, 2) in [0, 1]; returns (N, C, P)."""
    grid = point_coords.unsqueeze(2) * 2.0 - 1.0
    return F.grid_sample(input, grid, mode=mode, padding_mode="zeros", align_corners=False).squeeze(3)


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty = -(top1 - top2 logit) along dim 1: (N, K, ...) -> (N, 1, ...). Highest is least sure."""
    top2 = torch.topk(logits, k=2, dim=1).values
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def num_points_to_refine(num_cells: int, num_points: int) -> int:
    """``min(H * W, N)`` in eager and TorchScript; the constant ``N`` with a runtime check when exporting."""
    if torch.jit.is_scripting():
        return min(num_cells, num_points)
    if torch.compiler.is_exporting():
        # exporters validate the input-size bounds against this before exporting (TorchScript
        # compiles this branch too, so no message callback here)
        torch._check(num_cells >= num_points)
        return num_points
    return min(num_cells, num_points)


def get_uncertain_point_coords_on_grid(uncertainty_map: Tensor, num_points: int) -> tuple[Tensor, Tensor]:
    """The ``num_points`` most uncertain cells of ``uncertainty_map`` (N, 1, H, W).

    Returns ``(point_indices (N, P) flat indices into H * W, point_coords (N, P, 2) cell centres)``.
    """
    n, _, h, w = uncertainty_map.shape
    k = num_points_to_refine(h * w, num_points)
    point_indices = torch.topk(uncertainty_map.reshape(n, h * w), k=k, dim=1).indices
    flat = point_indices.to(torch.float32)
    row = torch.floor((flat + 0.5) / w)  # exact: flat < 2**24 for any image this network takes
    col = flat - row * w
    point_coords = torch.stack([(col + 0.5) / w, (row + 0.5) / h], dim=2)
    return point_indices, point_coords


def ambiguous_selection(uncertainty: Tensor, k: int, margin: float, unknown: Tensor) -> Tensor:
    """Cells whose top-``k`` selection another computation of ``uncertainty`` could decide differently.

    ``uncertainty`` (M,) is this computation's map (flattened), ``unknown`` (M,) bool marks cells whose
    value another computation may have anywhere, and every other cell's value may differ by up to
    ``margin``. A cell is ambiguous when it is unknown, or when it is in the top ``k`` under one such
    perturbation and out of it under another; ties count as ambiguous (topk breaks them by
    implementation-defined order). Returns (M,) bool.
    """
    m = uncertainty.numel()
    u = uncertainty.double()
    two = 2.0 * margin
    everything = torch.sort(u).values
    known_sorted = torch.sort(u[~unknown]).values
    unknown_sorted = torch.sort(u[unknown]).values
    # p lowered by margin, every known cell raised by margin, every unknown cell set high: the cells
    # at or above p (ties count against p) are the known ones >= u_p - 2 margin and all unknown ones
    at_or_above = m - torch.searchsorted(everything, u - two, right=False) - 1  # minus p itself
    unknown_below = torch.searchsorted(unknown_sorted, u - two, right=False)
    can_be_dropped = at_or_above + unknown_below >= k
    # p raised by margin, every known cell lowered by margin, every unknown cell set low (ties favour p)
    known_above_high = known_sorted.numel() - torch.searchsorted(known_sorted, u + two, right=True)
    can_be_picked = known_above_high < k
    return unknown | (can_be_dropped & can_be_picked)


def influenced_by(cells: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) bool: the pixels of a bilinear resize (``align_corners=False``) of an (h, w) map to
    ``size`` that take a nonzero weight from a cell marked in ``cells`` (h, w) bool."""
    spread = F.interpolate(cells[None, None].float(), size=size, mode="bilinear", align_corners=False)
    return spread[0, 0] > 0


def get_uncertain_point_coords_with_randomness(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training-time point selection (PointRend paper, section 3.2).

    Draw ``oversample_ratio * num_points`` uniform points, keep the ``importance_sample_ratio``
    fraction with the highest uncertainty of the coarse prediction, fill the rest uniformly.
    ``coarse_logits`` (N, K, H, W) -> point coords (N, num_points, 2).
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError("need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1")
    n = coarse_logits.shape[0]
    device = coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=device, generator=generator)
    uncertainties = uncertainty_func(point_sample(coarse_logits, coords))[:, 0, :]
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = torch.topk(uncertainties, k=num_uncertain, dim=1).indices
    coords = torch.gather(coords, 1, idx.unsqueeze(2).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(n, num_random, 2, device=device, generator=generator)], dim=1)
    return coords


class _PointFC(nn.Module):
    """One 1x1 Conv1d + ReLU of the point MLP, followed by re-appending the coarse prediction."""

    def __init__(self, in_channels: int, out_channels: int, append_coarse: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 1)
        self.relu = nn.ReLU()
        self.append_coarse = append_coarse
        self.cat = FloatFunctional()
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, coarse: Tensor) -> Tensor:
        x = self.relu(self.conv(x))
        if self.append_coarse:
            x = self.cat.cat([x, coarse], dim=1)
        return x


class StandardPointHead(nn.Module):
    """detectron2's ``StandardPointHead``: an MLP of 1x1 Conv1d over point features.

    Input: fine-grained features (N, C, P) and coarse logits (N, K, P) at the same points.
    Output: refined logits (N, K, P). The quant/dequant stubs are identities in float; eager
    quantization may run this MLP in int8 (the point geometry around it stays float).
    """

    def __init__(self, in_channels: int, num_classes: int, *, fc_dim: int, num_fc: int, coarse_pred_each_layer: bool) -> None:
        super().__init__()
        self.quant_fine = QuantStub()
        self.quant_coarse = QuantStub()
        self.cat = FloatFunctional()
        layers = []
        dim_in = in_channels + num_classes
        for _ in range(num_fc):
            layers.append(_PointFC(dim_in, fc_dim, coarse_pred_each_layer))
            dim_in = fc_dim + (num_classes if coarse_pred_each_layer else 0)
        self.mlp = nn.ModuleList(layers)
        self.predictor = nn.Conv1d(dim_in, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)
        self.dequant = DeQuantStub()

    def forward(self, fine_grained_features: Tensor, coarse_features: Tensor) -> Tensor:
        fine = self.quant_fine(fine_grained_features)
        coarse = self.quant_coarse(coarse_features)
        x = self.cat.cat([fine, coarse], dim=1)
        for layer in self.mlp:
            x = layer(x, coarse)
        return self.dequant(self.predictor(x))

    def fuse_model(self, is_qat: bool) -> None:
        fuse = torch.ao.quantization.fuse_modules_qat if is_qat else torch.ao.quantization.fuse_modules
        for layer in self.mlp:
            fuse(layer, ["conv", "relu"], inplace=True)


class PointRendSemSeg(nn.Module):
    """Subdivision inference and point-loss training around a :class:`StandardPointHead`."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        subdivision_steps: int,
        subdivision_num_points: int,
        train_num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        fc_dim: int,
        num_fc: int,
        coarse_pred_each_layer: bool,
    ) -> None:
        super().__init__()
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.point_head = StandardPointHead(
            in_channels, num_classes, fc_dim=fc_dim, num_fc=num_fc, coarse_pred_each_layer=coarse_pred_each_layer
        )

    def forward(self, coarse_logits: Tensor, features: Tensor) -> Tensor:
        """Refine ``coarse_logits`` (N, K, h, w) to (N, K, h * 2**steps, w * 2**steps).

        ``features`` (N, C, h, w) are the fine-grained features sampled at each refined point.
        """
        logits = coarse_logits
        for _ in range(self.subdivision_steps):
            logits, _ = self._subdivide(logits, coarse_logits, features)
        return logits

    def _subdivide(self, logits: Tensor, coarse_logits: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """One subdivision step: upsample 2x, refine the most uncertain cells with the point head.

        Returns the refined logits and the uncertainty map (N, 1, 2h, 2w) that chose the cells.
        """
        logits = F.interpolate(logits, scale_factor=2.0, mode="bilinear", align_corners=False)
        n, k, h, w = logits.shape
        uncertainty = calculate_uncertainty(logits)
        point_indices, point_coords = get_uncertain_point_coords_on_grid(uncertainty, self.subdivision_num_points)
        point_logits = self.point_head(point_sample(features, point_coords), point_sample(coarse_logits, point_coords))
        logits = (
            logits.reshape(n, k, h * w)
            .scatter(2, point_indices.unsqueeze(1).expand(-1, k, -1), point_logits)
            .reshape(n, k, h, w)
        )
        return logits, uncertainty

    @torch.jit.unused
    def forward_with_tie_zone(self, coarse_logits: Tensor, features: Tensor, margin: float) -> tuple[Tensor, Tensor]:
        """:meth:`forward`'s logits, and where they (N, h', w') bool may legitimately differ from another
        float computation whose coarse logits and features agree with these to within ``margin``.

        Top-k point selection is discontinuous: a cell whose uncertainty is within ``2 * margin``
        (uncertainty is a difference of two logits) of the k-th largest can be refined by one runtime and
        not by the other, which changes its logit by the point head's correction (often 0.1-1). Such a
        cell, every cell whose upsampled value reads it in the next step, and every cell whose rank
        those can push across the k-th place, is in the zone. Everything outside it must agree to within
        ``margin``; the zone itself holds the few pixels near PointRend's selection threshold.
        """
        logits = coarse_logits
        zones = torch.zeros((coarse_logits.shape[0], *coarse_logits.shape[-2:]), dtype=torch.bool,
                            device=coarse_logits.device)
        for _ in range(self.subdivision_steps):
            logits, uncertainty = self._subdivide(logits, coarse_logits, features)
            h, w = uncertainty.shape[-2:]
            count = num_points_to_refine(h * w, self.subdivision_num_points)
            zones = torch.stack([
                ambiguous_selection(u.reshape(h * w), count, margin, influenced_by(z, (h, w)).reshape(h * w)).reshape(h, w)
                for u, z in zip(uncertainty[:, 0], zones)
            ])
        return logits, zones

    @torch.jit.unused
    def point_loss(self, coarse_logits: Tensor, features: Tensor, targets: Tensor, ignore_index: int = 255) -> Tensor:
        """Cross-entropy of the point head on training points; ``targets`` (N, H, W) int64 class ids."""
        with torch.no_grad():
            point_coords = get_uncertain_point_coords_with_randomness(
                coarse_logits, calculate_uncertainty, self.train_num_points,
                self.oversample_ratio, self.importance_sample_ratio,
            )
        point_logits = self.point_head(point_sample(features, point_coords), point_sample(coarse_logits, point_coords))
        point_targets = point_sample(targets.unsqueeze(1).to(torch.float32), point_coords, mode="nearest")
        return F.cross_entropy(point_logits, point_targets.squeeze(1).to(torch.long), ignore_index=ignore_index)
