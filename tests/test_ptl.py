"""`alisnet-export ptl`: scripted PointRend, lite interpreter, parity gate, and bad inputs."""

import json
import os

import numpy as np
import pytest
import torch
import torch.jit.mobile
from PIL import Image

from alisnet_export.golden import read_golden
from alisnet_export.manifest import read_manifest
from alisnet_export.runtimes import open_runner

SMALL = ["--height", "256"]


def test_float_ptl_matches_the_float_model(run_cli, tmp_path, random_mbv2_ckpt):
    code, out, err = run_cli("ptl", random_mbv2_ckpt, "--float", *SMALL, "-o", tmp_path, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] and result["parity"]["status"] == "passed"
    assert result["parity"]["summary"]["max_abs_logit"] <= 1e-4
    ptl = tmp_path / "alisnet_mobilenetv2-float32.ptl"
    assert torch.jit.mobile._get_model_bytecode_version(str(ptl)) == 8
    manifest = read_manifest(tmp_path / "alisnet_mobilenetv2-float32.manifest.json")  # validates the schema
    entry = manifest["artifacts"][0]
    assert entry["size_bytes"] == ptl.stat().st_size and entry["quantization"]["scheme"] == "none"
    ops = (tmp_path / "alisnet_mobilenetv2-float32.ops.yaml").read_text().splitlines()
    assert "- aten::grid_sampler" in ops and "- aten::topk" in ops and "- aten::scatter.src" in ops
    # metadata travels inside the .ptl
    extra = {"alisnet/metadata.json": ""}
    torch.jit.load(str(ptl), _extra_files=extra)
    meta = json.loads(extra["alisnet/metadata.json"])
    assert meta["variant"] == "alisnet_mobilenetv2" and meta["input"]["normalization"]["std"][0] == pytest.approx(0.229)


def test_float_ptl_is_bit_exact_and_folded_batchnorm_differs_only_in_pointrend_ties(run_cli, tmp_path):
    """Unfolded, the float .ptl runs the eager model's kernels: identical logits. --fold-bn changes
    rounding by ~1e-5, which PointRend's top-k selection can turn into a few differently refined
    pixels: the gate must then find them all inside the float model's tie zone."""
    from alisnet_export.zoo import fixture_checkpoint

    ckpt = fixture_checkpoint().path  # trained: PointRend selects among real uncertainties at 512 px
    args = ("ptl", ckpt, "--float", "--height", "512", "--no-person-crops", "--json")
    code, out, err = run_cli(*args, "-o", tmp_path / "exact")
    assert code == 0, err
    exact = json.loads(out)["parity"]["summary"]
    assert exact["max_abs_logit"] == 0.0 and exact["max_flip_fraction"] == 0.0
    code, out, err = run_cli(*args, "--fold-bn", "-o", tmp_path / "folded")
    assert code == 0, err
    result = json.loads(out)
    folded = result["parity"]["summary"]
    assert 0 < folded["max_abs_logit_outside_ties"] <= 1e-4 and folded["max_flip_fraction"] <= 1e-3
    manifest = read_manifest(tmp_path / "folded" / "alisnet_mnasnet-float32.manifest.json")
    assert "fold_conv_batchnorm" in manifest["artifacts"][0]["runtime"]["mobile_passes"]
    code, out, err = run_cli("ptl", ckpt, "--fold-bn", "-o", tmp_path / "int8")
    assert code == 2 and "--fold-bn applies to --float only" in err and not (tmp_path / "int8").exists()


def test_int8_ptl_runs_in_the_lite_interpreter_and_a_failing_gate_exits_1(run_cli, tmp_path, random_mbv2_ckpt):
    # a random network's near-zero logits flip under int8: the gate must fail, loudly, and say so in the manifest
    code, out, err = run_cli("ptl", random_mbv2_ckpt, *SMALL, "-o", tmp_path, "--no-person-crops")
    assert code == 1
    assert "PARITY FAILED" in out and "must not ship" in out
    manifest = read_manifest(tmp_path / "alisnet_mobilenetv2-int8.manifest.json")
    entry = manifest["artifacts"][0]
    assert entry["parity"]["status"] == "failed" and entry["parity"]["failures"]
    assert entry["quantization"]["scheme"] == "eager-ptq" and entry["quantization"]["backend"] == "qnnpack"
    assert "backbone" in entry["quantization"]["quantized_modules"]
    equalization = entry["quantization"]["equalization"]  # PTQ evens out channel ranges first, and says so
    assert equalization["applied"] and equalization["chains"] > 10
    assert equalization["max_range_ratio_after"] <= equalization["max_range_ratio_before"]
    # calibrated at the size it is checked at (--height), not a smaller one whose ranges clip at this size
    assert entry["quantization"]["calibration"]["height"] == 256 and entry["quantization"]["calibration"]["images"] == 32
    # a checkpoint zoo.json does not know calibrates on generated people, never on its parity photos
    assert entry["quantization"]["calibration"]["source"] == "testbed:calibration"
    assert "quantized::conv2d_relu.new" in entry["runtime"]["operators"]
    runner = open_runner(tmp_path / "alisnet_mobilenetv2-int8.ptl")
    golden = read_golden(tmp_path / "alisnet_mobilenetv2-int8.golden.algv")
    assert np.allclose(runner(golden["input"]), golden["logits.ptl-int8"], atol=1e-6)
    assert golden["input"].shape == (1, 3, 256, 192)
    report = json.loads((tmp_path / "alisnet_mobilenetv2-int8.parity.json").read_text())
    assert report["status"] == "failed" and report["runtime"]["runtime"] == "torch lite interpreter"


def test_calibration_height_not_a_multiple_of_32_is_refused_before_any_work(run_cli, tmp_path, random_mbv2_ckpt):
    code, out, err = run_cli("ptl", random_mbv2_ckpt, *SMALL, "--calibration-height", "500", "-o", tmp_path / "out")
    assert code == 3 and "--calibration-height 500 is not a multiple of 32" in err
    assert not (tmp_path / "out").exists()


def test_bytecode_7_backport(run_cli, tmp_path, random_mbv2_ckpt):
    code, out, err = run_cli("ptl", random_mbv2_ckpt, "--float", "--bytecode-version", "7", *SMALL, "-o", tmp_path,
                             "--no-person-crops", "--json")
    assert code == 0, err
    ptl = tmp_path / "alisnet_mobilenetv2-float32.ptl"
    assert torch.jit.mobile._get_model_bytecode_version(str(ptl)) == 7
    assert json.loads((tmp_path / "alisnet_mobilenetv2-float32.manifest.json").read_text())["artifacts"][0]["runtime"]["bytecode_version"] == 7


def test_existing_output_without_force_is_refused_before_any_work(run_cli, tmp_path, random_mbv2_ckpt):
    (tmp_path / "alisnet_mobilenetv2-float32.ptl").write_bytes(b"keep me")
    code, out, err = run_cli("ptl", random_mbv2_ckpt, "--float", *SMALL, "-o", tmp_path)
    assert code == 3 and "already exists" in err and "--force" in err
    assert sorted(os.listdir(tmp_path)) == ["alisnet_mobilenetv2-float32.ptl"]
    assert (tmp_path / "alisnet_mobilenetv2-float32.ptl").read_bytes() == b"keep me"


def test_unwritable_output_is_refused(run_cli, tmp_path, random_mbv2_ckpt):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run_cli("ptl", random_mbv2_ckpt, "--float", *SMALL, "-o", blocker / "sub")
    assert code == 3 and "cannot create output folder" in err
    assert os.listdir(tmp_path) == ["file"]


def test_corrupt_checkpoint_is_a_clear_error_and_writes_nothing(run_cli, tmp_path, random_mbv2_ckpt):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(random_mbv2_ckpt.read_bytes()[:1000])
    out_dir = tmp_path / "out"
    code, out, err = run_cli("ptl", bad, *SMALL, "-o", out_dir, "--json")
    assert code == 3
    assert json.loads(out)["ok"] is False and "truncated or corrupt" in err
    assert not out_dir.exists() or not os.listdir(out_dir)


@pytest.mark.parametrize("mode, size, match", [
    ("L", (200, 300), "grayscale"),
    ("RGBA", (200, 300), "alpha channel"),
    ("RGB", (40, 60), "at least 64 px"),
])
def test_bad_parity_images_are_clear_errors_and_write_nothing(run_cli, tmp_path, random_mbv2_ckpt, mode, size, match):
    image = tmp_path / "images" / "photo.png"
    image.parent.mkdir()
    Image.new(mode, size).save(image)
    out_dir = tmp_path / "out"
    code, out, err = run_cli("ptl", random_mbv2_ckpt, *SMALL, "--images", image, "-o", out_dir)
    assert code == 3 and match in err and "photo.png" in err
    assert not out_dir.exists() or not os.listdir(out_dir)


def test_int8_ptl_of_a_confident_model_passes_its_gate_on_disjoint_images(run_cli, tmp_path):
    """The success path: the testbed model on held-out testbed people it never trained on, calibrated on the
    disjoint calibration split (the defaults zoo.json gives it), passes the int8 gate; the manifest says both sets."""
    from alisnet_export.zoo import fixture_checkpoint

    entry = fixture_checkpoint()
    assert entry.image_sets == {"parity": "testbed:heldout:8", "calibration": "testbed:calibration"}
    code, out, err = run_cli("ptl", entry.path, "--height", "512", "--images", "testbed:heldout:4", "-o", tmp_path, "--json")
    assert code == 0, err
    result = json.loads(out)
    summary = result["parity"]["summary"]
    assert result["ok"] and result["parity"]["status"] == "passed"
    assert summary["mean_iou"] >= 0.99 and summary["mean_boundary_px"] <= 1.0, summary
    entry_m = read_manifest(tmp_path / "alisnet_mnasnet-int8.manifest.json")["artifacts"][0]
    calibration = entry_m["quantization"]["calibration"]
    assert calibration["source"] == "testbed:calibration" and calibration["images"] == 32
    assert entry_m["parity"]["images"]["source"] == "testbed:heldout:4"
    assert "qnnpack" in entry_m["runtime"]["requirement"]
    # the paper's "4.0 MB": this .ptl is 4.01e6 bytes = 3.83 MiB (the README states both)
    assert entry_m["size_bytes"] <= 4 * 2**20
