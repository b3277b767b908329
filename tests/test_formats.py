"""The formats table: every row resolves to a working exporter and runner factory, and the facts that used
to live in several tables (suffixes, precisions, aliases, gates, golden tolerances) agree with it."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from alisnet_export.errors import DataError, ExportError
from alisnet_export.exporters.base import Exporter, ExportOptions
from alisnet_export.formats import (FORMATS, PRECISIONS, SCHEMES, Target, bench_targets, bundle_targets, format_of_path,
                                    format_spec, parse_targets)
from alisnet_export.parity import Thresholds, default_thresholds
from alisnet_export.runtimes.base import detect_format, runner_for


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_row_names_its_exporter_and_runner(name):
    spec = FORMATS[name]
    exporter = spec.new_exporter()
    assert isinstance(exporter, Exporter) and exporter.format == name
    assert isinstance(exporter.options, ExportOptions)
    assert exporter.suffix == spec.suffix and exporter.precisions == spec.precisions
    assert spec.default_precision in spec.precisions and spec.float_precision in spec.precisions
    assert set(spec.aliases.values()) <= set(spec.precisions)
    assert set(spec.bench_precisions) <= set(spec.precisions)
    factory = runner_for(name)
    assert callable(factory) and list(inspect.signature(factory).parameters) == ["path"]
    for suffix in spec.suffixes:
        assert detect_format(Path(f"model{suffix.upper()}")) == name


def test_every_precision_has_gates_and_golden_tolerances():
    precisions = {p for spec in FORMATS.values() for p in spec.precisions}
    assert precisions == set(PRECISIONS)
    for name, row in PRECISIONS.items():
        gates = default_thresholds(name)
        assert isinstance(gates, Thresholds) and gates.to_dict() == dict(row.gates)
        assert {"self_max_abs", "reference_max_abs", "reference_min_mask_iou"} == set(row.golden)
    assert default_thresholds("int8").min_mean_iou == 0.99  # README "Parity gates"
    with pytest.raises(ValueError, match="no default parity thresholds"):
        default_thresholds("int4")


def test_targets_parse_with_the_table_aliases():
    assert parse_targets("ptl,onnx:fp32,coreml:int8") == [Target("ptl", "int8"), Target("onnx", "float32"),
                                                           Target("coreml", "int8-weights")]
    assert [t.precision for t in parse_targets(bundle_targets(), float_=True)] == ["float32", "float32", "float32",
                                                                                   "float16"]
    assert bench_targets()[0] == "ptl:int8" and not any(t.startswith("coreml") for t in bench_targets())
    with pytest.raises(ValueError, match="choose from ptl, pte, onnx, coreml"):
        parse_targets("tflite")
    with pytest.raises(ValueError, match="coreml: unknown precision 'int4'; choose from"):
        parse_targets("coreml:int4")
    with pytest.raises(ValueError, match="listed twice"):
        parse_targets("ptl,ptl:int8")
    with pytest.raises(ValueError):
        format_spec("tflite")


def test_unknown_suffix_lists_the_known_ones():
    with pytest.raises(DataError, match=r"expected one of .*\.mlpackage.*\.onnx.*\.ort.*\.pte.*\.ptl"):
        format_of_path(Path("model.tflite"))


def test_variants_are_options_of_their_exporter():
    """.ort, .bpte and Core ML image input: fields of the format's typed options, nothing else."""
    onnx = format_spec("onnx").new_exporter({"ort_format": True})
    assert onnx.suffix == ".ort" and onnx.sidecar_suffixes == (".required_operators.config",)
    pte = format_spec("pte").new_exporter({"bundled_program": True})
    assert pte.suffix == ".pte" and pte.sidecar_suffixes == (".bpte",)
    assert format_spec("coreml").new_exporter({"image_input": True}).options.image_input is True
    with pytest.raises(ExportError, match="its options are: per_channel, equalize, keep_float, opset, ort_format"):
        format_spec("onnx").new_exporter({"opset_version": 18})
    with pytest.raises(ExportError, match="options must be PtlOptions"):
        format_spec("ptl").new_exporter(onnx.options)
    ptl = format_spec("ptl").new_exporter({"keep_float": {"auto": True, "candidates": 3}})
    assert ptl.options.keep_float.auto and ptl.options.keep_float.candidates == 3
    assert dataclasses.asdict(ptl.options)["bytecode_version"] == 8
    with pytest.raises(ExportError, match="bytecode version 6"):
        format_spec("ptl").new_exporter({"bytecode_version": 6})


def test_every_scheme_an_exporter_writes_is_described():
    """Each summary text belongs to a scheme some exporter writes, and each scheme written has one."""
    import alisnet_export.exporters as pkg

    sources = "".join(p.read_text(encoding="utf-8") for p in Path(pkg.__file__).parent.glob("*.py"))
    assert {s for s in SCHEMES if f'"{s}"' in sources} == set(SCHEMES)
