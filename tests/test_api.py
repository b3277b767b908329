"""The Python API (`alisnet_export.api`): prepare once, export, bundle and re-check from Python."""

import json

import pytest

from alisnet_export import api
from alisnet_export.errors import OutputError


def test_prepare_export_bundle_recheck(tmp_path, native_ckpt, data_dir):
    session = api.prepare(native_ckpt, images=[data_dir / "astronaut.png"], height=128, person_crops=False,
                          calibrate=False)
    assert session.config.name == "alisnet_mnasnet" and [n for n, _ in session.inputs] == ["astronaut@128"]
    assert session.calibration_set is None and session.warnings == []
    with pytest.raises(ValueError, match="no calibration set"):
        session.calibration()

    outcome = api.export(session, "ptl", tmp_path / "single", precision="float32")
    assert outcome.passed and outcome.record.path.name == "alisnet_mnasnet-float32.ptl"
    manifest = json.loads(outcome.manifest_path.read_text())
    assert manifest["artifacts"][0]["parity"]["images"]["files"] == ["astronaut.png"]
    with pytest.raises(OutputError, match="already exists"):  # nothing is overwritten without force
        api.export(session, "ptl", tmp_path / "single", precision="float32")

    built = api.bundle(session, "ptl:float32", tmp_path / "bundle" / "b")
    assert built.exit_code == 0 and (tmp_path / "bundle" / "b" / "manifest.json").is_file()

    (result,) = api.recheck(outcome.record.path, reference=native_ckpt, images=[data_dir / "astronaut.png"],
                            person_crops=False)
    assert result.report is not None and result.report.passed and result.report.images[0].height == 128


def test_prepare_resolves_the_checkpoints_own_calibration_set_and_warns(native_ckpt, data_dir):
    session = api.prepare(native_ckpt, images=["samples"], calibration_images=["samples"], height=64,
                          person_crops=False)
    assert session.parity_set.source == session.calibration_set.source == "samples"
    assert any("also parity images" in w for w in session.warnings)
    assert any("fewer than 16" in w for w in session.warnings)
    assert len(session.calibration()) == 16 and session.calibration()[0].shape[2] == 64
