"""The bundle contract: golden-vector layout, manifest schema, preprocessing check."""

import copy
import struct

import numpy as np
import pytest

from alisnet_export.config import load_config
from alisnet_export.errors import DataError
from alisnet_export.golden import decode_golden, encode_golden, read_golden, write_golden
from alisnet_export.manifest import (
    build_manifest,
    check_preprocessing,
    input_section,
    model_section,
    output_section,
    provenance_section,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from alisnet_export.preprocess import load_rgb_image, preprocess


def test_golden_round_trip_preserves_names_dtypes_and_values(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "source_rgb": rng.integers(0, 256, (5, 7, 3), dtype=np.uint8),
        "input": rng.standard_normal((1, 3, 4, 6)).astype(np.float32),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "mask.float": rng.integers(0, 2, (4, 6)).astype(bool),
    }
    write_golden(tmp_path / "g.algv", tensors)
    back = read_golden(tmp_path / "g.algv")
    assert list(back) == list(tensors)
    for k, v in tensors.items():
        assert np.array_equal(back[k], v.astype(np.uint8) if v.dtype == bool else v)
    assert back["mask.float"].dtype == np.uint8


def test_golden_layout_is_the_documented_one():
    data = encode_golden({"x": np.array([1.5, -2.0], dtype=np.float32)})
    assert data[:4] == b"ALGV" and struct.unpack_from("<II", data, 4) == (1, 1)
    assert struct.unpack_from("<H", data, 12) == (1,) and data[14:15] == b"x"
    assert struct.unpack_from("<BBIQ", data, 15) == (1, 1, 2, 8)
    assert np.frombuffer(data[-8:], "<f4").tolist() == [1.5, -2.0]


@pytest.mark.parametrize("mutate, match", [
    (lambda d: b"XXXX" + d[4:], "not a golden-vector file"),
    (lambda d: d[:-3], "truncated"),
    (lambda d: d + b"\0", "trailing bytes"),
    (lambda d: d[:4] + struct.pack("<I", 9) + d[8:], "version 9"),
])
def test_malformed_golden_files_are_refused(mutate, match):
    data = encode_golden({"x": np.zeros((2, 2), np.float32)})
    with pytest.raises(DataError, match=match):
        decode_golden(mutate(data), source="g.algv")


def _manifest(config, golden_source="tests/data/astronaut.png"):
    artifact = {
        "id": "ptl-int8", "format": "ptl", "file": "m.ptl", "size_bytes": 10, "sha256": "0" * 64,
        "precision": "int8", "quantization": {"scheme": "eager-ptq", "backend": "qnnpack"},
        "runtime": {"kind": "pytorch-lite", "bytecode_version": 8},
        "parity": {"status": "passed", "summary": {"mean_iou": 0.99}, "thresholds": {"min_mean_iou": 0.98}},
        "golden_tolerances": {"self_max_abs": 1e-3, "reference_max_abs": None, "reference_min_mask_iou": 0.95},
    }
    return build_manifest(
        model=model_section(config, parameters=123, checkpoint_file="c.pth", checkpoint_sha256="a" * 64,
                            source_format="native", kind="float"),
        input=input_section(config, height=1024, min_hw=(256, 256), max_hw=(2048, 2048), min_pixels=32768),
        output=output_section(config),
        artifacts=[artifact],
        provenance=provenance_section("alisnet-export ptl"),
        golden={"file": "m.golden.algv", "sha256": "b" * 64, "format": "ALGV1", "tensors": {"input": [1, 3, 64, 64]},
                "source": golden_source},
    )


def test_manifest_builds_validates_and_round_trips(tmp_path):
    manifest = _manifest(load_config("alisnet_mnasnet"))
    write_manifest(tmp_path / "m.json", manifest)
    assert read_manifest(tmp_path / "m.json") == manifest


@pytest.mark.parametrize("path, value, match", [
    (("input", "color_order"), "BGR", "color_order"),
    (("input", "normalization", "std"), [0.2, 0.0, 0.2], "std"),
    (("artifacts", 0, "format"), "tflite", "format"),
    (("artifacts", 0, "sha256"), "xyz", "sha256"),
    (("artifacts", 0, "parity"), {"status": "failed"}, "summary"),
    (("artifacts", 0, "parity"), {"status": "not_run"}, "reason"),
])
def test_schema_rejects_broken_manifests_with_the_field_named(path, value, match):
    manifest = copy.deepcopy(_manifest(load_config("alisnet_mnasnet")))
    node = manifest
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(DataError, match=match):
        validate_manifest(manifest)


def test_preprocessing_check_catches_a_changed_normalisation(data_dir):
    cfg = load_config("alisnet_mnasnet")
    image = load_rgb_image(data_dir / "astronaut.png")[100:260, 150:270]
    pre = preprocess(image, mean=cfg.input.mean, std=cfg.input.std, height=128)
    golden = {"source_rgb": image, "input": pre.tensor.numpy()}
    manifest = _manifest(cfg)
    assert check_preprocessing(manifest, golden) == []
    manifest["input"]["normalization"]["mean"] = [0.5, 0.5, 0.5]
    problems = check_preprocessing(manifest, golden)
    assert len(problems) == 1 and "normalisation" in problems[0]
