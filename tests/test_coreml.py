"""`alisnet-export coreml`: torch.export -> ML Program, package checks on Linux, prediction parity on macOS.

Core ML cannot predict on Linux: there these tests check the packages without running them
(:func:`check_package`), that the runner refuses with the reason, and that parity is recorded as
'not_run'. The ``macos`` tests run the packages through Core ML; elsewhere they skip ("Core ML
prediction needs macOS", tests/conftest.py). Conversions are slow on 2 cores: two packages are
converted once per module and shared (fp16 tensor input; int8 weights with an image input).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alisnet_export.errors import EnvironmentProblem
from alisnet_export.exporters.coreml import PackageExpectation, check_package, required_min_pixels
from alisnet_export.golden import read_golden
from alisnet_export.manifest import read_manifest
from alisnet_export.runtimes import open_runner
from cli_helpers import run_in_process as _cli

ct = pytest.importorskip("coremltools")

SMALL = ["--height", "256", "--no-person-crops"]
REPO = Path(__file__).resolve().parents[1]
ON_MAC = platform.system() == "Darwin"


class Export:
    def __init__(self, folder: Path, name: str, code: int, out: str, err: str) -> None:
        self.folder, self.name, self.code, self.out, self.err = folder, name, code, out, err
        self.package = folder / f"{name}.mlpackage"
        self.manifest_path = folder / f"{name}.manifest.json"

    def assert_written(self) -> None:
        """Exit 0 on Linux (parity not_run); on a Mac parity runs, and a random model may fail a gate (exit 1)."""
        assert self.code in ((0, 1) if ON_MAC else (0,)), self.err
        assert self.package.is_dir() and self.manifest_path.is_file()

    @property
    def result(self) -> dict:
        return json.loads(self.out)

    @property
    def entry(self) -> dict:
        return read_manifest(self.manifest_path)["artifacts"][0]  # read_manifest validates the schema


@pytest.fixture(scope="module")
def fp16(tmp_path_factory, native_ckpt) -> Export:
    folder = tmp_path_factory.mktemp("coreml_fp16")
    return Export(folder, "alisnet_mnasnet-float16", *_cli("coreml", native_ckpt, *SMALL, "-o", folder, "--json"))


@pytest.fixture(scope="module")
def int8_image(tmp_path_factory, native_ckpt) -> Export:
    folder = tmp_path_factory.mktemp("coreml_int8")
    return Export(folder, "alisnet_mnasnet-int8-weights",
                  *_cli("coreml", native_ckpt, "--weights", "int8", "--image-input", "--max-size", "2048x2048", *SMALL,
                        "-o", folder, "--json"))


def test_fp16_export_succeeds_on_linux_with_parity_not_run_and_says_why(fp16):
    fp16.assert_written()
    result = fp16.result  # --json: exactly one JSON object on stdout
    assert result["precision"] == "float16" and result["quantization"] == "fp16"
    assert result["ok"] or ON_MAC
    parity = result["parity"]
    if ON_MAC:  # the gate itself is test_macos_fp16_prediction_matches_the_float_model
        assert parity["status"] in ("passed", "failed") and (fp16.folder / f"{fp16.name}.parity.json").is_file()
        return
    assert parity["status"] == "not_run" and parity["reason"].startswith("Core ML prediction needs macOS")
    assert parity["checked_instead"]["passed"]
    assert "Parity was NOT run: Core ML prediction needs macOS" in fp16.err and "Checked instead" in fp16.err
    assert not (fp16.folder / f"{fp16.name}.parity.json").exists()


def test_fp16_manifest_validates_and_records_the_core_ml_contract(fp16, mnasnet_config):
    fp16.assert_written()
    manifest = read_manifest(fp16.manifest_path)
    entry = manifest["artifacts"][0]
    assert entry["id"] == "coreml-float16" and entry["format"] == "coreml" and entry["file"] == fp16.package.name
    assert entry["quantization"]["scheme"] == "fp16" and entry["quantization"]["activations"] == "float16"
    runtime = entry["runtime"]
    assert runtime["kind"] == "coreml" and runtime["deployment_target"] == {"ios": "16.0", "macos": "13.0"}
    assert runtime["spec_version"] == 7 and runtime["input"]["type"] == "multiarray"
    assert manifest["input"]["size_constraints"]["min_pixels"] == required_min_pixels(mnasnet_config) == 4 * 8192
    from alisnet_export.pipeline import artifact_sha256, artifact_size

    assert entry["size_bytes"] == artifact_size(fp16.package) and entry["sha256"] == artifact_sha256(fp16.package)
    golden = read_golden(fp16.folder / f"{fp16.name}.golden.algv")
    assert "logits.float" in golden and ("logits.coreml-float16" in golden) == ON_MAC
    assert sorted(manifest["golden"]["tensors"]) == sorted(golden)


def test_fp16_package_reloads_with_named_io_flexible_shape_and_metadata(fp16):
    fp16.assert_written()
    model = ct.models.MLModel(str(fp16.package), skip_model_load=True)
    spec = model.get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "image" and out.name == "logits"
    ranges = [(r.lowerBound, r.upperBound) for r in inp.type.multiArrayType.shapeRange.sizeRanges]
    assert ranges == [(1, 1), (3, 3), (64, 4096), (64, 4096)]
    meta = json.loads(model.user_defined_metadata["alisnet.metadata"])
    assert meta["variant"] == "alisnet_mnasnet" and meta["input"]["normalization"]["std"][0] == pytest.approx(0.229)
    assert not (fp16.package / "executorch_debug_handle_mapping.json").exists()


def test_fp16_op_set_has_the_network_and_pointrend_ops_and_no_compression(fp16):
    fp16.assert_written()
    report = check_package(fp16.package, PackageExpectation(weights="fp16"))
    assert report["passed"], report["checks"]
    ops = report["ops"]
    for op in ("conv", "relu", "upsample_bilinear", "topk", "resample", "scatter_along_axis"):
        assert ops.get(op, 0) > 0, op
    assert ops["topk"] == 4 and ops["scatter_along_axis"] == 2  # 2 subdivision steps
    assert "constexpr_affine_dequantize" not in ops and "constexpr_lut_to_dense" not in ops
    assert set(report["weights"]) == {"const.val:FLOAT16"}
    assert report["deployment_target"] == {"spec_version": 7, "opsets": ["CoreML6"]}


def test_check_package_fails_a_package_that_is_not_what_was_asked(fp16, tmp_path):
    fp16.assert_written()

    def failed(expect):
        return {c["name"] for c in check_package(fp16.package, expect)["checks"] if not c["passed"]}

    assert failed(PackageExpectation(weights="int8")) == {"weights"}
    assert failed(PackageExpectation(weights="palettize4")) == {"weights"}
    assert failed(PackageExpectation(min_hw=(128, 128))) == {"flexible_shape"}
    assert failed(PackageExpectation(output_name="mask")) == {"output"}
    assert failed(PackageExpectation(extra_ops=("gelu",))) == {"ops"}
    assert failed(PackageExpectation(metadata_keys=("alisnet.nope",))) == {"metadata"}
    assert "input" in failed(PackageExpectation(image_input=True))
    not_a_package = tmp_path / "x.mlpackage"
    not_a_package.mkdir()
    report = check_package(not_a_package, PackageExpectation())
    assert not report["passed"] and report["checks"][0]["name"] == "reloads"


@pytest.mark.slow
def test_int8_weights_package_is_smaller_with_quantized_weights(fp16, int8_image):
    int8_image.assert_written()
    entry = int8_image.entry
    assert entry["precision"] == "int8-weights" and entry["quantization"]["scheme"] == "coreml-linear-weights"
    assert entry["quantization"]["granularity"] == "per_channel"
    assert entry["size_bytes"] < 0.6 * fp16.entry["size_bytes"]
    report = entry["parity"]["checked_instead"] if not ON_MAC else check_package(
        int8_image.package, PackageExpectation(weights="int8", image_input=True, max_hw=(2048, 2048)))
    assert report["passed"]
    ops = report["ops"]
    assert ops["constexpr_affine_dequantize"] >= 40 and "constexpr_lut_to_dense" not in ops
    assert report["weights"]["constexpr_affine_dequantize.quantized_data:INT8"] == ops["constexpr_affine_dequantize"]


@pytest.mark.slow
def test_image_input_normalises_exactly_inside_the_package(int8_image):
    int8_image.assert_written()
    spec = ct.models.MLModel(str(int8_image.package), skip_model_load=True).get_spec()
    image = spec.description.input[0].type.imageType
    assert spec.description.input[0].name == "image" and image.colorSpace == image.RGB
    assert (image.imageSizeRange.heightRange.lowerBound, image.imageSizeRange.heightRange.upperBound) == (64, 2048)
    preprocessing = int8_image.entry["runtime"]["input"]["preprocessing"]
    assert preprocessing["exact"] is True and preprocessing["core_ml_image"]["scale"] == pytest.approx(1 / 255)
    assert preprocessing["in_model"]["multiply"] == pytest.approx([1 / 0.229, 1 / 0.224, 1 / 0.225])
    # the check reads the numbers back from the program: a wrong std is caught
    assert check_package(int8_image.package, PackageExpectation(
        weights="int8", image_input=True, max_hw=(2048, 2048)))["passed"]
    wrong = check_package(int8_image.package, PackageExpectation(
        weights="int8", image_input=True, max_hw=(2048, 2048), std=(0.226, 0.226, 0.226)))
    assert [c["name"] for c in wrong["checks"] if not c["passed"]] == ["image_normalisation"]


@pytest.mark.skipif(ON_MAC, reason="on macOS the Core ML runner works")
def test_runner_refuses_off_macos_with_the_reason(fp16):
    fp16.assert_written()
    with pytest.raises(EnvironmentProblem, match="Core ML prediction needs macOS") as info:
        open_runner(fp16.package)
    assert info.value.exit_code == 5 and fp16.package.name in str(info.value)


@pytest.mark.skipif(ON_MAC, reason="checks the skip that applies off macOS")
def test_macos_tests_are_skipped_here_with_the_reason():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-m", "macos", "-p", "no:cacheprovider",
                           str(Path(__file__))], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 skipped" in proc.stdout and proc.stdout.count("Core ML prediction needs macOS") >= 2
    assert "passed" not in proc.stdout and "failed" not in proc.stdout


def test_bad_size_bounds_are_refused_before_any_work(run_cli, tmp_path, native_ckpt):
    code, out, err = run_cli("coreml", native_ckpt, "--max-size", "128x128", *SMALL, "-o", tmp_path)
    assert code == 3 and "H x W must be at least 32768" in err and "raise the maximum size" in err
    code, out, err = run_cli("coreml", native_ckpt, "--min-size", "100x64", *SMALL, "-o", tmp_path)
    assert code == 3 and "100 is not a positive multiple of 32" in err
    code, out, err = run_cli("coreml", native_ckpt, "--max-size", "big", *SMALL, "-o", tmp_path)
    assert code == 2 and "HEIGHTxWIDTH" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_palettized_4bit_package_has_lookup_tables(run_cli, tmp_path, native_ckpt, int8_image):
    code, out, err = run_cli("coreml", native_ckpt, "--weights", "palettize4", "--no-pointrend", *SMALL, "-o", tmp_path,
                             "--json")
    assert code in ((0, 1) if ON_MAC else (0,)), err  # on a Mac parity runs: a random 4-bit model may fail it
    result = json.loads(out)
    entry = read_manifest(Path(result["manifest"]))["artifacts"][0]
    assert entry["precision"] == "palettized4-weights" and entry["quantization"]["scheme"] == "coreml-palettize-weights"
    report = check_package(Path(result["artifact"]), PackageExpectation(weights="palettize4", pointrend=False))
    assert report["passed"], report["checks"]
    assert report["ops"]["constexpr_lut_to_dense"] >= 40 and "topk" not in report["ops"]
    assert entry["size_bytes"] < 0.7 * int8_image.entry["size_bytes"]


# ---- macOS only: Core ML prediction -------------------------------------------------------------

def _parity_inputs(native_ckpt):
    from alisnet_export.checkpoint import load_checkpoint
    from alisnet_export.samples import image_paths, parity_inputs

    loaded = load_checkpoint(native_ckpt)
    model = loaded.build_model()
    return model, list(parity_inputs(image_paths(None), loaded.config, height=256, reference=model, person_crops=False))


@pytest.mark.macos
def test_macos_fp16_prediction_matches_the_float_model(fp16, native_ckpt):
    from alisnet_export.parity import default_thresholds, run_parity
    from alisnet_export.runtimes.torch_runners import TorchModelRunner

    fp16.assert_written()
    model, inputs = _parity_inputs(native_ckpt)
    runner = open_runner(fp16.package)
    report = run_parity(TorchModelRunner(model), runner, inputs, artifact=fp16.package.name, format="coreml",
                        precision="float16", thresholds=default_thresholds("float16"))
    assert report.passed, [g.describe() for g in report.failures]
    golden = read_golden(fp16.folder / f"{fp16.name}.golden.algv")
    out = runner(golden["input"])
    assert np.abs(out - golden["logits.coreml-float16"]).max() <= fp16.entry["golden_tolerances"]["self_max_abs"]


@pytest.mark.macos
def test_macos_image_input_prediction_matches_the_float_model(int8_image, native_ckpt):
    from alisnet_export.parity import run_parity
    from alisnet_export.runtimes.torch_runners import TorchModelRunner

    int8_image.assert_written()
    model, inputs = _parity_inputs(native_ckpt)
    runner = open_runner(int8_image.package)
    assert runner.describe()["input"] == "image"
    # a random network's near-zero logits flip under int8 weights: compare logits loosely, not masks
    reference = TorchModelRunner(model)
    report = run_parity(reference, runner, inputs, artifact=int8_image.package.name, format="coreml",
                        precision="int8-weights")
    # a random network's near-zero logits flip under int8 weights, so masks may differ: bound the logit error
    # relative to the logits instead (8-bit pixel rounding, fp16 compute and int8 weights together)
    for (name, x), metrics in zip(inputs, report.images):
        scale = float(np.abs(reference(x)).mean())
        assert metrics.mean_abs_logit <= 0.25 * scale, (name, metrics.mean_abs_logit, scale)
