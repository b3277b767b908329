"""Activation-range equalization before int8: the float function is kept, channel ranges even out."""

import pytest
import torch
from torch import nn

from alisnet_export.checkpoint import load_checkpoint
from alisnet_export.quantize import eager
from alisnet_export.quantize.equalize import equalize_activations, equalize_for_quantization, find_chains
from alisnet_export.zoo import default_checkpoint


@pytest.fixture(scope="module")
def demo():
    return load_checkpoint(default_checkpoint().path).build_model().eval()


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(1, 3, 128, 96, generator=gen) for _ in range(2)]


def test_equalized_model_computes_the_same_function_with_even_ranges(demo, images):
    before = {k: v.clone() for k, v in demo.state_dict().items()}
    equalized, pairs = equalize_activations(demo, images)
    assert all(torch.equal(v, demo.state_dict()[k]) for k, v in before.items())  # the input model is untouched
    assert len(pairs) > 10 and any(p.depthwise for p in pairs) and any(not p.depthwise for p in pairs)
    for p in pairs:
        assert p.range_ratio_after <= p.range_ratio_before + 1e-6
    worst = max(p.range_ratio_before for p in pairs)
    assert max(p.range_ratio_after for p in pairs) < worst / 2
    with torch.no_grad():
        x = torch.randn(1, 3, 160, 128, generator=torch.Generator().manual_seed(1))  # not a calibration input
        for a, b in zip(demo.forward_coarse(x), equalized.forward_coarse(x)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_equalization_reduces_int8_error_on_photos(demo):
    """The point of it: post-training int8 of the equalized demo is closer to float on real photos (the
    coarse logits' relative error drops from 0.21 to 0.14 here; 0.23 to 0.09 at 1024 px). On noise
    images, whose channel statistics are not a photo's, it does not help: calibrate on photos."""
    from alisnet_export.samples import calibration_inputs, sample_image_paths

    photos = calibration_inputs(sample_image_paths(), load_checkpoint(default_checkpoint().path).config,
                                height=256, count=4)

    def coarse_error(model):
        prepared = eager.prepare(model, qat=False)
        eager.calibrate(prepared, photos)
        q = eager.convert(prepared)
        with torch.no_grad():
            ref, got = demo.forward_coarse(photos[0])[0], q.forward_coarse(photos[0])[0]
        return float((ref - got).norm() / ref.norm())

    equalized, info = equalize_for_quantization(demo, photos)
    assert info["applied"] and info["max_range_ratio_after"] < info["max_range_ratio_before"]
    assert coarse_error(equalized) < 0.8 * coarse_error(demo)
    unchanged, info = equalize_for_quantization(demo, photos, enabled=False)
    assert unchanged is demo and info == {"applied": False, "reason": "disabled (--no-equalize)"}


class _Shared(nn.Module):
    """conv-bn-relu whose ReLU output feeds two convs: rescaling it would change the second one's input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.a, self.b = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)
        self.bn2, self.relu2, self.c = nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        return self.c(self.relu2(self.bn2(self.a(y)))) + self.b(y).sum()


def test_chains_skip_a_relu_output_with_another_consumer():
    model = _Shared().eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.1, 5.0)
    chains = find_chains(model, torch.randn(1, 3, 8, 8))
    assert chains == [("bn2", "relu2", "c")]  # in place ReLU counted right; the shared one left alone
    equalized, pairs = equalize_activations(model, [torch.randn(1, 3, 8, 8)])
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), equalized(x), rtol=1e-5, atol=1e-5)
