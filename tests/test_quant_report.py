"""Quantization debugger (`quant-report`), mixed precision (`ptl --keep-float`) and the QNNPACK engine
requirement of int8 .ptl artifacts. Small inputs (128 px) on the embedded demo checkpoint."""

import json

import numpy as np
import pytest
import torch

from alisnet_export.parity import Thresholds, default_thresholds, uncertain_fraction, uncertainty_note
from alisnet_export.exporters.ptl import lite_size_bytes
from alisnet_export.quantize import debug, eager, keep_float, mixed_precision

H = 128


def test_uncertain_fraction_counts_the_unsure_share_of_the_float_mask():
    logits = np.zeros((1, 2, 4, 4), np.float32)
    logits[0, 1, :2] = 3.0  # 8 confident person pixels
    logits[0, 1, 2, :2] = 0.5  # 2 unsure person pixels
    logits[0, 1, 3, 0] = -0.5  # 1 unsure background pixel
    fraction, where = uncertain_fraction(logits)
    assert fraction == pytest.approx(2 / 10)
    assert where.sum() == 2 + 1 + 5  # |margin| < 1 also where the logits are tied at 0
    assert uncertainty_note({"a": 0.1}) == ""
    assert "no int8 model can match" in uncertainty_note({"a": 0.1, "b": 0.7}) and "70%" in uncertainty_note({"b": 0.7})


@pytest.fixture(scope="module")
def demo():
    from alisnet_export.checkpoint import load_checkpoint
    from alisnet_export.quant_report import build_ptl_int8
    from alisnet_export.samples import calibration_inputs, image_paths, parity_inputs
    from alisnet_export.zoo import real_photos_checkpoint

    loaded = load_checkpoint(real_photos_checkpoint().path, None)  # the MobileNetV2 demo: layer names below are its
    reference = loaded.build_model()
    paths = image_paths(None)
    # 256 px: at 128 px the demo's float masks are too unsure for int8 IoU to say anything about one layer
    inputs = list(parity_inputs(paths, loaded.config, height=2 * H, reference=reference, person_crops=False))
    models = build_ptl_int8(reference, calibration_inputs(paths, loaded.config, height=2 * H, count=4))
    xs = [torch.from_numpy(x) for _, x in inputs]
    with torch.no_grad():
        logits = [(name, reference(x).numpy()) for (name, _), x in zip(inputs, xs)]
    return loaded, reference, models, xs, logits


BROKEN = "backbone.body.4.conv.2"  # a 1x1 projection conv early in the backbone (stride 8)


def _broken(converted, name=BROKEN, *, output_scale=False):
    """A copy of ``converted`` with one layer broken: its int8 weight scales x50 (most weights round to 0:
    keeping the layer float repairs it), or its output scale x10 (a 10x coarser output grid, as from a
    bad calibration range: the report finds it, but a float layer still writes that grid)."""
    model = mixed_precision.keep_layers_float(converted, lambda n: None, [])  # a copy
    layer = model.get_submodule(name)
    if output_scale:
        layer.scale = float(layer.scale) * 10
        return model
    w = layer.weight()
    bad = torch.quantize_per_channel(w.dequantize(), w.q_per_channel_scales() * 50, w.q_per_channel_zero_points(),
                                     w.q_per_channel_axis(), torch.qint8)
    layer.set_weight_bias(bad, layer.bias())
    return model


def test_report_finds_a_layer_whose_output_scale_was_multiplied_by_10(demo):
    _, _, models, xs, _ = demo
    name = "head.scale_heads.1.0.conv"
    errors = debug.layer_errors(models.twin, _broken(models.converted, name, output_scale=True), xs)
    assert debug.worst_layers(errors, 1)[0].name == name


def test_layer_errors_cover_every_quantized_layer_in_graph_order(demo):
    _, _, models, xs, _ = demo
    errors = debug.layer_errors(models.twin, models.converted, xs)
    names = [e.name for e in errors]
    assert names[0] == "quant" and errors[0].kind == "quantize"
    assert BROKEN in names and "head.predictor" in names and names.index(BROKEN) < names.index("head.predictor")
    assert [e.order for e in errors] == sorted(e.order for e in errors)
    convs = [e for e in errors if e.kind == "conv"]
    assert all(e.local_sqnr_db is not None and e.input_scale is not None for e in convs)
    assert any(e.kind == "add" for e in errors)  # the head's int8 adds are hooked too
    first = next(e for e in convs)
    assert 15 < first.sqnr_db < 80 and 0 < first.rel_l2 < 0.2  # the first conv of an int8 model is close to float


def test_report_finds_a_deliberately_broken_layer_and_auto_keeps_it_float_first(demo):
    loaded, _, models, xs, logits = demo
    broken = _broken(models.converted)
    errors = debug.layer_errors(models.twin, broken, xs)
    worst = debug.worst_layers(errors, 3)
    assert worst[0].name == BROKEN
    healthy = {e.name: e for e in debug.layer_errors(models.twin, models.converted, xs)}
    assert worst[0].local_sqnr_db < healthy[BROKEN].local_sqnr_db - 10  # ~20 dB lost
    baseline = debug.evaluate_model(broken, logits, xs, name="broken")
    attribution = debug.attribute_layers(models.twin, broken, models.twin, worst, logits, xs, baseline=baseline)
    best = max(attribution, key=lambda a: a.iou_recovered)
    assert best.name == BROKEN and best.iou_recovered > 0.005, attribution
    only = next(a for a in attribution if a.name == BROKEN)
    assert only.only_int8_mean_iou < 0.99  # alone in int8 it already costs IoU

    strict = Thresholds(min_mean_iou=0.9999)  # unreachable: the search runs until the budget stops it
    model, result, record = keep_float.auto_keep_float(
        models.twin, broken, models.twin, logits, xs, thresholds=strict, variant=loaded.config.name, size_bytes=lite_size_bytes,
        candidates=3)
    assert result.steps[0].added is None and result.steps[1].added == BROKEN
    assert record["layers"][0] == BROKEN and BROKEN in record["why"] and record["steps"][0]["size_bytes"] > 0
    assert record["max_size_bytes"] == record["int8_size_bytes"] + 1_500_000  # default budget for non-MnasNet
    assert isinstance(model.get_submodule(BROKEN), mixed_precision.FloatIsland)
    assert result.steps[1].mean_iou > result.steps[0].mean_iou
    # the island model scripts for the lite interpreter like the all-int8 one
    assert lite_size_bytes(model) > lite_size_bytes(broken)


def test_only_layers_int8_and_keep_layers_float_are_exact_at_the_extremes(demo):
    _, _, models, xs, _ = demo
    layers = mixed_precision.weighted_layers(models.converted)
    every = mixed_precision.keep_layers_float(models.converted, models.twin, layers)
    with torch.no_grad():
        twin_out, every_out = models.twin(xs[0]), every(xs[0])
    # every weighted layer float: only the adds/stubs stay int8, so logits are close to float
    assert (twin_out.argmax(1) == every_out.argmax(1)).float().mean() > 0.97
    with pytest.raises(ValueError, match="not a quantized conv"):
        mixed_precision.keep_layers_float(models.converted, models.twin, ["head.adds.0"])
    with pytest.raises(KeyError):
        mixed_precision.keep_layers_float(models.converted, models.twin, ["no.such.layer"])


def test_wrong_quantized_engine_gives_a_wrong_int8_ptl(demo, tmp_path):
    """An int8 .ptl is QNNPACK-calibrated (full 0..255 activations, no reduce_range). Loaded on x86 with
    torch's default engine (x86/fbgemm) it computes something else. Do not 'fix' the engine choice away:
    every runner selects QNNPACK, and so must any desktop loader (README, 'using an artifact from Python')."""
    from torch.jit.mobile import _load_for_lite_interpreter

    from alisnet_export.exporters.ptl import script_for_lite

    engines = torch.backends.quantized.supported_engines
    wrong = "x86" if "x86" in engines else ("fbgemm" if "fbgemm" in engines else None)
    if wrong is None:
        pytest.skip(f"no x86/fbgemm engine in this torch build ({engines})")
    _, _, models, xs, logits = demo
    path = tmp_path / "int8.ptl"
    script_for_lite(models.converted)._save_for_lite_interpreter(str(path))
    previous = torch.backends.quantized.engine
    outputs = {}
    try:
        for engine in ("qnnpack", wrong):
            torch.backends.quantized.engine = engine
            module = _load_for_lite_interpreter(str(path))  # weights are packed for the engine at load time
            outputs[engine] = module(xs[0]).detach().numpy()
    finally:
        torch.backends.quantized.engine = previous
    from alisnet_export.parity import compare_logits

    right = compare_logits("right", logits[0][1], outputs["qnnpack"])
    bad = compare_logits("wrong", logits[0][1], outputs[wrong])
    # measured at 256 px: max |dlogit| between the engines ~1.7, IoU vs float 0.973 (qnnpack) vs 0.965;
    # on other photos the wrong engine loses the person almost entirely (issue 15: 0.04% vs 35% person area)
    assert np.abs(outputs["qnnpack"] - outputs[wrong]).max() > 0.5
    assert right.mask_iou > bad.mask_iou, (right.mask_iou, bad.mask_iou)


def test_quant_report_command_writes_json_html_and_pictures(run_cli, tmp_path):
    out = tmp_path / "qr"
    code, stdout, err = run_cli("quant-report", "--height", H, "--top-k", "2", "--no-person-crops", "--images", "testbed:heldout:2",
                                "-o", out, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["ok"] and len(result["attribution"]) == 2 and result["int8"]["mean_iou"] > 0
    report = json.loads((out / "report.json").read_text())
    ptl = report["targets"]["ptl"]
    assert ptl["layers"][0]["name"] == "quant" and ptl["worst_layers"] == [a["name"] for a in ptl["attribution"]] or \
        set(ptl["worst_layers"]) == {a["name"] for a in ptl["attribution"]}
    fractions = report["uncertainty"]["float_uncertain_fraction"]
    assert set(fractions) == set(report["images"]) and all(0 <= v <= 1 for v in fractions.values())
    for name in ("report.html", "layers.png", *report["uncertainty"]["pictures"].values()):
        assert (out / name).stat().st_size > 0
    assert "layers.png" in (out / "report.html").read_text()
    assert not list(out.glob("*.partial"))
    code, _, err = run_cli("quant-report", "--height", H, "-o", out)  # exists: refused without --force
    assert code == 3 and "--force" in err
    code, _, err = run_cli("quant-report", "--height", H, "--targets", "ptl,onnx", "-o", tmp_path / "x")
    assert code == 2 and "not implemented" in err
