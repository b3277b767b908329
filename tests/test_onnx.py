"""`alisnet-export onnx`: dynamo ONNX with dynamic H/W, ORT static QDQ int8, the ORT format, bad sizes.

Exports are slow on 2 cores: each precision is exported once per module and shared by the tests.
"""

import contextlib
import json
import os

import numpy as np
import onnx
import pytest
import torch

from alisnet_export.golden import read_golden
from alisnet_export.manifest import read_manifest
from alisnet_export.runtimes import open_runner
from cli_helpers import run_in_process as _cli

SMALL = ["--height", "256", "--no-person-crops"]
STEM = "alisnet_mobilenetv2"


@contextlib.contextmanager
def _cwd(folder):
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def float_export(tmp_path_factory, random_mbv2_ckpt):
    out_dir = tmp_path_factory.mktemp("onnx_float")
    code, out, err = _cli("onnx", random_mbv2_ckpt, "--float", *SMALL, "-o", out_dir, "--json")
    return code, out, err, out_dir


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, random_mbv2_ckpt):
    out_dir = tmp_path_factory.mktemp("onnx_int8")
    cwd = tmp_path_factory.mktemp("cwd")  # empty working directory: quantization must leave nothing here
    with _cwd(cwd):
        code, out, err = _cli("onnx", random_mbv2_ckpt, *SMALL, "-o", out_dir, "--json")
    return code, out, err, out_dir, cwd


@pytest.fixture(scope="module")
def float_model(random_mbv2_ckpt):
    from alisnet_export.checkpoint import load_checkpoint

    return load_checkpoint(random_mbv2_ckpt).build_model().eval()


def _photo_like(h, w, seed):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed)).numpy()


def test_float_onnx_passes_parity_and_onnx_checker(float_export):
    code, out, err, out_dir = float_export
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] and result["format"] == "onnx" and result["quantization"] == "none"
    assert result["parity"]["status"] == "passed" and result["parity"]["summary"]["max_abs_logit"] <= 1e-4
    path = out_dir / f"{STEM}-float32.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["logits"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[:2]] == [1, 3] and dims[2].dim_param and dims[3].dim_param  # H, W dynamic
    opset = {i.domain: i.version for i in model.opset_import}
    assert opset[""] >= 18
    manifest = read_manifest(out_dir / f"{STEM}-float32.manifest.json")  # validates the schema
    entry = manifest["artifacts"][0]
    assert entry["runtime"]["kind"] == "onnxruntime" and entry["runtime"]["opset"] == opset[""]
    assert entry["size_bytes"] == path.stat().st_size
    assert sorted(os.listdir(out_dir)) == sorted(f"{STEM}-float32{s}" for s in
                                                 (".onnx", ".manifest.json", ".parity.json", ".golden.algv"))


def test_metadata_props_carry_the_export_metadata(float_export):
    out_dir = float_export[3]
    model = onnx.load(str(out_dir / f"{STEM}-float32.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props["alisnet/metadata.json"])
    assert meta["variant"] == STEM and props["alisnet/variant"] == STEM
    assert meta["input"]["normalization"]["std"][0] == pytest.approx(0.229)
    assert json.loads(props["alisnet/normalization"])["mean"] == pytest.approx([0.485, 0.456, 0.406])
    runner = open_runner(out_dir / f"{STEM}-float32.onnx")
    assert json.loads(runner.metadata["alisnet/metadata.json"])["variant"] == STEM  # readable from ORT too


@pytest.mark.parametrize("hw", [(256, 192), (320, 288)])
def test_float_onnx_matches_the_float_model_at_other_sizes(float_export, float_model, hw):
    runner = open_runner(float_export[3] / f"{STEM}-float32.onnx")
    x = _photo_like(*hw, seed=hw[0])
    with torch.inference_mode():
        expected = float_model(torch.from_numpy(x)).numpy()
    got = runner(x)
    assert got.shape == expected.shape == (1, 2, *hw)
    assert np.abs(got - expected).max() <= 1e-4
    described = runner.describe()
    assert described["runtime"] == "onnxruntime" and described["onnxruntime"] == __import__("onnxruntime").__version__
    assert described["providers"] == ["CPUExecutionProvider"]


@pytest.mark.slow
def test_int8_conv_nodes_are_qdq_and_a_failing_gate_exits_1(int8_export):
    code, out, err, out_dir, _ = int8_export
    # a random network's near-zero logits flip under int8: the gate must fail and say so
    assert code == 1, err
    assert "PARITY FAILED" in err and "must not ship" in err
    result = json.loads(out)  # stdout is the one JSON object, nothing the quantization tools print
    assert result["ok"] is False and result["quantization"] == "ort-static-qdq"
    manifest = read_manifest(out_dir / f"{STEM}-int8.manifest.json")
    entry = manifest["artifacts"][0]
    assert entry["parity"]["status"] == "failed" and entry["parity"]["failures"]
    q = entry["quantization"]
    assert q["scheme"] == "ort-static-qdq" and q["op_types"] == ["Conv", "Relu"]
    model = onnx.load(str(out_dir / f"{STEM}-int8.onnx"))
    onnx.checker.check_model(model, full_check=True)
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and q["quantized_conv_nodes"] == q["conv_nodes"] == len(convs)
    for conv in convs:  # activation and weight of every Conv come through DequantizeLinear
        assert producer[conv.input[0]].op_type == "DequantizeLinear", conv.name
        assert producer[conv.input[1]].op_type == "DequantizeLinear", conv.name
    # each ReLU after a Conv is folded into that Conv's output quantization ([0, max] range), not left as
    # Conv -> Q/DQ (signed range) -> Relu -> Q/DQ
    def upstream(name: str) -> str:
        node = producer.get(name)
        while node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            node = producer.get(node.input[0])
        return node.op_type if node is not None else "input"
    assert not [n.name for n in model.graph.node if n.op_type == "Relu" and upstream(n.input[0]) == "Conv"]
    # the point geometry stays float: point coordinates (GridSample's grid), the refined indices
    # (ScatterElements) and the uncertainty ranking (TopK) never read dequantized int8 values, and no
    # coordinate op's result is quantized (quantizing them cost ~0.08 mask IoU)
    for node in model.graph.node:
        geometry_inputs = {"GridSample": [1], "ScatterElements": [1], "TopK": [0]}.get(node.op_type, [])
        for i in geometry_inputs:
            assert producer[node.input[i]].op_type != "DequantizeLinear", (node.op_type, node.name)
    quantized_from = {producer[n.input[0]].op_type for n in model.graph.node
                      if n.op_type == "QuantizeLinear" and n.input[0] in producer}
    assert "Conv" in quantized_from
    assert not quantized_from & {"TopK", "Floor", "Div", "Sub", "Mul", "Cast", "Gather", "GridSample", "ScatterElements"}
    assert entry["size_bytes"] < 0.4 * 10e6  # int8 weights: about a third of the float model's 10.7 MB


@pytest.mark.slow
def test_int8_golden_vectors_reproduce_and_cwd_stays_clean(int8_export):
    _, _, _, out_dir, cwd = int8_export
    assert os.listdir(cwd) == []  # ORT's quantization tools ran in a private temporary folder
    assert not [p for p in os.listdir(out_dir) if p.startswith(".")]  # no staging leftovers
    runner = open_runner(out_dir / f"{STEM}-int8.onnx")
    golden = read_golden(out_dir / f"{STEM}-int8.golden.algv")
    assert np.allclose(runner(golden["input"]), golden["logits.onnx-int8"], atol=1e-6)
    report = json.loads((out_dir / f"{STEM}-int8.parity.json").read_text())
    assert report["status"] == "failed" and report["runtime"]["runtime"] == "onnxruntime"


def test_ort_format_runs_and_matches(float_export, float_model, tmp_path):
    from alisnet_export.exporters.onnx import convert_to_ort

    ort_path = tmp_path / "model.ort"
    with _cwd(tmp_path):  # relative paths, as the CLI's default --output gives
        os.symlink(float_export[3] / f"{STEM}-float32.onnx", "model.onnx")
        config = convert_to_ort("model.onnx", "model.ort")
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "model.ort"]
    assert "ai.onnx;18;" in config and "GridSample" in config and "TopK" in config
    runner = open_runner(ort_path)  # .ort -> the onnx runner
    assert runner.describe()["file_format"] == "ort"
    x = _photo_like(256, 224, seed=3)
    with torch.inference_mode():
        expected = float_model(torch.from_numpy(x)).numpy()
    assert np.abs(runner(x) - expected).max() <= 1e-4


@pytest.mark.parametrize("args, match", [
    (["--height", "250"], "not a multiple of 32"),
    (["--max-size", "100x100"], "multiples of 32"),
    (["--max-size", "tall"], "HEIGHTxWIDTH"),
    (["--max-size", "192x2048"], "height must be within"),
    (["--height", "96"], "PointRend"),  # 96 x 64..: fewer cells than PointRend's fixed point count
])
def test_bad_sizes_are_clear_errors_before_any_work(run_cli, tmp_path, random_mbv2_ckpt, args, match):
    out_dir = tmp_path / "out"
    code, out, err = run_cli("onnx", random_mbv2_ckpt, "--float", "--no-person-crops", "--height", "256",
                             *args, "-o", out_dir)
    assert code == 3, err
    assert match in err
    assert not out_dir.exists() or not os.listdir(out_dir)


def test_opset_below_18_is_refused(run_cli, tmp_path, random_mbv2_ckpt):
    code, out, err = run_cli("onnx", random_mbv2_ckpt, "--opset", "17", "-o", tmp_path)
    assert code == 2 and "--opset" in err


def test_not_an_onnx_file_is_a_clear_error(tmp_path):
    from alisnet_export.errors import DataError

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DataError, match="model.onnx.*ONNX Runtime cannot load"):
        open_runner(bad)


def test_bounds_need_pointrend_cells_and_example_fits(mnasnet_config):
    from alisnet_export.exporters.base import SizeBounds
    from alisnet_export.exporters.onnx import OnnxExporter, example_size, pointrend_min_pixels

    need = pointrend_min_pixels(mnasnet_config)
    assert need == mnasnet_config.point_rend.subdivision_num_points * 4  # first refined map is stride 2
    bounds = OnnxExporter().bounds_for(mnasnet_config, SizeBounds(min_hw=(64, 64), max_hw=(512, 512)))
    assert bounds.min_pixels == need and bounds.max_hw == (512, 512)
    assert pointrend_min_pixels(mnasnet_config.with_pointrend(False)) == 0
    h, w = example_size(SizeBounds(min_hw=(64, 64), max_hw=(128, 1024), min_pixels=need))
    assert h <= 128 and h * w >= need and h % 32 == 0 and w % 32 == 0


@pytest.mark.slow
def test_ort_flag_writes_an_ort_artifact_with_its_operator_config(run_cli, tmp_path, random_mbv2_ckpt):
    with _cwd(tmp_path):  # relative --output, as the default `out` is
        code, out, err = run_cli("onnx", random_mbv2_ckpt, "--float", "--ort", *SMALL, "-o", "out", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] and result["parity"]["summary"]["max_abs_logit"] <= 1e-4
    out_dir = tmp_path / "out"
    assert sorted(os.listdir(out_dir)) == sorted(f"{STEM}-float32{s}" for s in (
        ".ort", ".required_operators.config", ".manifest.json", ".parity.json", ".golden.algv"))
    entry = read_manifest(out_dir / f"{STEM}-float32.manifest.json")["artifacts"][0]
    assert entry["format"] == "onnx" and entry["file"].endswith(".ort")
    assert entry["runtime"]["file_format"] == "ort" and entry["runtime"]["ort_optimization"]["target_platform"] == "arm"
    assert entry["runtime"]["op_list_file"] == f"{STEM}-float32.required_operators.config"
    assert open_runner(out_dir / f"{STEM}-float32.ort").describe()["file_format"] == "ort"
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.slow
def test_keep_float_leaves_the_named_layers_conv_nodes_unquantized(int8_export, tmp_path, random_mbv2_ckpt, float_model):
    """Mixed precision in ONNX: the named layer's Conv node gets no QDQ (nodes_to_exclude), all others do, and
    the manifest records layer -> nodes."""
    from alisnet_export.quantize.mixed_precision import float_layer_names

    _, out, _, out_dir, _ = int8_export
    all_int8 = read_manifest(out_dir / f"{STEM}-int8.manifest.json")["artifacts"][0]["quantization"]
    layer = float_layer_names(float_model)[0]
    code, out, err = _cli("onnx", random_mbv2_ckpt, *SMALL, "--keep-float", layer, "-o", tmp_path, "--json")
    assert code in (0, 1), err
    quantization = read_manifest(tmp_path / f"{STEM}-int8.manifest.json")["artifacts"][0]["quantization"]
    record = quantization["keep_float"]
    assert record["layers"] == [layer] and len(record["nodes"][layer]) == 1
    assert quantization["quantized_conv_nodes"] == all_int8["quantized_conv_nodes"] - 1
    model = onnx.load(str(tmp_path / f"{STEM}-int8.onnx"))
    produced_by = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == record["nodes"][layer][0])
    weights = {i.name: i for i in model.graph.initializer}
    assert node.input[1] in weights and node.input[1] not in produced_by  # its weight: a float initializer, no DQ
    assert weights[node.input[1]].data_type == onnx.TensorProto.FLOAT
    code, _, err = _cli("onnx", random_mbv2_ckpt, *SMALL, "--keep-float", "no.such.layer", "-o", tmp_path / "x")
    assert code == 3 and "not a quantized conv/linear layer" in err


@pytest.mark.slow
def test_calibration_cache_serves_every_nodes_to_exclude_variant(float_export, float_model, tmp_path):
    """quantize_qdq(calibration_cache=...): the first call writes the ranges, later calls read them instead of
    calibrating (their own inputs are ignored), and a variant with excluded nodes comes out byte-identical to a
    fresh calibration of it on the first images."""
    from alisnet_export.exporters.onnx import quantize_qdq
    from alisnet_export.quantize.ort_debug import conv_node_layers

    source = float_export[3] / f"{STEM}-float32.onnx"
    images = [torch.from_numpy(_photo_like(256, 192, seed)) for seed in (1, 2)]
    other = [x * 3 for x in images]
    cache = tmp_path / "ranges.json"
    quantize_qdq(source, tmp_path / "all.onnx", images, calibration_cache=cache)
    assert cache.is_file()
    excluded = list(conv_node_layers(onnx.load(str(source)), float_model))[:2]
    quantize_qdq(source, tmp_path / "cached.onnx", other, nodes_to_exclude=excluded, calibration_cache=cache)
    quantize_qdq(source, tmp_path / "fresh.onnx", images, nodes_to_exclude=excluded)
    quantize_qdq(source, tmp_path / "other.onnx", other, nodes_to_exclude=excluded)
    cached = (tmp_path / "cached.onnx").read_bytes()
    assert cached == (tmp_path / "fresh.onnx").read_bytes()
    assert cached != (tmp_path / "other.onnx").read_bytes()  # the inputs matter, so the cache was what was read


@pytest.mark.slow
def test_16_bit_activations_are_uint16_qdq_at_opset_21(tmp_path, random_mbv2_ckpt):
    """``onnx --activation-bits 16``: every activation QuantizeLinear is uint16, weights stay int8, the model is at
    opset 21 (16-bit QuantizeLinear) and says so in its manifest; float refuses the flag."""
    code, out, err = _cli("onnx", random_mbv2_ckpt, *SMALL, "--activation-bits", "16", "-o", tmp_path, "--json")
    assert code in (0, 1), err  # a random model's parity verdict says nothing here
    entry = read_manifest(tmp_path / f"{STEM}-int8.manifest.json")["artifacts"][0]
    assert entry["quantization"]["activation_type"] == "uint16" and entry["quantization"]["activation_bits"] == 16
    assert entry["quantization"]["scheme"] == "ort-static-qdq-a16w8" and "16-bit activations" in err
    assert entry["runtime"]["opset"] == 21
    model = onnx.load(str(tmp_path / f"{STEM}-int8.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and set(zero_points) == {onnx.TensorProto.UINT16}
    produced = {o: n for n in model.graph.node for o in n.output}
    weight_dqs = [produced[n.input[1]] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in produced]
    assert weight_dqs and {inits[dq.input[0]].data_type for dq in weight_dqs} == {onnx.TensorProto.INT8}
    code, _, err = _cli("onnx", random_mbv2_ckpt, "--float", "--activation-bits", "16", "-o", tmp_path / "f")
    assert code == 2 and "--activation-bits applies to int8" in err
