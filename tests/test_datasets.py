"""Image/mask folders, COCO person annotations (polygons, both RLE forms), and the training transform."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from alisnet_export.data import CocoPersonDataset, SegmentationFolder, TrainTransform
from alisnet_export.data.coco_masks import (
    decode_rle_counts,
    encode_rle_counts,
    mask_to_rle,
    polygons_to_mask,
    rle_to_mask,
)
from alisnet_export.errors import DataError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _rgb(h=80, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _mask(h=80, w=64):
    m = np.zeros((h, w), dtype=np.uint8)
    m[10:60, 20:40] = 255
    return m


def _folder(tmp_path, images, masks, size=(80, 64), mask_size=None):
    img_dir, mask_dir = tmp_path / "images", tmp_path / "masks"
    img_dir.mkdir(exist_ok=True)
    mask_dir.mkdir(exist_ok=True)
    for name in images:
        Image.fromarray(_rgb(*size)).save(img_dir / name)
    for name in masks:
        Image.fromarray(_mask(*(mask_size or size))).save(mask_dir / name)
    return img_dir, mask_dir


# -- SegmentationFolder ---------------------------------------------------------------------------
def test_folder_pairs_images_and_masks_by_stem(tmp_path):
    img_dir, mask_dir = _folder(tmp_path, ["b.jpg", "a.png"], ["a.png", "b.png"])
    (img_dir / "notes.txt").write_text("not an image")
    data = SegmentationFolder(img_dir, mask_dir)
    assert [p.stem for p, _ in data.pairs] == ["a", "b"]
    image, mask = data[0]
    assert image.shape == (80, 64, 3) and image.dtype == np.uint8
    assert mask.dtype == bool and mask.sum() == 50 * 20


def test_unmatched_stems_are_listed_on_both_sides(tmp_path):
    img_dir, mask_dir = _folder(tmp_path, ["a.png", "b.png", "c.jpg"], ["a.png", "x.png"])
    with pytest.raises(DataError) as err:
        SegmentationFolder(img_dir, mask_dir)
    msg = str(err.value)
    assert "2 image(s) without a mask: b.png, c.jpg" in msg
    assert "1 mask(s) without an image: x.png" in msg
    assert str(img_dir) in msg and "same stem" in msg


def test_size_mismatch_names_both_files(tmp_path):
    img_dir, mask_dir = _folder(tmp_path, ["a.png"], ["a.png"], size=(80, 64), mask_size=(64, 64))
    with pytest.raises(DataError, match=r"a\.png is 64x80 but .*a\.png is 64x64"):
        SegmentationFolder(img_dir, mask_dir)
    lazy = SegmentationFolder(img_dir, mask_dir, check_sizes=False)  # caught when read, too
    with pytest.raises(DataError, match="must have its image's size"):
        lazy[0]


def test_missing_empty_and_ambiguous_folders(tmp_path):
    img_dir, mask_dir = _folder(tmp_path, ["a.png"], ["a.png"])
    with pytest.raises(DataError, match="does not exist"):
        SegmentationFolder(tmp_path / "nope", mask_dir)
    with pytest.raises(DataError, match="is a file"):
        SegmentationFolder(img_dir / "a.png", mask_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="holds no image files"):
        SegmentationFolder(img_dir, empty)
    Image.fromarray(_rgb()).save(img_dir / "a.jpg")
    with pytest.raises(DataError, match="share a stem.*a.jpg / a.png"):
        SegmentationFolder(img_dir, mask_dir)


def test_grayscale_images_are_refused_when_read(tmp_path):
    img_dir, mask_dir = _folder(tmp_path, [], ["g.png"])
    Image.fromarray(_rgb()[..., 0]).save(img_dir / "g.png")
    data = SegmentationFolder(img_dir, mask_dir)
    with pytest.raises(DataError, match="g.png: grayscale image"):
        data[0]


# -- COCO RLE -------------------------------------------------------------------------------------
def test_compressed_rle_known_strings():
    assert decode_rle_counts("32") == [3, 2]
    assert decode_rle_counts("X1") == [40]  # 40 = 8 + 1 * 32: two 5-bit groups
    assert decode_rle_counts("3252") == [3, 2, 5, 4]  # from the fourth count on: the delta to two back (4 - 2)
    assert decode_rle_counts("552L") == [5, 5, 2, 1]  # a negative delta (1 - 5 = -4)
    for counts in ([3, 2], [40], [3, 2, 5, 4], [5, 5, 2, 1], [0, 7, 1000, 3, 123456, 1]):
        assert decode_rle_counts(encode_rle_counts(counts)) == list(counts)
    with pytest.raises(ValueError, match="invalid character"):
        decode_rle_counts("3 2")


def test_rle_is_column_major_and_round_trips():
    mask = np.array([[0, 1, 1], [0, 1, 0]], dtype=bool)
    assert mask_to_rle(mask, compressed=False) == {"size": [2, 3], "counts": [2, 3, 1]}
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.random((23, 17)) < 0.4
        m[0, 0] = True  # counts then start with a zero-length run of 0s
        for compressed in (True, False):
            np.testing.assert_array_equal(rle_to_mask(mask_to_rle(m, compressed=compressed)), m)
    with pytest.raises(ValueError, match="sum to"):
        rle_to_mask({"size": [2, 3], "counts": [2, 3]})


def _coco(tmp_path, *, categories=None, images=None, person_ok=True):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir(exist_ok=True)
    for name in ("one.jpg", "two.png", "empty.png"):
        Image.fromarray(_rgb(80, 64)).save(img_dir / name)
    crowd = np.zeros((80, 64), dtype=bool)
    crowd[50:80, 0:64] = True
    second = np.zeros((80, 64), dtype=bool)
    second[5:25, 30:50] = True
    data = {
        "images": images or [
            {"id": 1, "file_name": "one.jpg", "height": 80, "width": 64},
            {"id": 2, "file_name": "two.png", "height": 80, "width": 64},
            {"id": 3, "file_name": "empty.png", "height": 80, "width": 64},
        ],
        "categories": categories or [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 40, 10, 40]]},
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentation": [[40, 10, 60, 10, 60, 30], [40, 60, 50, 60, 50, 70]]},
            {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": mask_to_rle(crowd, compressed=False)},
            {"id": 13, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": [[0, 0, 63, 0, 63, 5]]},
            {"id": 14, "image_id": 2, "category_id": 1, "iscrowd": 0, "segmentation": mask_to_rle(second, compressed=True)},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, img_dir, crowd, second


def test_coco_merges_person_instances_and_ignores_crowds(tmp_path):
    path, img_dir, crowd, second = _coco(tmp_path)
    data = CocoPersonDataset(path, img_dir)
    assert len(data) == 3
    image, target = data[0]
    assert image.shape == (80, 64, 3) and target.dtype == np.uint8
    persons = polygons_to_mask([[10, 10, 30, 10, 30, 40, 10, 40], [40, 10, 60, 10, 60, 30], [40, 60, 50, 60, 50, 70]], 80, 64)
    np.testing.assert_array_equal(target == 1, persons)  # the dog (id 13) is not merged in
    np.testing.assert_array_equal(target == 255, crowd & ~persons)
    assert (target[~persons & ~crowd] == 0).all()
    np.testing.assert_array_equal(data[1][1] == 1, second)  # compressed RLE
    assert data[2][1].max() == 0  # person-free image kept as a negative
    merged = CocoPersonDataset(path, img_dir, crowd_as_ignore=False, include_empty=False)
    assert len(merged) == 2 and 255 not in merged[0][1] and (merged[0][1] == 1).sum() == (persons | crowd).sum()


def test_coco_errors_say_what_is_wrong(tmp_path):
    path, img_dir, _, _ = _coco(tmp_path)
    with pytest.raises(DataError, match="no such annotation file"):
        CocoPersonDataset(tmp_path / "missing.json", img_dir)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        CocoPersonDataset(bad, img_dir)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="no 'annotations' list"):
        CocoPersonDataset(bad, img_dir)
    nop, _, _, _ = _coco(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path, categories=[{"id": 1, "name": "cat"}])
    with pytest.raises(DataError, match="no category named 'person'; categories are cat"):
        CocoPersonDataset(nop, img_dir)
    with pytest.raises(DataError, match="images folder does not exist"):
        CocoPersonDataset(path, tmp_path / "nowhere")
    (img_dir / "two.png").unlink()
    with pytest.raises(DataError, match="1 image file.* missing .*two.png"):
        CocoPersonDataset(path, img_dir)


def test_coco_size_disagreements_are_reported(tmp_path):
    images = [{"id": 1, "file_name": "one.jpg", "height": 70, "width": 64},
              {"id": 2, "file_name": "two.png", "height": 80, "width": 64}]
    path, img_dir, _, _ = _coco(tmp_path, images=images)
    data = CocoPersonDataset(path, img_dir)
    with pytest.raises(DataError, match="one.jpg is 64x80 but .* says 64x70"):
        data[0]
    raw = json.loads(path.read_text())
    raw["images"][1]["height"] = 90
    raw["images"][1]["file_name"] = "empty.png"
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="annotation 14 of image empty.png: RLE size"):
        CocoPersonDataset(path, img_dir).target(1)


# -- TrainTransform -------------------------------------------------------------------------------
def test_transform_shapes_values_and_determinism():
    t = TrainTransform((64, 96), MEAN, STD)
    image, mask = _rgb(120, 90), _mask(120, 90) > 0
    x, y = t(image, mask, np.random.default_rng(1))
    assert x.shape == (3, 64, 96) and x.dtype == torch.float32
    assert y.shape == (64, 96) and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) <= {0, 1, 255}
    x2, y2 = t(image, mask, np.random.default_rng(1))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    with pytest.raises(ValueError, match="multiples of 32"):
        TrainTransform((60, 96), MEAN, STD)


def test_transform_pads_with_the_ignore_label_and_the_mean_colour():
    t = TrainTransform((64, 96), MEAN, STD, scale_range=(1.0, 1.0), hflip=0.0, color_jitter=0.0)
    image = np.full((32, 16, 3), 200, dtype=np.uint8)  # scaled to 64 x 32: 64 columns of padding
    mask = np.ones((32, 16), dtype=bool)
    x, y = t(image, mask, np.random.default_rng(0))
    assert (y == 255).sum() == 64 * 64 and (y == 1).sum() == 64 * 32
    pad = (y == 255).unsqueeze(0).expand_as(x)
    assert x[pad].abs().max() < 0.02  # the mean colour normalises to ~0
    coco_target = np.where(mask, 255, 0).astype(np.uint8)  # ignore labels survive the transform
    _, y = t(image, coco_target, np.random.default_rng(0))
    assert set(torch.unique(y).tolist()) == {255}


def test_transform_flip_mirrors_image_and_target():
    kwargs = dict(scale_range=(1.0, 1.0), color_jitter=0.0)
    image, mask = _rgb(64, 96), _mask(64, 96) > 0
    x0, y0 = TrainTransform((64, 96), MEAN, STD, hflip=0.0, **kwargs)(image, mask, np.random.default_rng(0))
    x1, y1 = TrainTransform((64, 96), MEAN, STD, hflip=1.0, **kwargs)(image, mask, np.random.default_rng(0))
    assert torch.equal(x1, x0.flip(-1)) and torch.equal(y1, y0.flip(-1))
