"""Parity metrics and `alisnet-export parity` as a CI gate (JSON, JUnit, HTML/Markdown reports)."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from alisnet_export.checkpoint import load_checkpoint, save_checkpoint
from alisnet_export.parity import Thresholds, boundary_distances, compare_logits, run_parity, width_profile


def _logits(mask: np.ndarray, margin: float = 2.0) -> np.ndarray:
    out = np.zeros((1, 2, *mask.shape), np.float32)
    out[0, 1] = np.where(mask, margin, -margin)
    return out


def _disk(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def test_boundary_distance_of_a_one_pixel_dilation_is_one_pixel():
    a = np.zeros((40, 40), bool)
    a[10:30, 10:30] = True
    b = np.zeros_like(a)
    b[9:31, 9:31] = True
    d = boundary_distances(a, b)
    assert d.mean() == pytest.approx(1.0, abs=0.02) and d.max() == pytest.approx(2 ** 0.5)  # corners are diagonal
    assert boundary_distances(a, a).max() == 0
    lost = boundary_distances(a, np.zeros_like(a))  # the artifact lost the person: the worst finite distance
    assert len(lost) > 0 and np.isfinite(lost).all() and np.allclose(lost, np.hypot(*a.shape))


def test_compare_logits_metrics_on_known_masks():
    ref = _disk(64, 64, 32, 32, 20)
    cand = _disk(64, 64, 32, 34, 20)  # shifted 2 px right
    m = compare_logits("disk", _logits(ref), _logits(cand))
    inter, union = (ref & cand).sum(), (ref | cand).sum()
    assert m.mask_iou == pytest.approx(inter / union)
    assert m.pixel_agreement == pytest.approx((ref == cand).mean())
    assert 0.5 < m.boundary_mean_px < 2.1 and m.max_abs_logit == pytest.approx(4.0)
    assert max(m.width_drift_px) <= 1  # a horizontal shift keeps widths


def test_width_drift_measures_silhouette_width_change():
    ref = np.zeros((100, 60), bool)
    ref[10:90, 20:40] = True
    wide = ref.copy()
    wide[40:60, 17:43] = True  # 6 px wider around the middle of the body
    m = compare_logits("w", _logits(ref), _logits(wide))
    assert m.width_drift_px == [0, 0, 6, 0, 0]
    assert width_profile(ref, (10, 90)) == [20] * 5


def test_gates_pass_and_fail_by_threshold_and_empty_reports_fail():
    ref = _disk(64, 64, 32, 32, 20)
    inputs = [("a", np.zeros((1, 3, 64, 64), np.float32))]
    shifted = _logits(_disk(64, 64, 32, 33, 20))
    ok = run_parity(lambda x: _logits(ref), lambda x: shifted, inputs, artifact="x", format="ptl", precision="int8",
                    thresholds=Thresholds(min_mean_iou=0.9, max_mean_boundary_px=1.5))
    assert ok.passed and len(ok.gates) == 2
    bad = run_parity(lambda x: _logits(ref), lambda x: shifted, inputs, artifact="x", format="ptl", precision="int8",
                     thresholds=Thresholds(min_mean_iou=0.99))
    assert not bad.passed and bad.failures[0].gate == "min_mean_iou"
    empty = run_parity(lambda x: x, lambda x: x, [], artifact="x", format="ptl", precision="int8")
    assert not empty.passed


def test_float_gate_allows_pointrend_flips_only_inside_the_tie_zone():
    ref = _logits(_disk(64, 64, 32, 32, 20))
    flipped = ref.copy()
    flipped[0, :, 10, 10] += 0.3  # one pixel PointRend refined differently
    zone = np.zeros((64, 64), bool)
    zone[8:13, 8:13] = True

    class Reference:
        def __call__(self, x):
            return ref

        def tie_zone(self, x, margin):
            assert margin == 1e-4  # the zone is computed at the gate's own tolerance
            return zone

    inputs = [("a", np.zeros((1, 3, 64, 64), np.float32))]
    ok = run_parity(Reference(), lambda x: flipped, inputs, artifact="x", format="ptl", precision="float32")
    m = ok.images[0]
    assert ok.passed and m.max_abs_logit == pytest.approx(0.3) and m.max_abs_logit_outside_ties == 0.0
    assert m.flip_pixels == 1 and m.tie_zone_pixels == 25
    assert {g.gate for g in ok.gates} >= {"max_abs_logit_outside_ties", "max_flip_fraction"}
    # the same difference outside the zone fails, and so do too many flips inside it
    zone[:] = False
    assert not run_parity(Reference(), lambda x: flipped, inputs, artifact="x", format="ptl", precision="float32").passed
    zone[:] = True
    many = ref + 0.3
    bad = run_parity(Reference(), lambda x: many, inputs, artifact="x", format="ptl", precision="float32")
    assert [g.gate for g in bad.failures] == ["max_flip_fraction"]
    # a plain callable reference (no tie zone) gates max |delta logit| over every pixel
    plain = run_parity(lambda x: ref, lambda x: flipped, inputs, artifact="x", format="ptl", precision="float32")
    assert [g.gate for g in plain.failures] == ["max_abs_logit"]


def _junit_cases(path):
    """Parse the JUnit file with junitparser (a JUnit/xUnit XML library, pinned in the test extra) and check
    that the statistics we wrote agree with the ones it recomputes from the test cases. Returns
    ``{"SUITE/CASE": passed}``."""
    junitparser = pytest.importorskip("junitparser", reason="the test extra is not installed: pip install -e '.[test]'")
    xml = junitparser.JUnitXml.fromfile(str(path))
    assert isinstance(xml, junitparser.JUnitXml)  # a <testsuites> root
    stated = {suite.name: (suite.tests, suite.failures, suite.errors, suite.skipped) for suite in xml}
    stated_total = (xml.tests, xml.failures)
    cases = {}
    for suite in xml:
        for case in suite:
            assert case.name and case.classname == suite.name
            for result in case.result:
                assert isinstance(result, junitparser.Failure) and result.message
            cases[f"{suite.name}/{case.name}"] = case.is_passed
    xml.update_statistics()  # recompute from the cases
    assert {suite.name: (suite.tests, suite.failures, suite.errors, suite.skipped) for suite in xml} == stated
    assert (xml.tests, xml.failures) == stated_total
    return cases


@pytest.fixture(scope="module")
def float_export(tmp_path_factory, random_mbv2_ckpt):
    from alisnet_export.cli import main

    out = tmp_path_factory.mktemp("export")
    with pytest.raises(SystemExit) as info:
        main(["ptl", str(random_mbv2_ckpt), "--float", "--height", "256", "-o", str(out), "--no-person-crops"])
    assert info.value.code == 0
    return out


def test_parity_command_passes_on_the_real_artifact_with_reports(run_cli, float_export, random_mbv2_ckpt, tmp_path):
    ptl = float_export / "alisnet_mobilenetv2-float32.ptl"
    junit, report = tmp_path / "parity.xml", tmp_path / "report"
    code, out, err = run_cli("parity", ptl, "--reference", random_mbv2_ckpt, "--junit", junit, "--report", report, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] and result["height"] == 256 and result["results"][0]["status"] == "passed"
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and int(root.get("failures")) == 0 and int(root.get("tests")) >= 2
    cases = _junit_cases(junit)
    assert len(cases) == int(root.get("tests")) and all(cases.values())
    images = {name.split("/")[1].rsplit(".", 1)[0] for name in cases} - {"mean"}
    assert images == {m["name"] for m in result["results"][0]["images"]}  # one testcase per image x gate
    html = (report / "report.html").read_text()
    assert "PASSED" in html and ".diff.png" in html
    assert list(report.glob("*.diff.png"))


def test_parity_fails_on_a_manifest_with_the_wrong_normalisation(run_cli, float_export, random_mbv2_ckpt, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(float_export, broken)
    manifest_path = broken / "alisnet_mobilenetv2-float32.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["input"]["normalization"]["mean"] = [0.5, 0.5, 0.5]  # an app following it feeds other numbers
    manifest_path.write_text(json.dumps(manifest))
    junit = tmp_path / "parity.xml"
    code, out, err = run_cli("parity", broken / "alisnet_mobilenetv2-float32.ptl", "--reference", random_mbv2_ckpt,
                             "--junit", junit, "--report", tmp_path / "report", "--json")
    assert code == 1
    failures = json.loads(out)["results"][0]["failures"]
    assert any("iou" in f for f in failures), failures  # masks flip where the inputs changed
    root = ET.parse(junit).getroot()
    assert int(root.get("failures")) >= 1
    assert root.find(".//failure") is not None
    cases = _junit_cases(junit)
    assert sum(not ok for ok in cases.values()) == len(failures)
    assert "FAILED" in (tmp_path / "report" / "report.html").read_text()


def test_parity_fails_on_a_perturbed_weight_and_a_modified_file(run_cli, float_export, random_mbv2_ckpt, tmp_path):
    loaded = load_checkpoint(random_mbv2_ckpt)
    sd = dict(loaded.state_dict)
    sd["head.predictor.bias"] = sd["head.predictor.bias"] + torch.tensor([0.0, 0.05])  # one weight tensor nudged
    perturbed = save_checkpoint(tmp_path / "perturbed.pth", sd, loaded.config)
    code, out, err = run_cli("ptl", perturbed, "--float", "--height", "256", "-o", tmp_path / "p", "--no-person-crops",
                             "--name", "alisnet_mobilenetv2-float32")
    assert code == 0
    # swap the perturbed artifact in for the real one, keeping the real manifest
    import shutil

    shutil.copytree(float_export, tmp_path / "swapped")
    shutil.copy(tmp_path / "p" / "alisnet_mobilenetv2-float32.ptl", tmp_path / "swapped")
    code, out, err = run_cli("parity", tmp_path / "swapped" / "alisnet_mobilenetv2-float32.ptl",
                             "--reference", random_mbv2_ckpt, "--json", "--report", tmp_path / "report")
    assert code == 1
    result = json.loads(out)["results"][0]
    assert result["integrity_problems"] and "modified after export" in result["integrity_problems"][0]
    # a flat random model ties PointRend's whole selection, so the nudge shows as "refined differently"
    # pixels (max_flip_fraction) or, outside the tie zone, as max_abs_logit_outside_ties
    logit_gates = ("max_abs_logit", "max_flip_fraction")
    assert any(g in f for f in result["failures"] for g in logit_gates)
    # the report a person opens says which gates failed on which image, and shows the masks
    page = (tmp_path / "report" / "report.md").read_text()
    assert "**Overall: FAILED**" in page and "Failed gates:" in page
    worst = min(result["images"], key=lambda m: m["mask_iou"])["name"]
    assert any(f"`{worst}: {g}" in page for g in logit_gates) and "artifact_sha256_matches_manifest" in page
    assert list((tmp_path / "report").glob("*.diff.png"))


def test_parity_bad_inputs_are_clear_errors(run_cli, float_export, random_mbv2_ckpt, tmp_path):
    ptl = float_export / "alisnet_mobilenetv2-float32.ptl"
    code, out, err = run_cli("parity", ptl)
    assert code == 3 and "missing --reference" in err
    code, out, err = run_cli("parity", tmp_path / "model.tflite", "--reference", random_mbv2_ckpt)
    assert code == 3 and "no such artifact" in err
    unknown = tmp_path / "model.tflite"
    unknown.write_bytes(b"x")
    code, out, err = run_cli("parity", unknown, "--reference", random_mbv2_ckpt)
    assert code == 3 and "unknown artifact format '.tflite'" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_cli("parity", ptl, "--reference", random_mbv2_ckpt, "--images", empty)
    assert code == 3 and "no images found" in err
    lone = tmp_path / "lone.ptl"
    lone.write_bytes(ptl.read_bytes())
    code, out, err = run_cli("parity", lone, "--reference", random_mbv2_ckpt)
    assert code == 3 and "--precision" in err
