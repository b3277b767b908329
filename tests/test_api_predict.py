"""`api.predict`: masks and overlays from Python, with the float model and with an exported artifact."""

import numpy as np
import pytest
from PIL import Image

from alisnet_export import api


def test_predict_from_python_writes_masks_and_compares_an_artifact(tmp_path, native_ckpt, data_dir):
    photo, heard = data_dir / "astronaut.png", []
    result = api.predict([photo], tmp_path / "float", ckpt=native_ckpt, height=128, on_image=heard.append)
    (row,) = result.results
    assert heard == [row] and result.checkpoint == native_ckpt and result.artifact is None
    assert result.variant == "alisnet_mnasnet" and row["input_hw"] == [128, 128]
    mask = np.asarray(Image.open(row["mask"]))
    assert mask.shape == Image.open(photo).size[::-1] and np.isclose((mask > 0).mean(), row["foreground_fraction"])
    with pytest.raises(ValueError, match="compare_float"):
        api.predict([photo], tmp_path / "x", compare_float=True)

    session = api.prepare(native_ckpt, images=[photo], height=128, person_crops=False, calibrate=False)
    artifact = api.export(session, "ptl", tmp_path / "ptl", precision="float32").record.path
    compared = api.predict([photo], tmp_path / "art", ckpt=native_ckpt, height=128, artifact=artifact,
                           compare_float=True)
    (row,) = compared.results
    assert compared.artifact == artifact and row["mask"].endswith("astronaut.ptl-float32.mask.png")
    assert row["vs_float"]["mask_iou"] > 0.99 and (tmp_path / "art" / "astronaut.ptl-float32.compare.png").is_file()
