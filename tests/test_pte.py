"""`alisnet-export pte`: ExecuTorch .pte with XNNPACK, dynamic H/W, parity gate, delegation info, bad sizes.

torch.export + lowering takes ~0.5-2.5 min on 2 cores, so each .pte is built once per module and shared.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alisnet_export.checkpoint import load_checkpoint
from alisnet_export.errors import DataError
from alisnet_export.golden import read_golden
from alisnet_export.manifest import read_manifest
from alisnet_export.runtimes import open_runner

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--height", "256"]


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "alisnet_export", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def float_pte(tmp_path_factory, random_mbv2_ckpt):
    out = tmp_path_factory.mktemp("pte_float")
    code, stdout, stderr = _cli("pte", random_mbv2_ckpt, "--float", "--bpte", *SMALL, "-o", out, "--json")
    return code, stdout, stderr, out


@pytest.fixture(scope="module")
def int8_pte(tmp_path_factory, random_mbv2_ckpt):
    out = tmp_path_factory.mktemp("pte_int8")
    code, stdout, stderr = _cli("pte", random_mbv2_ckpt, *SMALL, "--no-person-crops", "-o", out)
    return code, stdout, stderr, out


def test_float_pte_passes_parity_and_reports_delegation(float_pte):
    code, stdout, stderr, out = float_pte
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["ok"] and result["parity"]["status"] == "passed"
    assert result["parity"]["summary"]["max_abs_logit"] <= 1e-4
    assert "delegation" in stderr and "XnnpackBackend" in stderr  # human summary on stderr under --json
    manifest = read_manifest(out / "alisnet_mobilenetv2-float32.manifest.json")  # validates the schema
    entry = manifest["artifacts"][0]
    assert entry["format"] == "pte" and entry["quantization"]["scheme"] == "none"
    assert entry["size_bytes"] == (out / "alisnet_mobilenetv2-float32.pte").stat().st_size
    runtime = entry["runtime"]
    assert runtime["kind"] == "executorch" and runtime["executorch"] == "1.5.1"
    assert runtime["delegates"] == ["XnnpackBackend"] and runtime["delegated_subgraphs"] >= 1
    assert runtime["delegated_ops"]["aten::convolution.default"] > 50
    portable = runtime["portable_ops"]
    assert {"aten::topk.default", "aten::grid_sampler_2d.default", "aten::scatter.src"} <= set(portable)
    assert "aten::convolution.default" not in portable
    assert "aten::topk.values" in runtime["kernels"] and runtime["planned_memory_bytes"] > 0
    assert manifest["input"]["size_constraints"]["min_pixels"] == 8192 * 4  # PointRend's point budget at stride 2


def test_bpte_bundles_the_golden_case_and_verifies_in_the_executorch_runtime(float_pte):
    from executorch.extension.pybindings import portable_lib

    from alisnet_export.errors import ExportError
    from alisnet_export.exporters.pte import bundled_program_bytes, verify_bundled_program

    code, stdout, stderr, out = float_pte
    assert code == 0, stderr
    bpte = out / "alisnet_mobilenetv2-float32.bpte"
    assert json.loads(stdout)["files"][".bpte"] == str(bpte)
    data = bpte.read_bytes()
    assert data[4:8] == b"BP08"  # the BundledProgram flatbuffer identifier
    record = read_manifest(out / "alisnet_mobilenetv2-float32.manifest.json")["artifacts"][0]["runtime"]["bundled_program"]
    assert record["file"] == bpte.name and record["size_bytes"] == len(data) and record["test_cases"] == 1
    golden = read_golden(out / "alisnet_mobilenetv2-float32.golden.algv")
    assert record["inputs"] == [list(golden["input"].shape)]
    # what the phone does: load the bundle, run the bundled input, compare with the bundled output
    bundle = portable_lib._load_bundled_program_from_buffer(data)
    (output,) = bundle.verify_result_with_bundled_expected_output("forward", 0, 0.0, 1e-5)
    np.testing.assert_allclose(output.numpy(), golden["logits.pte-float32"], rtol=0, atol=1e-5)
    # the check can fail: a bundle whose expected output is off by 0.01 is refused, naming the case
    wrong = bundled_program_bytes(out / "alisnet_mobilenetv2-float32.pte",
                                  [(golden["input"], golden["logits.pte-float32"] + 0.01)])
    with pytest.raises(ExportError, match="test case 0 does not reproduce"):
        verify_bundled_program(wrong, cases=1, atol=1e-5)
    # no partial file is left, and the bundle gets a normal file's permissions (like the .pte, not mkstemp's 0600)
    assert not list(Path(out).glob(".*.partial"))
    assert bpte.stat().st_mode & 0o777 == (out / "alisnet_mobilenetv2-float32.pte").stat().st_mode & 0o777


def test_float_pte_matches_the_float_model_at_two_sizes(float_pte, random_mbv2_ckpt):
    code, _, stderr, out = float_pte
    assert code == 0, stderr
    model = load_checkpoint(random_mbv2_ckpt).build_model()
    runner = open_runner(out / "alisnet_mobilenetv2-float32.pte")
    assert runner.describe()["runtime"] == "executorch" and "XnnpackBackend" in runner.describe()["backends"]
    gen = torch.Generator().manual_seed(1)
    for h, w in [(256, 192), (320, 256)]:
        x = torch.randn(1, 3, h, w, generator=gen)
        with torch.no_grad():
            expected = model(x).numpy()
        got = runner(x.numpy())
        assert got.shape == (1, 2, h, w)
        assert np.abs(got - expected).max() <= 1e-4


def test_pte_runner_rejects_sizes_that_are_not_multiples_of_32(float_pte):
    runner = open_runner(float_pte[3] / "alisnet_mobilenetv2-float32.pte")
    with pytest.raises(DataError, match="not a multiple of 32"):
        runner(np.zeros((1, 3, 250, 192), np.float32))
    # ExecuTorch itself would run a taller-than-exported input; the runner refuses it
    with pytest.raises(DataError, match="larger than the 1024x1024"):
        runner(np.zeros((1, 3, 1056, 64), np.float32))
    with pytest.raises(DataError, match="size bounds"):  # H*W below PointRend's point budget
        runner(np.zeros((1, 3, 64, 64), np.float32))


@pytest.mark.slow
def test_int8_pte_runs_and_a_failing_gate_exits_1(int8_pte, float_pte):
    code, stdout, stderr, out = int8_pte
    # a random network's near-zero logits flip under int8: the gate must fail and the manifest say so
    assert code == 1, stderr
    assert "PARITY FAILED" in stdout and "must not ship" in stdout
    manifest = read_manifest(out / "alisnet_mobilenetv2-int8.manifest.json")
    entry = manifest["artifacts"][0]
    assert not list(out.glob("*.bpte")) and "bundled_program" not in entry["runtime"]  # only with --bpte
    assert entry["parity"]["status"] == "failed" and entry["parity"]["failures"]
    q = entry["quantization"]
    assert q["scheme"] == "pt2e-ptq" and q["backend"] == "xnnpack" and q["quantized_modules"] == ["backbone", "head"]
    delegated = entry["runtime"]["delegated_ops"]
    assert delegated["quantized_decomposed::quantize_per_tensor.default"] > 0  # int8 convs run in XNNPACK
    float_size = (float_pte[3] / "alisnet_mobilenetv2-float32.pte").stat().st_size
    assert entry["size_bytes"] < 0.4 * float_size
    runner = open_runner(out / "alisnet_mobilenetv2-int8.pte")
    golden = read_golden(out / "alisnet_mobilenetv2-int8.golden.algv")
    assert np.allclose(runner(golden["input"]), golden["logits.pte-int8"], atol=1e-5)
    report = json.loads((out / "alisnet_mobilenetv2-int8.parity.json").read_text())
    assert report["status"] == "failed" and report["runtime"]["runtime"] == "executorch"


@pytest.mark.parametrize("args, match", [
    (["--height", "240"], "not a multiple of 32"),
    (["--height", "256", "--max-size", "224x224"], "outside what this artifact accepts"),
    (["--height", "256", "--min-size", "100x64"], "not a positive multiple of 32"),
    (["--height", "256", "--max-size", "big"], "expected HEIGHTxWIDTH"),
])
def test_bad_sizes_are_clear_errors_before_any_work(run_cli, tmp_path, random_mbv2_ckpt, args, match):
    out_dir = tmp_path / "out"
    code, out, err = run_cli("pte", random_mbv2_ckpt, "--float", *args, "-o", out_dir)
    assert code == 3 and match in err
    assert not out_dir.exists() or not os.listdir(out_dir)


def _int8_weight_convs(graph_module) -> tuple[int, int]:
    """(conv nodes, conv nodes whose weight comes through a dequantize) of a converted PT2E graph."""
    convs = [n for n in graph_module.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    return len(convs), sum(1 for n in convs if "dequantize" in str(getattr(n.args[1], "target", "")))


@pytest.mark.slow
def test_keep_float_leaves_the_named_layers_unannotated(random_mbv2_ckpt, run_cli, tmp_path):
    """Mixed precision in PT2E: the named layers' convs keep float weights, every other conv is int8; a name
    that is not a backbone/head conv is refused with what to do."""
    from alisnet_export.exporters.base import SizeBounds
    from alisnet_export.exporters.pte import quantize_coarse_pt2e
    from alisnet_export.quantize.mixed_precision import float_layer_names

    model = load_checkpoint(random_mbv2_ckpt).build_model().eval()
    layers = tuple(float_layer_names(model)[:2])
    x = torch.randn(1, 3, 256, 192, generator=torch.Generator().manual_seed(0))
    bounds = SizeBounds(min_hw=(64, 64), max_hw=(512, 512))
    total, int8 = _int8_weight_convs(quantize_coarse_pt2e(model, x, bounds, [x]).coarse)
    assert total == int8 > 2
    total_mixed, int8_mixed = _int8_weight_convs(quantize_coarse_pt2e(model, x, bounds, [x], keep_float=layers).coarse)
    assert total_mixed == total and int8_mixed == int8 - 2
    code, _, err = run_cli("pte", random_mbv2_ckpt, *SMALL, "--keep-float", "point_rend.nope", "-o", tmp_path)
    assert code == 3 and "not a quantized conv/linear layer" in err
    code, _, err = run_cli("pte", random_mbv2_ckpt, "--float", "--keep-float", layers[0], "-o", tmp_path)
    assert code == 2 and "--keep-float applies to int8" in err


@pytest.mark.slow
def test_one_calibration_serves_every_keep_float_variant(random_mbv2_ckpt):
    """Pt2eCalibration: a graph re-prepared for other float layers takes the calibrated observers and converts to
    exactly what a fresh calibration of it gives; a different image set gives a different model (so the
    comparison can tell the two apart)."""
    from alisnet_export.exporters.base import SizeBounds
    from alisnet_export.exporters.pte import Pt2eCalibration, export_coarse
    from alisnet_export.quantize.mixed_precision import float_layer_names

    model = load_checkpoint(random_mbv2_ckpt).build_model().eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(1, 3, 256, 192, generator=g) for _ in range(2)]
    bounds = SizeBounds(min_hw=(64, 64), max_hw=(512, 512))
    graph = export_coarse(model, images[0], bounds)
    once = Pt2eCalibration(graph, images)
    layers = [n for n in float_layer_names(model) if not n.startswith("point_rend.")]
    for keep in ([], layers[1:2], layers[:1] + layers[2:]):  # all int8, one layer float, only one layer int8
        reused = once.quantize(keep)(images[0])[0]
        fresh = Pt2eCalibration(graph, images).quantize(keep)(images[0])[0]
        assert torch.equal(reused, fresh), keep
    assert once.recalibrated == 0
    other = Pt2eCalibration(graph, [images[1] * 3]).quantize(layers[1:2])(images[0])[0]
    assert not torch.equal(other, once.quantize(layers[1:2])(images[0])[0])
