"""Quantization debugger (`quant-report`, its ptl, pte and onnx sections), mixed precision (`ptl --keep-float`) and
the QNNPACK engine requirement of int8 .ptl artifacts. Small inputs (128-256 px) on the embedded demo checkpoint."""

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


class _Judged:
    """A parity verdict as the search sees one: ``summary()`` and ``passed``."""

    def __init__(self, iou, passed=False):
        self.iou, self.passed = iou, passed

    def summary(self):
        return {"mean_iou": self.iou, "min_iou": self.iou, "mean_boundary_px": 1 - self.iou}


def test_auto_search_keeps_mnasnet_within_the_papers_4_mb_and_drops_layers_that_hurt():
    """The search's own rules, on made-up measurements: ALiSNet-MnasNet's default budget is the paper's 4.0 MB,
    a layer that lowers the IoU with the others already float is dropped, and the next layer over budget stops it."""
    iou = {(): 0.95, ("a",): 0.96, ("a", "b"): 0.955, ("a", "c"): 0.97}
    size = {(): 3_600_000, ("a",): 3_800_000, ("a", "b"): 3_900_000, ("a", "c"): 3_990_000, ("a", "c", "d"): 4_050_000}
    errors = [debug.LayerError(order=i, name=n, kind="conv", keepable=True, sqnr_db=20.0 + i, rel_l2=0.1, max_abs=1.0,
                               calls=1, local_sqnr_db=20.0 + i) for i, n in enumerate("abcd")]
    alone = {"a": 0.96, "b": 0.952, "c": 0.951, "d": 0.9505}
    result, record = keep_float.auto_search(
        lambda layers: _Judged(alone[layers[0]] if len(layers) == 1 and layers[0] != "a" else iou[tuple(layers)]),
        lambda layers: size[tuple(layers)], lambda: errors, variant="alisnet_mnasnet", candidates=4)
    assert keep_float.default_max_size("alisnet_mnasnet", 3_600_000) == record["max_size_bytes"] == 4_000_000
    assert keep_float.default_max_size("alisnet_mobilenetv2", 3_600_000) == 5_100_000
    assert [s.added for s in result.steps] == [None, "a", "b", "c"]
    assert [s.accepted for s in result.steps] == [True, True, False, True]
    assert record["layers"] == ["a", "c"] and result.final.size_bytes <= 4_000_000
    assert "over the 4.00 MB budget" in record["stop_reason"] and "d" in record["stop_reason"]


def test_auto_search_over_budget_from_the_start_measures_no_candidate():
    """An all-int8 artifact already at or over the budget (the MnasNet testbed's .ptl is 4,012,045 B against the
    paper's 4.0 MB): keeping a layer float only adds bytes, so no candidate is ranked or measured."""
    evaluated = []

    def evaluate(layers):
        evaluated.append(tuple(layers))
        return _Judged(0.98)

    def layer_errors():
        raise AssertionError("no candidate should be ranked")

    result, record = keep_float.auto_search(evaluate, lambda layers: 4_012_045 + 90_000 * len(layers), layer_errors,
                                            variant="alisnet_mnasnet", candidates=4)
    assert evaluated == [()] and record["layers"] == [] and record["candidates"] == []
    assert [s.added for s in result.steps] == [None]
    assert "already 4.01 MB, not under the 4.00 MB budget" in record["stop_reason"]


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
    code, _, err = run_cli("quant-report", "--height", H, "--targets", "ptl,tflite", "-o", tmp_path / "x")
    assert code == 2 and "unknown tflite" in err


# --- pte and onnx: the same report from each stack's own tools (demo model, 256 px, one photo, 4 calibration images)


@pytest.fixture(scope="module")
def report_inputs():
    from alisnet_export.checkpoint import load_checkpoint
    from alisnet_export.quant_report import ReportInputs
    from alisnet_export.samples import calibration_inputs, image_paths, parity_inputs
    from alisnet_export.zoo import real_photos_checkpoint

    loaded = load_checkpoint(real_photos_checkpoint().path, None)
    reference = loaded.build_model()
    paths = image_paths(None)
    inputs = list(parity_inputs(paths[:1], loaded.config, height=2 * H, reference=reference, person_crops=False))
    return ReportInputs(loaded, reference, inputs, calibration_inputs(paths, loaded.config, height=2 * H, count=4))


def _check_section(section, target, float_names, *, top_k=2):
    """A target section with real content: every quantized conv in graph order under its float layer name, finite
    SQNRs, and attribution rows for the worst layers."""
    layers = section["layers"]
    assert section["target"] == target and len(layers) > 40
    assert [l["order"] for l in layers] == list(range(len(layers)))
    names = [l["name"] for l in layers]
    assert set(names) <= set(float_names) and len(set(names)) == len(names)
    assert names.index(BROKEN) < names.index("head.predictor")  # graph order: backbone before head
    assert all(l["local_sqnr_db"] is not None and 5 < l["local_sqnr_db"] < 80 for l in layers), layers
    coarse = [l for l in layers if not l["name"].startswith("point_rend.")]
    assert all(l["sqnr_db"] is not None and 5 < l["sqnr_db"] < 80 and 0 < l["rel_l2"] < 1 for l in coarse)
    assert len(section["worst_layers"]) == top_k == len(section["attribution"])
    ranked = sorted(layers, key=lambda l: l["local_sqnr_db"])[:top_k]
    assert section["worst_layers"] == [l["name"] for l in ranked]
    for a in section["attribution"]:
        assert a["name"] in section["worst_layers"]
        assert 0 < a["keep_float_mean_iou"] <= 1 and 0 < a["only_int8_mean_iou"] <= 1 and a["keep_float_boundary_px"] >= 0
        assert a["iou_recovered"] == pytest.approx(a["keep_float_mean_iou"] - section["int8"]["mean_iou"])
    assert 0.5 < section["int8"]["mean_iou"] <= 1 and len(section["per_image"]) == 1


@pytest.mark.slow
def test_onnx_section_from_qdq_loss_debug(report_inputs):
    from alisnet_export.quant_report import onnx_quant_report
    from alisnet_export.quantize.mixed_precision import float_layer_names

    section, baseline = onnx_quant_report(report_inputs, top_k=2)
    _check_section(section, "onnx", float_layer_names(report_inputs.reference))
    by_name = {l["name"]: l for l in section["layers"]}
    assert by_name["point_rend.point_head.predictor"]["calls"] == 2  # one Conv node per subdivision step
    assert len(by_name["point_rend.point_head.predictor"]["nodes"]) == 2
    assert all(25 < l["weight_sqnr_db"] < 70 for l in section["layers"])  # 8-bit per-channel weights: ~40-50 dB
    assert section["quantization"]["quantized_conv_nodes"] == sum(len(l["nodes"]) for l in section["layers"])
    assert baseline.masks and baseline.artifact == "onnx-int8"
    assert 0 < section["a16w8"]["mean_iou"] <= 1 and section["a16w8"]["mean_boundary_px"] >= 0


@pytest.fixture(scope="module")
def onnx_pair(report_inputs, tmp_path_factory):
    """The demo's float ONNX model and its QDQ model, made as the report makes them."""
    from alisnet_export.exporters.onnx import DEFAULT_OPSET, OnnxExporter, export_float_onnx, quantize_qdq

    folder = tmp_path_factory.mktemp("onnx-pair")
    job = report_inputs.job(OnnxExporter().bounds_for(report_inputs.loaded.config), lambda m: None)
    fitted = job.calibration_inputs()
    source, _ = report_inputs.quantization_source(job, fitted)
    export_float_onnx(job, folder / "float.onnx", opset=DEFAULT_OPSET, model=source)
    quantize_qdq(folder / "float.onnx", folder / "int8.onnx", fitted)
    return folder / "float.onnx", folder / "int8.onnx"


def _scale_qdq_weight(source, dest, node_name, factor=10):
    """``source`` (a QDQ model) written to ``dest`` with the int8 weight scale of Conv node ``node_name`` x ``factor``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    produced = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.name == node_name)
    weight_dq = produced[conv.input[1]]
    assert weight_dq.op_type == "DequantizeLinear"
    scale = next(i for i in model.graph.initializer if i.name == weight_dq.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * factor, scale.name))
    onnx.save(model, str(dest))


def _scale_pt2e_weight(converted, layer, factor=10):
    """The converted PT2E graph with the int8 weight scales of ``layer``'s conv x ``factor`` (in place)."""
    conv = next(n for n in converted.graph.nodes if str(n.target) == "aten.conv2d.default"
                and n.meta["nn_module_stack"] and list(n.meta["nn_module_stack"].values())[-1][0] == f"model.{layer}")
    scale = conv.args[1].args[1]  # dequantize_per_channel(weight, scale, ...): the weight's int8 scales
    getattr(converted, scale.target).mul_(factor)
    return converted


@pytest.mark.slow
def test_onnx_report_finds_a_layer_whose_weight_scale_was_multiplied_by_10(report_inputs, onnx_pair, tmp_path):
    import onnx

    from alisnet_export.quantize.ort_debug import conv_nodes_of_layers, onnx_layer_errors

    float_path, int8_path = onnx_pair
    (node_name,) = conv_nodes_of_layers(onnx.load(str(float_path)), report_inputs.reference, [BROKEN])[BROKEN]
    broken = tmp_path / "broken.onnx"
    _scale_qdq_weight(int8_path, broken, node_name)
    xs = [x for _, x in report_inputs.inputs]
    errors = onnx_layer_errors(float_path, broken, report_inputs.reference, xs)
    worst = debug.worst_layers(errors, 3)
    assert worst[0].name == BROKEN, [(e.name, e.local_sqnr_db) for e in worst]
    healthy = {e.name: e for e in onnx_layer_errors(float_path, int8_path, report_inputs.reference, xs)}
    assert worst[0].local_sqnr_db < healthy[BROKEN].local_sqnr_db - 20  # 10x weights: ~ -19 dB
    assert worst[0].weight_sqnr_db < 0 < healthy[BROKEN].weight_sqnr_db


@pytest.mark.slow
def test_16_bit_activations_only_lower_each_layers_own_error(report_inputs, onnx_pair, tmp_path):
    """W8A16 (same int8 weights, same calibration ranges): each layer alone on the float input can only get closer to
    float, since only the rounding of its input and output got 256x finer. (The final mask need not: PointRend's
    point choice is discontinuous, and on unsure photos a W8A16 mask can land further from float than W8A8's.)"""
    from alisnet_export.exporters.onnx import OnnxExporter, quantize_qdq
    from alisnet_export.quantize.ort_debug import onnx_layer_errors

    float_path, int8_path = onnx_pair
    job = report_inputs.job(OnnxExporter().bounds_for(report_inputs.loaded.config), lambda m: None)
    quantize_qdq(float_path, tmp_path / "a16.onnx", job.calibration_inputs(), activation_bits=16)
    xs = [x for _, x in report_inputs.inputs]
    a8 = {e.name: e.local_sqnr_db for e in onnx_layer_errors(float_path, int8_path, report_inputs.reference, xs)}
    a16 = {e.name: e.local_sqnr_db for e in onnx_layer_errors(float_path, tmp_path / "a16.onnx", report_inputs.reference, xs)}
    assert a16.keys() == a8.keys()
    assert all(a16[n] >= a8[n] - 0.1 for n in a8), [(n, a8[n], a16[n]) for n in a8 if a16[n] < a8[n] - 0.1]
    assert np.mean([a16[n] - a8[n] for n in a8]) > 1  # and by more than noise on average


@pytest.mark.slow
def test_pte_section_from_the_pt2e_numeric_debugger(report_inputs):
    from alisnet_export.quant_report import pte_quant_report
    from alisnet_export.quantize.mixed_precision import float_layer_names

    section, baseline = pte_quant_report(report_inputs, top_k=2)
    coarse = [n for n in float_layer_names(report_inputs.reference) if not n.startswith("point_rend.")]
    _check_section(section, "pte", coarse)
    assert len(section["layers"]) == len(coarse)  # every backbone/head conv is quantized; PointRend stays float
    assert all(l["input_scale"] and l["output_scale"] for l in section["layers"])
    assert baseline.masks and baseline.artifact == "pte-int8"


@pytest.mark.slow
def test_pte_report_finds_a_layer_whose_weight_scale_was_multiplied_by_10(report_inputs):
    from alisnet_export.exporters.pte import PteExporter, export_coarse, export_example, quantize_coarse_pt2e
    from alisnet_export.quantize.pt2e_debug import pte_layer_errors

    bounds = PteExporter().bounds_for(report_inputs.loaded.config)
    job = report_inputs.job(bounds, lambda m: None)
    fitted = job.calibration_inputs()
    source, _ = report_inputs.quantization_source(job, fitted)
    example = export_example(bounds, job.example_hw)
    converted = quantize_coarse_pt2e(source, example, bounds, fitted).coarse
    float_graph = export_coarse(source, example, bounds)
    healthy = {e.name: e for e in pte_layer_errors(float_graph, converted, report_inputs.xs)}
    _scale_pt2e_weight(converted, BROKEN)
    worst = debug.worst_layers(pte_layer_errors(float_graph, converted, report_inputs.xs), 3)
    assert worst[0].name == BROKEN, [(e.name, e.local_sqnr_db) for e in worst]
    assert worst[0].local_sqnr_db < healthy[BROKEN].local_sqnr_db - 20


@pytest.mark.slow
def test_quant_report_command_writes_one_section_per_target(run_cli, tmp_path):
    out = tmp_path / "qr"
    code, stdout, err = run_cli("quant-report", "--targets", "onnx,pte", "--height", 2 * H, "--top-k", "1", "--no-reverse",
                                "--no-person-crops", "--images", "testbed:heldout:1", "-o", out, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert list(result["targets"]) == ["onnx", "pte"] and result["int8"] == result["targets"]["onnx"]["int8"]
    report = json.loads((out / "report.json").read_text())
    assert list(report["targets"]) == ["onnx", "pte"]
    for target in ("onnx", "pte"):
        section = report["targets"][target]
        assert len(section["attribution"]) == 1 and section["attribution"][0]["only_int8_mean_iou"] is None
        assert section["reverse_attribution"] is False and any("skipped" in n for n in section["notes"])
        files = report["files"]["targets"][target]
        assert files["plot"] == f"layers.{target}.png" and (out / files["plot"]).stat().st_size > 0
        assert all((out / f).stat().st_size > 0 for item in files["overlays"] for f in item["files"].values())
    page = (out / "report.html").read_text()
    assert "layers.onnx.png" in page and "layers.pte.png" in page and "qdq_loss_debug" in page


def test_report_bounds_take_every_measured_input(mnasnet_config):
    """A 1024 px-high landscape photo is wider than a .pte's default 1024 x 1024 bounds: the report (which exports
    nothing) widens them to its inputs instead of refusing the image."""
    from types import SimpleNamespace

    from alisnet_export.exporters.onnx import OnnxExporter
    from alisnet_export.exporters.pte import PteExporter
    from alisnet_export.quant_report import ReportInputs

    wide = np.zeros((1, 3, 1024, 1376), dtype=np.float32)
    ctx = ReportInputs(SimpleNamespace(config=mnasnet_config), torch.nn.Identity(), [("wide", wide)], [],
                       reference_logits=[("wide", wide)])
    for exporter in (PteExporter(), OnnxExporter()):
        bounds = ctx.bounds_for(exporter)
        bounds.check(1024, 1376)
        assert bounds.min_pixels >= exporter.bounds_for(mnasnet_config).min_pixels
    assert ctx.bounds_for(PteExporter()).max_hw == (1024, 1376)


# --- pte and onnx --keep-float auto: the exporters' own search, with one layer broken in every model it builds


def _auto_export(exporter, report_inputs, tmp_path, suffix):
    import dataclasses

    job = report_inputs.job(report_inputs.bounds_for(exporter), lambda m: None)
    # unreachable: the search runs until the budget or the candidates stop it
    job = dataclasses.replace(job, thresholds=Thresholds(min_mean_iou=0.9999))
    info = exporter.export(job, tmp_path / f"model{suffix}")
    record = info.quantization["keep_float"]
    steps = record["steps"]
    assert record["mode"] == "auto" and steps[0]["added"] is None and steps[1]["added"] == BROKEN, steps
    assert record["layers"][0] == BROKEN and BROKEN in record["why"]
    assert steps[1]["mean_iou"] > steps[0]["mean_iou"] and steps[1]["size_bytes"] > steps[0]["size_bytes"]
    assert record["candidates"][0]["name"] in {c["name"] for c in record["candidates"]}
    assert "calibration images" in record["measured_on"] and record["stop_reason"]
    return info, record


@pytest.mark.slow
def test_onnx_keep_float_auto_keeps_a_broken_layer_float_first(report_inputs, monkeypatch, tmp_path):
    """``onnx --keep-float auto``: every QDQ model the search builds has BROKEN's weight scale x10 unless its Conv
    node is excluded; the search measures it worst, keeps it float first, and the artifact has it float."""
    import onnx

    from alisnet_export.exporters import onnx as onnx_exporter
    from alisnet_export.quantize.ort_debug import conv_nodes_of_layers

    real = onnx_exporter.quantize_qdq

    def broken_qdq(float_path, dest, inputs, *, nodes_to_exclude=(), **kwargs):
        counts = real(float_path, dest, inputs, nodes_to_exclude=nodes_to_exclude, **kwargs)
        (node,) = conv_nodes_of_layers(onnx.load(str(float_path)), report_inputs.reference, [BROKEN])[BROKEN]
        if node not in nodes_to_exclude:
            _scale_qdq_weight(dest, dest, node)
        return counts

    monkeypatch.setattr(onnx_exporter, "quantize_qdq", broken_qdq)
    exporter = onnx_exporter.OnnxExporter(onnx_exporter.OnnxOptions(keep_float=keep_float.KeepFloat(auto=True, candidates=3)))
    _, record = _auto_export(exporter, report_inputs, tmp_path, ".onnx")
    model = onnx.load(str(tmp_path / "model.onnx"))
    (node,) = record["nodes"][BROKEN]
    conv = next(n for n in model.graph.node if n.name == node)
    assert conv.input[1] in {i.name for i in model.graph.initializer}  # its weight: a float initializer, no DQ
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # the candidates' files are gone


@pytest.mark.slow
def test_pte_keep_float_auto_keeps_a_broken_layer_float_first(report_inputs, monkeypatch, tmp_path):
    """``pte --keep-float auto``: every converted graph the search builds has BROKEN's weight scales x10 unless it
    is left unannotated; the search keeps it float first (sizes: the graphs' weight bytes)."""
    from alisnet_export.exporters import pte

    real = pte.Pt2eCalibration.quantize

    def broken_quantize(self, keep_float=()):
        converted = real(self, keep_float)
        return converted if BROKEN in keep_float else _scale_pt2e_weight(converted, BROKEN)

    monkeypatch.setattr(pte.Pt2eCalibration, "quantize", broken_quantize)
    exporter = pte.PteExporter(pte.PteOptions(keep_float="auto"))
    _, record = _auto_export(exporter, report_inputs, tmp_path, ".pte")
    assert "weight_bytes" in record["size_bytes_are"]
    final = next(s for s in reversed(record["steps"]) if s["accepted"])
    # the step's weight bytes stand for the lowered program's size (measured: 3.27 vs 3.33 MB)
    assert abs(final["size_bytes"] - (tmp_path / "model.pte").stat().st_size) < 0.05 * final["size_bytes"]
