"""A regular (non-editable) install carries the configs, the embedded checkpoints, schemas and resources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and installs it into a fresh virtualenv

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")  # keep build/ and *.egg-info out of the checkout
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        capture_output=True, text=True, cwd=build, env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (found,) = out.glob("alisnet_export-*.whl")
    return found


def test_wheel_holds_configs_checkpoints_and_resources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    zoo = json.loads((REPO / "models" / "zoo.json").read_text())
    expected = {"alisnet_export/_models/zoo.json", "alisnet_export/_models/README.md",
                "alisnet_export/schemas/manifest.schema.json",
                "alisnet_export/resources/bundle_tests/test_bundle_parity.py"}
    expected |= {f"alisnet_export/_models/{p.name}" for p in (REPO / "models").glob("*.json")}
    expected |= {f"alisnet_export/_models/{e['file']}" for e in zoo["checkpoints"].values()}
    missing = expected - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert any(n.startswith("alisnet_export/resources/sample_images/") for n in names)
    for split in ("calibration", "heldout"):  # the real-photo model's own image sets
        assert any(n.startswith(f"alisnet_export/resources/street_frames/{split}/") for n in names)


def test_installed_package_finds_the_zoo_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--target", str(target), str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = (
        "import alisnet_export, json\n"
        "from alisnet_export.zoo import models_dir, default_checkpoint, fixture_checkpoint\n"
        "from alisnet_export.config import list_configs\n"
        "from alisnet_export.checkpoint import load_checkpoint\n"
        "d = default_checkpoint()\n"
        "print(json.dumps({'pkg': alisnet_export.__file__, 'models': str(models_dir()), 'configs': list_configs(),\n"
        "  'default': load_checkpoint(d.path).config.name, 'fixture': fixture_checkpoint().path.is_file()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ALISNET_EXPORT_MODELS"}
    # -I: no PYTHONPATH, no user site; the target goes first on sys.path, ahead of the editable install
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n" + code],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    assert info["pkg"].startswith(str(target)) and info["models"].startswith(str(target))
    assert set(info["configs"]) >= {p.stem for p in (REPO / "models").glob("*.json") if p.stem != "zoo"}
    zoo = json.loads((REPO / "models" / "zoo.json").read_text())
    assert info["default"] == zoo["checkpoints"][zoo["default"]]["config"]
    assert info["fixture"] is True
