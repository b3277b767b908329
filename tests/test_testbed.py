"""The exact-ground-truth testbed and the image sets built on it: disjoint splits, cached renders, default
calibration and parity sets per checkpoint, and the warnings that keep a gate from measuring its own
calibration images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alisnet_export.data import testbed as tb
from alisnet_export.data.testbed import SPLITS, TESTBED_HEIGHT, TESTBED_WIDTH, write_testbed_split
from alisnet_export.errors import DataError
from alisnet_export.samples import (
    FALLBACK_CALIBRATION_SET,
    FALLBACK_PARITY_SET,
    MIN_CALIBRATION_IMAGES,
    ImageSet,
    calibration_warnings,
    default_image_sets,
    resolve_image_set,
    sample_image_paths,
)
from alisnet_export.zoo import zoo_entries


def test_splits_use_disjoint_seed_streams_and_render_different_people():
    seeds = [s.seed for s in SPLITS.values()]
    assert len(set(seeds)) == len(seeds)
    # far enough apart that no split's image indices reach another's stream
    assert min(abs(a - b) for i, a in enumerate(seeds) for b in seeds[i + 1:]) >= 1_000_000
    first = [SPLITS[name].dataset(1, height=128, width=96)[0][0] for name in ("train", "heldout", "calibration")]
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])


def test_testbed_images_render_once_at_the_deployment_size_and_are_reused(tmp_path):
    paths = tb.testbed_images("calibration", 2, root=tmp_path)
    assert [p.name for p in paths] == ["000000.png", "000001.png"]
    with Image.open(paths[0]) as im:
        assert im.size == (TESTBED_WIDTH, TESTBED_HEIGHT)
    mask = np.asarray(Image.open(tmp_path / "testbed" / "calibration" / "masks" / "000000.png"))
    assert set(np.unique(mask)) <= {0, 255} and 0.01 < (mask > 0).mean() < 0.6
    # identical to the split's own generator, bit for bit
    image, person = SPLITS["calibration"].dataset(2)[0]
    assert np.array_equal(np.asarray(Image.open(paths[0])), image) and np.array_equal(mask > 0, person)
    before = paths[0].stat().st_mtime_ns
    assert tb.testbed_images("calibration", 2, root=tmp_path) == paths and paths[0].stat().st_mtime_ns == before
    assert not list((tmp_path / "testbed" / "calibration" / "images").glob(".*tmp"))  # no temp file left behind


def test_write_testbed_split_renders_shards_into_one_folder(tmp_path):
    write_testbed_split("heldout", tmp_path, 1)
    write_testbed_split("heldout", tmp_path, 1, start=1)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["000000.png", "000001.png"]
    with pytest.raises(ValueError, match="unknown testbed split"):
        write_testbed_split("test", tmp_path / "x", 1)


@pytest.mark.parametrize("spec", ["testbed:", "testbed:nope", "testbed:heldout:x", "testbed:heldout:2:3", "testbed:heldout:0"])
def test_bad_named_sets_say_what_is_expected(spec):
    with pytest.raises(DataError, match="testbed:"):
        resolve_image_set([spec], default="samples")


def test_street_frames_are_shipped_real_frames_in_two_disjoint_splits():
    calibration = resolve_image_set(["street-frames:calibration"], default="samples")
    heldout = resolve_image_set(["street-frames:heldout"], default="samples")
    assert (len(calibration.paths), len(heldout.paths)) == (32, 8)
    assert not {p.name for p in calibration.paths} & {p.name for p in heldout.paths}
    assert Image.open(heldout.paths[0]).size == (768, 576)
    with pytest.raises(DataError, match="street-frames:calibration or street-frames:heldout"):
        resolve_image_set(["street-frames:train"], default="samples")


def test_named_sets_files_and_the_default_resolve_to_files():
    samples = resolve_image_set([], default="samples")
    assert samples.paths == tuple(sample_image_paths()) and samples.source == "samples"
    given = resolve_image_set([sample_image_paths()[0]], default="testbed:heldout")
    assert given.paths == (sample_image_paths()[0],)
    assert given.to_dict() == {"source": str(sample_image_paths()[0]), "images": 1, "files": [sample_image_paths()[0].name]}


def _pngs(folder, n, offset=0):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        Image.fromarray(np.full((32, 32, 3), i + offset, dtype=np.uint8)).save(path)
        out.append(path)
    return out


def test_calibration_warnings_for_few_images_and_for_parity_images(tmp_path):
    parity = ImageSet("p", tuple(_pngs(tmp_path / "parity", 3)))
    many = ImageSet("c", tuple(_pngs(tmp_path / "cal", 40, offset=100)))
    assert calibration_warnings(many, parity) == []
    few = ImageSet("c", many.paths[:MIN_CALIBRATION_IMAGES - 1])
    (warning,) = calibration_warnings(few, parity)
    assert f"fewer than {MIN_CALIBRATION_IMAGES}" in warning
    # the same bytes under another name still count as a parity image
    copy = tmp_path / "copy.png"
    copy.write_bytes(parity.paths[1].read_bytes())
    (warning,) = calibration_warnings(ImageSet("c", many.paths + (copy,)), parity)
    assert "also parity images (copy.png)" in warning and "disjoint" in warning


def test_every_shipped_checkpoint_calibrates_and_checks_on_disjoint_sets():
    for entry in zoo_entries().values():
        parity, calibration = default_image_sets(entry.sha256)
        assert (parity, calibration) == (entry.image_sets["parity"], entry.image_sets["calibration"])
        assert parity != calibration and calibration.split(":")[1] == "calibration"
        if parity.startswith("street-frames:"):  # shipped files: check them as the export does
            parity_set, calibration_set = (resolve_image_set([spec], default="samples") for spec in (parity, calibration))
            assert len(calibration_set.paths) >= 32 and calibration_warnings(calibration_set, parity_set) == []
    assert default_image_sets("0" * 64) == (FALLBACK_PARITY_SET, FALLBACK_CALIBRATION_SET)
    assert default_image_sets(None) == (FALLBACK_PARITY_SET, FALLBACK_CALIBRATION_SET)


def test_export_records_both_sets_and_warns_on_overlap(run_cli, tmp_path, random_mbv2_ckpt):
    """Calibrating on the parity photos is allowed but said aloud, and both sets land in the manifest."""
    code, out, err = run_cli("ptl", random_mbv2_ckpt, "--height", "128", "--no-person-crops", "--images", "samples",
                             "--calibration-images", "samples", "-o", tmp_path, "--json")
    assert code in (0, 1), err  # a random model's int8 gate fails; the records are what is tested
    assert "also parity images" in err and "fewer than 16" in err
    entry = json.loads((tmp_path / "alisnet_mobilenetv2-int8.manifest.json").read_text())["artifacts"][0]
    assert entry["quantization"]["calibration"]["source"] == "samples"
    assert entry["quantization"]["calibration"]["files"] == [p.name for p in sample_image_paths()]
    assert entry["parity"]["images"] == {"source": "samples", "images": 2, "files": [p.name for p in sample_image_paths()]}
