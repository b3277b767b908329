"""Synthetic people: deterministic, exact masks, both views, portrait framing, and the folder writer."""

import numpy as np
import pytest
from scipy import ndimage

from alisnet_export.data import SegmentationFolder, SyntheticPeople, write_synthetic_dataset
from alisnet_export.errors import OutputError


def test_an_item_depends_only_on_seed_and_index():
    a = SyntheticPeople(6, 128, 96, seed=3)
    b = SyntheticPeople(6, 128, 96, seed=3)
    later_first = b[5]  # generation order must not matter
    for i in (0, 5):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][1], b[i][1])
    np.testing.assert_array_equal(a[5][0], later_first[0])
    other = SyntheticPeople(6, 128, 96, seed=4)
    assert not np.array_equal(a[0][0], other[0][0])
    image, mask = a[1]
    assert image.shape == (128, 96, 3) and image.dtype == np.uint8
    assert mask.shape == (128, 96) and mask.dtype == bool


def test_mask_is_exactly_the_pixels_the_person_was_drawn_on():
    data = SyntheticPeople(30, 128, 96, seed=0, effects=False)
    for i in range(len(data)):
        s = data.sample(i)
        changed = (s.image != s.scene).any(axis=-1)  # where the photo differs from the person-free scene
        assert not (changed & ~s.mask).any(), f"sample {i}: pixels outside the mask were painted"
        assert changed[s.mask].mean() > 0.97, f"sample {i}: mask pixels that show the background"
        np.testing.assert_array_equal(s.regions > 0, s.mask)


def test_camera_effects_change_the_pixels_but_never_the_mask():
    raw = SyntheticPeople(5, 128, 96, seed=7, effects=False)
    shot = SyntheticPeople(5, 128, 96, seed=7, effects=True)
    for i in range(5):
        np.testing.assert_array_equal(raw[i][1], shot[i][1])
    assert any(not np.array_equal(raw[i][0], shot[i][0]) for i in range(5))


def test_front_and_side_views_in_portrait_framing():
    data = SyntheticPeople(40, 128, 96, seed=1)
    views, tall, occluded, fractions = set(), 0, 0, []
    for i in range(len(data)):
        s = data.sample(i)
        views.add(s.view)
        rows = np.flatnonzero(s.mask.any(axis=1))
        tall += (rows[-1] - rows[0] + 1) >= 0.6 * 128
        fractions.append(s.mask.mean())
        if not s.occluded:  # an object in front may cut the person in two; otherwise it is one piece
            labels, n = ndimage.label(s.mask)
            assert n == 1, f"sample {i}: the person falls apart into {n} pieces"
        occluded += s.occluded
    assert 0 < occluded < 0.3 * len(data)
    assert views == {"front", "side"}
    assert tall >= 0.9 * len(data)  # the person fills the height of the frame
    assert 0.05 < np.mean(fractions) < 0.5


def test_written_folder_reads_back_through_segmentation_folder(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", 3, 96, 64, seed=2)
    folder = SegmentationFolder(root / "images", root / "masks")
    assert len(folder) == 3
    image, mask = folder[1]
    expected_image, expected_mask = SyntheticPeople(3, 96, 64, seed=2)[1]
    np.testing.assert_array_equal(image, expected_image)
    np.testing.assert_array_equal(mask, expected_mask)
    with pytest.raises(OutputError, match="already holds files"):
        write_synthetic_dataset(root, 3, 96, 64, seed=2)
    write_synthetic_dataset(root, 2, 96, 64, seed=2, force=True)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="at least 32x32"):
        SyntheticPeople(3, 16, 96)
    with pytest.raises(ValueError, match="num_images"):
        SyntheticPeople(0)
    with pytest.raises(IndexError):
        SyntheticPeople(2, 64, 64)[2]
