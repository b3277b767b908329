"""The emitted runtime-only parity suite: passes on the real artifacts, fails on tampered ones."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from alisnet_export.bundle.emitted_suite import write_bundle_tests
from alisnet_export.checkpoint import load_checkpoint, save_checkpoint
from alisnet_export.pipeline import artifact_sha256, artifact_size
from alisnet_export.samples import sample_image_paths

NAME = "alisnet_mobilenetv2-float32"


def _pytest(folder):
    proc = subprocess.run([sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider", "-rs"],
                          cwd=folder, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, random_mbv2_ckpt):
    from alisnet_export.cli import main

    folder = tmp_path_factory.mktemp("bundle")
    with pytest.raises(SystemExit) as info:
        main(["ptl", str(random_mbv2_ckpt), "--float", "--height", "256", "-o", str(folder), "--no-person-crops"])
    assert info.value.code == 0
    loaded = load_checkpoint(random_mbv2_ckpt)
    paths = write_bundle_tests(folder, sample_image_paths(), loaded.config, loaded.build_model(), height=256,
                               tie_margins=[1e-4])
    assert paths["cases"].stat().st_size < 3e6
    cases = np.load(paths["cases"])
    names = list(cases["names"])
    # the float gate's tie zone travels with each case, at the gate's tolerance (the key the suite looks up)
    assert {f"ties:{1e-4!r}:{n}" for n in names} <= set(cases.files)
    assert cases[f"ties:{1e-4!r}:{names[0]}"].shape == cases[f"logits:{names[0]}"].shape[2:]
    return folder


def test_emitted_suite_passes_on_the_real_bundle(bundle):
    code, log = _pytest(bundle)
    assert code == 0, log
    assert "3 passed" in log  # size/sha256, float-model parity, golden vectors


@pytest.mark.slow
def test_emitted_suite_fails_when_a_weight_is_changed(bundle, tmp_path, random_mbv2_ckpt):
    loaded = load_checkpoint(random_mbv2_ckpt)
    sd = dict(loaded.state_dict)
    sd["point_rend.point_head.predictor.bias"] = sd["point_rend.point_head.predictor.bias"] + torch.tensor([0.0, 0.02])
    perturbed = save_checkpoint(tmp_path / "perturbed.pth", sd, loaded.config)
    from alisnet_export.cli import main

    with pytest.raises(SystemExit):
        main(["ptl", str(perturbed), "--float", "--height", "256", "-o", str(tmp_path / "p"), "--no-parity",
              "--name", NAME])
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    shutil.copy(tmp_path / "p" / f"{NAME}.ptl", tampered / f"{NAME}.ptl")
    # a careful attacker (or a sloppy release script) also updates the manifest's size and hash:
    manifest_path = tampered / f"{NAME}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"][0]["sha256"] = artifact_sha256(tampered / f"{NAME}.ptl")
    manifest["artifacts"][0]["size_bytes"] = artifact_size(tampered / f"{NAME}.ptl")
    manifest_path.write_text(json.dumps(manifest))
    code, log = _pytest(tampered)
    assert code == 1, log
    assert "test_artifact_reproduces_the_float_model" in log and "no longer matches the float model" in log


def test_emitted_suite_fails_when_the_file_is_modified(bundle, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    with open(tampered / f"{NAME}.ptl", "ab") as f:
        f.write(b"\0")
    code, log = _pytest(tampered)
    assert code == 1 and "modified after export" in log, log
