"""`alisnet-export predict --artifact`: an export run as an app would, beside the float model."""

import json

import numpy as np
from PIL import Image


def test_predict_runs_an_artifact_and_draws_it_beside_the_float_model(run_cli, tmp_path, native_ckpt, data_dir):
    code, out, err = run_cli("ptl", native_ckpt, "--float", "--height", "128", "--no-person-crops", "-o", tmp_path, "--json")
    assert code == 0, err
    ptl = tmp_path / "alisnet_mnasnet-float32.ptl"
    code, out, err = run_cli("predict", native_ckpt, "--artifact", ptl, "--compare-float", "--image",
                             data_dir / "astronaut.png", "--height", "128", "-o", tmp_path / "p", "--json")
    assert code == 0, err
    (row,) = json.loads(out)["results"]
    # the float .ptl is bit-exact with the eager model: same mask, no contour difference
    assert row["vs_float"]["mask_iou"] == 1.0 and row["vs_float"]["pixels_differ"] == 0
    mask = np.asarray(Image.open(tmp_path / "p" / "astronaut.ptl-float32.mask.png"))
    assert mask.shape == (512, 512)
    panel = Image.open(row["vs_float"]["compare"])
    assert panel.width > 2 * panel.height // 3  # three pictures side by side
    # the same photo through the float model alone
    code, out, err = run_cli("predict", native_ckpt, "--image", data_dir / "astronaut.png", "--height", "128",
                             "-o", tmp_path / "f", "--json")
    assert code == 0, err
    float_mask = np.asarray(Image.open(tmp_path / "f" / "astronaut.mask.png"))
    assert np.array_equal(float_mask, mask)


def test_predict_refuses_compare_without_an_artifact_and_a_missing_artifact(run_cli, tmp_path, data_dir):
    code, _, err = run_cli("predict", "--compare-float", "--image", data_dir / "astronaut.png", "-o", tmp_path)
    assert code == 2 and "--compare-float compares an --artifact" in err
    code, _, err = run_cli("predict", "--artifact", tmp_path / "nope.ptl", "--image", data_dir / "astronaut.png")
    assert code == 2 and "nope.ptl" in err
