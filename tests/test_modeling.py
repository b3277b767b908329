"""The network: shapes, PointRend semantics, scripting and torch.export equality (smp-style capability tests)."""

import pytest
import torch
from torch.nn import functional as F

from alisnet_export.config import load_config
from alisnet_export.modeling import (
    ambiguous_selection,
    build_model,
    calculate_uncertainty,
    get_uncertain_point_coords_on_grid,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)


@pytest.mark.parametrize("hw", [(64, 64), (128, 96), (256, 192), (320, 256)])
def test_output_is_two_class_logits_at_input_resolution(random_model, hw):
    with torch.inference_mode():
        out = random_model(torch.randn(1, 3, *hw))
    assert out.shape == (1, 2, *hw)
    assert torch.isfinite(out).all()


def test_no_pointrend_ablation_upsamples_coarse_logits(mnasnet_config):
    model = build_model(mnasnet_config.with_pointrend(False))
    assert model.point_rend is None
    x = torch.randn(1, 3, 128, 96)
    with torch.inference_mode():
        coarse, _ = model.forward_coarse(x)
        out = model(x)
    assert coarse.shape == (1, 2, 32, 24)
    torch.testing.assert_close(out, F.interpolate(coarse, scale_factor=4.0, mode="bilinear", align_corners=False))


def test_coarse_head_is_stride_4_and_sums_levels(random_model):
    with torch.inference_mode():
        coarse, fine = random_model.forward_coarse(torch.randn(2, 3, 256, 128))
    assert coarse.shape == (2, 2, 64, 32)
    assert fine.shape[-2:] == (64, 32)  # the stride-4 level PointRend samples
    assert len(random_model.head.scale_heads) == 4  # res2..res5, no top-down path
    assert random_model.fpn is None


def test_grid_points_are_cell_centres_of_the_most_uncertain_cells():
    torch.manual_seed(1)
    u = torch.randn(2, 1, 7, 5)
    idx, coords = get_uncertain_point_coords_on_grid(u, 6)
    expected = torch.topk(u.view(2, 35), 6).indices
    assert torch.equal(idx, expected)
    assert torch.allclose(coords[..., 0], ((expected % 5).float() + 0.5) / 5)
    assert torch.allclose(coords[..., 1], ((expected // 5).float() + 0.5) / 7)
    # min(H * W, N): asking for more points than cells returns every cell
    idx_all, _ = get_uncertain_point_coords_on_grid(u, 1000)
    assert idx_all.shape == (2, 35)


def test_point_sample_at_cell_centres_reads_the_cell_value():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    idx, coords = get_uncertain_point_coords_on_grid(torch.rand(1, 1, 3, 4), 12)
    assert torch.allclose(point_sample(x, coords)[0, 0], idx[0].float(), atol=1e-5)


def test_uncertainty_is_negative_margin_of_top_two_logits():
    logits = torch.tensor([[[3.0], [1.0]], [[0.0], [0.5]]]).view(2, 2, 1)
    assert torch.allclose(calculate_uncertainty(logits).flatten(), torch.tensor([-2.0, -0.5]))


def test_training_points_oversample_then_keep_most_uncertain():
    torch.manual_seed(0)
    # left half certain, right half maximally uncertain (equal logits)
    logits = torch.zeros(1, 2, 32, 32)
    logits[:, 0, :, :16] = 10.0
    coords = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 400, 3.0, 0.75)
    assert coords.shape == (1, 400, 2)
    importance = coords[0, :300, 0]
    assert (importance > 0.5).float().mean() > 0.95  # the importance-sampled 75% lie in the uncertain half
    random_part = coords[0, 300:, 0]
    assert 0.2 < (random_part > 0.5).float().mean() < 0.8


def test_pointrend_changes_only_the_refined_points(random_model):
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        coarse, _ = random_model.forward_coarse(x)
        out = random_model(x)
    up = F.interpolate(F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=False),
                       scale_factor=2.0, mode="bilinear", align_corners=False)
    changed = (out - up).abs().amax(1) > 1e-6
    assert changed.any()
    # at 128x128 the second step refines min(128*128, 8192) = 8192 cells: at most half the pixels
    assert changed.sum() <= 128 * 128


def test_losses_are_the_papers_coarse_plus_point_loss(random_model):
    model = build_model(random_model.config)
    model.load_state_dict(random_model.state_dict())
    model.train()
    images = torch.randn(2, 3, 128, 96)
    targets = torch.zeros(2, 128, 96, dtype=torch.long)
    targets[:, 30:100, 20:70] = 1
    targets[:, :4] = 255  # ignored
    losses = model.losses(images, targets)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_point"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.point_rend.point_head.predictor.weight.grad.abs().sum() > 0
    assert model.backbone.body[0].weight.grad.abs().sum() > 0


CAPABILITY_VARIANTS = ["alisnet_mnasnet", "alisnet_mobilenetv2", "mobilenetv3_fpn_pointrend"]


@pytest.mark.parametrize("name", CAPABILITY_VARIANTS)
def test_scripted_model_matches_eager_at_two_sizes(name):
    torch.manual_seed(0)
    model = build_model(load_config(name))
    assert model.is_torch_scriptable
    scripted = torch.jit.script(model)
    for hw in [(256, 192), (320, 256)]:
        x = torch.randn(1, 3, *hw)
        with torch.inference_mode():
            torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", CAPABILITY_VARIANTS)
def test_exported_program_with_dynamic_hw_matches_eager_at_two_sizes(name):
    torch.manual_seed(0)
    model = build_model(load_config(name))
    assert model.is_torch_exportable
    h, w = torch.export.Dim("h", min=4, max=64), torch.export.Dim("w", min=4, max=64)
    ep = torch.export.export(model, (torch.randn(1, 3, 256, 192),), dynamic_shapes={"x": {2: 32 * h, 3: 32 * w}})
    exported = ep.module()
    for hw in [(256, 192), (320, 256)]:
        x = torch.randn(1, 3, *hw)
        with torch.inference_mode():
            torch.testing.assert_close(exported(x), model(x), rtol=0, atol=1e-5)


def test_resnext_baseline_builds_with_detectron2_scale_parameters():
    with torch.device("meta"):
        from alisnet_export.modeling.alisnet import ALiSNet

        model = ALiSNet(load_config("resnext101_fpn_pointrend"))
    params = sum(p.numel() for p in model.parameters())
    assert 85e6 < params < 95e6  # ResNeXt101-32x8d body (86.7 M) + FPN + head + point head


def test_ambiguous_selection_marks_near_ties_and_unknown_cells():
    u = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    none = torch.zeros(5, dtype=torch.bool)
    assert not ambiguous_selection(u, 2, 0.1, none).any()  # gaps of 1 >> 2 * 0.1
    assert ambiguous_selection(u, 2, 0.6, none).tolist() == [False, True, True, False, False]  # 4 vs 3 may swap
    # exact ties at the k-th place: topk breaks them in an implementation-defined order
    tied = ambiguous_selection(torch.tensor([1.0, 1.0, 1.0, 0.0]), 2, 0.0, torch.zeros(4, dtype=torch.bool))
    assert tied.tolist() == [True, True, True, False]
    # an unknown cell may rise above 4 (pushing it out of the top 2) but not above 5
    unknown = torch.tensor([False, False, False, False, True])
    assert ambiguous_selection(u, 2, 0.1, unknown).tolist() == [False, True, False, False, True]


def test_perturbed_top_k_differs_only_in_ambiguous_cells():
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        u = torch.randn(2000, generator=gen).round(decimals=2)  # plenty of exact ties
        unknown = torch.rand(2000, generator=gen) < 0.01
        margin, k = 0.004, 300
        zone = ambiguous_selection(u, k, margin, unknown)
        v = u + (torch.rand(2000, generator=gen) * 2 - 1) * margin
        v[unknown] = torch.randn(int(unknown.sum()), generator=gen) * 3
        picked = torch.zeros(2000, dtype=torch.bool)
        picked[torch.topk(u, k).indices] = True
        repicked = torch.zeros(2000, dtype=torch.bool)
        repicked[torch.topk(v, k).indices] = True
        assert not ((picked != repicked) & ~zone).any(), trial
        assert zone.sum() < 200  # the zone is the neighbourhood of the threshold, not everything


def test_tie_zone_holds_every_pointrend_flip_of_a_perturbed_computation():
    """Coarse logits off by up to margin / 2: every pixel where PointRend refines differently lies in the zone."""
    from alisnet_export.zoo import fixture_checkpoint
    from alisnet_export.checkpoint import load_checkpoint

    loaded = load_checkpoint(fixture_checkpoint().path)
    model = loaded.build_model()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 256, 192, generator=gen)
    margin = 0.02  # large enough that a few decisions flip in a handful of trials
    with torch.inference_mode():
        coarse, features = model.forward_coarse(x)
        logits, zones = model.forward_with_tie_zone(x, margin)
        zone = zones[0]
        ref = model.forward_refine(coarse, features, 256, 192)
        assert torch.equal(logits, ref) and torch.equal(zone, model.tie_zone(x, margin)[0])  # the same pass as forward
        flips = 0
        for _ in range(5):
            noise = (torch.rand(coarse.shape, generator=gen) * 2 - 1) * margin / 2
            out = model.forward_refine(coarse + noise, features, 256, 192)
            flipped = (out - ref).abs().amax(1)[0] > 0.05  # a refined-vs-not decision changes a logit by ~0.1-1
            flips += int(flipped.sum())
            assert not (flipped & ~zone).any()
    assert flips > 0, "the perturbation never changed a refinement decision: the test checks nothing"
    assert 0 < zone.sum() < 0.25 * zone.numel()  # 12% at this coarse margin; ~0.04% at 1e-4 on photos
