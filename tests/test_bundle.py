"""`alisnet-export bundle`: several targets, one manifest / golden file / test suite / zip, failures kept apart."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from alisnet_export.bundle.build import BundleOutcome, Target, TargetResult, parse_targets
from alisnet_export.errors import ExportError
from alisnet_export.golden import read_golden
from alisnet_export.manifest import read_manifest
from alisnet_export.pipeline import artifact_sha256, artifact_size
from alisnet_export.runtimes import open_runner
from cli_helpers import run_in_process as _main

SMALL = ["--height", "256", "--no-person-crops"]
VARIANT = "alisnet_mobilenetv2"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, random_mbv2_ckpt):
    root = tmp_path_factory.mktemp("bundle")
    code, out, err = _main("bundle", random_mbv2_ckpt, "--targets", "ptl,onnx", "--float", *SMALL,
                           "-o", root / "b", "--json")
    assert code == 0, err
    return root / "b", json.loads(out), err


def test_bundle_holds_every_artifact_one_manifest_and_one_golden_file(bundle):
    folder, result, err = bundle
    names = sorted(os.listdir(folder))
    assert names == sorted([
        f"{VARIANT}-ptl-float32.ptl", f"{VARIANT}-ptl-float32.parity.json", f"{VARIANT}-ptl-float32.ops.yaml",
        f"{VARIANT}-onnx-float32.onnx", f"{VARIANT}-onnx-float32.parity.json",
        "manifest.json", "golden.algv", "summary.json", "tests"])
    assert sorted(os.listdir(folder / "tests")) == ["parity_cases.npz", "test_bundle_parity.py"]
    assert not [p for p in os.listdir(folder.parent) if p.startswith(".")]  # no temporary folder left behind

    manifest = read_manifest(folder / "manifest.json")  # validates against the schema
    assert [a["id"] for a in manifest["artifacts"]] == ["ptl-float32", "onnx-float32"]
    golden = read_golden(folder / "golden.algv")
    for entry in manifest["artifacts"]:
        path = folder / entry["file"]
        assert entry["size_bytes"] == artifact_size(path) and entry["sha256"] == artifact_sha256(path)
        assert entry["parity"]["status"] == "passed" and entry["parity"]["report"] == f"{path.stem}.parity.json"
        # each artifact's own logits on the golden input, recorded at export
        assert np.allclose(open_runner(path)(golden["input"]), golden[f"logits.{entry['id']}"], atol=1e-6)
        assert np.abs(golden[f"logits.{entry['id']}"] - golden["logits.float"]).max() < 1e-3
    assert manifest["golden"]["file"] == "golden.algv" and set(manifest["golden"]["tensors"]) == set(golden)
    assert golden["input"].shape == (1, 3, 256, 192)

    assert result["ok"] and result["exit_code"] == 0
    assert [(t["id"], t["status"]) for t in result["targets"]] == [("ptl-float32", "passed"), ("onnx-float32", "passed")]
    assert json.loads((folder / "summary.json").read_text())["targets"][1]["id"] == "onnx-float32"
    # the human summary table and next steps go to stderr under --json
    assert "mean IoU / max|dlogit|" in err and f"pytest {folder}/" in err and "android_harness/" in err


def test_zip_holds_the_folder(bundle):
    folder, result, _ = bundle
    zip_path = folder.parent / "b.zip"
    assert result["zip"] == str(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None
        files = {n for n in zf.namelist() if not n.endswith("/")}
        assert zf.read("b/manifest.json") == (folder / "manifest.json").read_bytes()
    on_disk = {f"b/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*") if p.is_file()}
    assert files == on_disk


def test_emitted_suite_passes_on_the_bundle(bundle):
    folder, _, _ = bundle
    proc = subprocess.run([sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider"],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 passed" in proc.stdout  # 3 checks x 2 artifacts


def test_a_failing_target_does_not_hide_the_others(run_cli, tmp_path, random_mbv2_ckpt, monkeypatch):
    # ptl int8 of a random model fails its parity gate; onnx's export is made to fail; both are reported
    from alisnet_export.exporters.onnx import OnnxExporter

    def broken(self, job, dest):
        raise ExportError("onnx: simulated converter failure")

    monkeypatch.setattr(OnnxExporter, "export", broken)
    code, out, err = run_cli("bundle", random_mbv2_ckpt, "--targets", "ptl,onnx:float32", *SMALL,
                             "-o", tmp_path / "b", "--json")
    assert code == 4, err  # an export failure outranks a failed gate
    result = json.loads(out)
    targets = {t["id"]: t for t in result["targets"]}
    assert targets["ptl-int8"]["status"] == "failed" and targets["ptl-int8"]["parity"]["failures"]
    assert targets["onnx-float32"]["status"] == "error" and "simulated converter failure" in targets["onnx-float32"]["error"]
    manifest = read_manifest(tmp_path / "b" / "manifest.json")
    assert [(a["id"], a["parity"]["status"]) for a in manifest["artifacts"]] == [("ptl-int8", "failed")]
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["targets"][1]["status"] == "error"
    assert "EXPORT FAILED" in err and "PARITY FAILED" in err and "must not ship" in err
    assert (tmp_path / "b.zip").is_file()


def test_when_every_export_fails_nothing_is_written(run_cli, tmp_path, random_mbv2_ckpt, monkeypatch):
    from alisnet_export.exporters.ptl import PtlExporter

    def broken(self, job, dest):
        raise RuntimeError("boom")  # an exporter bug is reported as an internal error of that target

    monkeypatch.setattr(PtlExporter, "export", broken)
    code, out, err = run_cli("bundle", random_mbv2_ckpt, "--targets", "ptl:float32", *SMALL, "-o", tmp_path / "b")
    assert code == 4
    assert "internal error" in out and "boom" in out and "nothing was written" in out
    assert os.listdir(tmp_path) == []


def test_unknown_target_is_a_usage_error_before_any_work(run_cli, tmp_path, random_mbv2_ckpt):
    code, out, err = run_cli("bundle", random_mbv2_ckpt, "--targets", "ptl,tflite", "-o", tmp_path / "b")
    assert code == 2 and "unknown target 'tflite'" in err and "ptl, pte, onnx, coreml" in err
    code, out, err = run_cli("bundle", random_mbv2_ckpt, "--targets", "ptl:int4", "-o", tmp_path / "b")
    assert code == 2 and "unknown precision" in err
    assert os.listdir(tmp_path) == []


def test_existing_output_is_refused_before_any_work(run_cli, tmp_path, random_mbv2_ckpt):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("keep me")
    code, out, err = run_cli("bundle", random_mbv2_ckpt, "--targets", "ptl", *SMALL, "-o", tmp_path / "b")
    assert code == 3 and "already exists" in err and "--force" in err
    assert sorted(os.listdir(tmp_path)) == ["b"] and os.listdir(tmp_path / "b") == ["keep.txt"]
    (tmp_path / "c.zip").write_bytes(b"old zip")  # an old zip beside an empty folder is refused too
    (tmp_path / "c").mkdir()
    code, out, err = run_cli("bundle", random_mbv2_ckpt, "--targets", "ptl", *SMALL, "-o", tmp_path / "c")
    assert code == 3 and "c.zip" in err
    assert (tmp_path / "c.zip").read_bytes() == b"old zip"


def test_parse_targets_and_exit_codes():
    assert parse_targets("ptl,pte,onnx,coreml") == [Target("ptl", "int8"), Target("pte", "int8"),
                                                    Target("onnx", "int8"), Target("coreml", "float16")]
    assert parse_targets("ptl, coreml", float_=True) == [Target("ptl", "float32"), Target("coreml", "float16")]
    assert parse_targets("ptl:float,coreml:int8,onnx:int8", float_=True) == [
        Target("ptl", "float32"), Target("coreml", "int8-weights"), Target("onnx", "int8")]
    with pytest.raises(ValueError, match="listed twice"):
        parse_targets("ptl,ptl:int8")
    t = Target("ptl", "int8")

    def outcome(*statuses):
        return BundleOutcome(None, None, None, [TargetResult(t, s) for s in statuses]).exit_code

    assert outcome("passed", "not_run") == 0  # Core ML on Linux: not run, passed with a note
    assert outcome("passed", "failed", "not_run") == 1
    assert outcome("failed", "error") == 4
