"""The benchmark's measurements, reports and README pasting (small sizes; `make bench` runs the real thing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alisnet_export.bench import runner as bench


@pytest.fixture(scope="module")
def measured(native_ckpt):
    """Real measurements of the random checkpoint at 128 px, in this process and in a worker process."""
    base = {"ckpt": str(native_ckpt), "threads": 1, "height": 128, "runs": 2, "warmup": 1}
    return {
        "eager": bench.measure({**base, "kind": "eager"}),
        "split": bench.measure({**base, "kind": "pointrend_split"}),
        "flops": bench.measure({**base, "kind": "flops"}),
        "scripted": bench.run_worker({**base, "kind": "scripted"}, timeout_s=300),
    }


def test_measurements_are_real(measured):
    eager = measured["eager"]
    assert eager["input_hw"] == [128, 96]
    assert eager["output_shape"] == [1, 2, 128, 96]
    assert eager["runs"] == 2 and 0 < eager["min_ms"] <= eager["median_ms"] <= eager["p90_ms"]
    assert eager["peak_rss_mb"] >= eager["rss_before_load_mb"] > 0
    # the worker ran in a fresh process and scripted the model: identical logits to eager
    scripted = measured["scripted"]
    assert "error" not in scripted, scripted
    assert scripted["max_abs_logit_vs_eager"] <= 1e-5
    assert scripted["export_seconds"] > 0
    split = measured["split"]
    assert split["coarse"]["median_ms"] > 0 and split["full"]["median_ms"] > 0
    flops = measured["flops"]
    assert 0 < flops["coarse_flops"] < flops["flops"]  # PointRend's point MLP adds FLOPs


@pytest.fixture
def no_cli_subprocess(monkeypatch):
    """Fail any subprocess bench starts except its own worker (``python -m alisnet_export.bench.runner SPEC``), never
    the command line; returns the specs the workers ran."""
    import subprocess

    real_run, specs = subprocess.run, []

    def run(cmd, *args, **kwargs):
        assert list(cmd[1:3]) == ["-m", "alisnet_export.bench.runner"], f"bench ran a subprocess: {cmd}"
        specs.append(json.loads(cmd[3]))
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(bench.subprocess, "run", run)
    return specs


def test_export_runs_the_api_in_a_worker(no_cli_subprocess, native_ckpt, tmp_path):
    """The bundle export (api.prepare + api.bundle) runs in bench's own worker and returns what the table reads."""
    lines: list[str] = []
    result = bench.export_targets(native_ckpt, tmp_path / "bundle", ["ptl:float32"], 128, lines.append)
    assert result["ok"] is True and result["exit_code"] == 0 and result["wall_seconds"] > 0
    (target,) = result["targets"]
    assert target["id"] == "ptl-float32" and target["format"] == "ptl" and target["precision"] == "float32"
    assert Path(target["path"]).is_file() and target["size_bytes"] == Path(target["path"]).stat().st_size
    assert target["export_seconds"] > 0 and target["quantization"] == "none"
    assert target["parity"]["status"] == "passed" and "mean_iou" in target["parity"]["summary"]
    assert json.loads(json.dumps(result)) == result  # plain JSON, as bench.json stores it
    assert lines[0].startswith("exporting ptl:float32 at 128 px")
    # in a worker: later workers inherit this process's memory high-water mark, so it must stay small
    assert [spec["kind"] for spec in no_cli_subprocess] == ["export"]


@pytest.mark.slow
def test_table1_exports_through_the_api(no_cli_subprocess, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "TABLE1_INT8", ("alisnet_mnasnet",))
    rows = bench.table1(tmp_path, lambda m: None)
    assert no_cli_subprocess == []  # the exports ran here, through the api
    int8 = [r for r in rows if r["precision"] == "int8"]
    assert len(int8) == 1 and "error" not in int8[0], int8
    assert int8[0]["config"] == "alisnet_mnasnet" and int8[0]["paper_mb"] == 4.0
    assert int8[0]["size_bytes"] == (tmp_path / "table1" / "alisnet_mnasnet-int8.ptl").stat().st_size
    assert {r["config"] for r in rows if r["precision"] == "float32"} >= {"alisnet_mnasnet"}


def test_gemm_rate_is_plausible():
    rate = bench.gemm_gflops(1, n=256, min_seconds=0.2)
    assert 0.1 < rate < 10_000


def test_worker_reports_errors_instead_of_crashing(tmp_path):
    out = bench.run_worker({"kind": "eager", "ckpt": str(tmp_path / "missing.pth"), "threads": 1, "height": 128,
                            "runs": 1, "warmup": 0}, timeout_s=120)
    assert "error" in out and "missing.pth" in out["error"]


def _results(measured, native_ckpt):
    eager, split = measured["eager"], measured["split"]
    floor = measured["flops"]["flops"] / 1e9 * 1000.0  # pretend 1 GFLOP/s
    return {
        "checkpoint": {"path": str(native_ckpt), "variant": "alisnet_mnasnet", "sha256": "0" * 64},
        "machine": {"cpu": "test cpu", "cores": 2, "threads": 1, "system": "Linux x86_64", "python": "3.11",
                    "torch": "2.14.1"},
        "options": {"runs": 2, "warmup": 1},
        "input_hw": [128, 96],
        "bench_seconds": 12.0,
        "compute": {**measured["flops"], "gflops": 1.0, "floor_ms": floor},
        "artifacts": [
            {"name": "eager float32", "format": "torch eager", "precision": "float32", "size_bytes": 14_000_000,
             **eager, "floor_ratio": eager["median_ms"] / floor},
            {"name": "scripted float32", "format": "TorchScript", "precision": "float32", "size_bytes": 14_000_000,
             **measured["scripted"], "floor_ratio": 1.0},
            {"name": "ptl-int8", "format": "ptl", "precision": "int8", "size_bytes": 4_000_000, "median_ms": 50.0,
             "p90_ms": 60.0, "peak_rss_mb": 900.0, "export_seconds": 30.0, "floor_ratio": 0.5,
             "parity": {"status": "failed", "summary": {"mean_iou": 0.9662, "mean_boundary_px": 0.53,
                                                         "max_abs_logit": 3.0}}},
            {"name": "pte-float32", "format": "pte", "precision": "float32", "size_bytes": 14_000_000, "median_ms": 70.0,
             "p90_ms": 80.0, "peak_rss_mb": 900.0, "export_seconds": 20.0, "floor_ratio": 0.7,
             "parity": {"status": "passed", "summary": {"mean_iou": 1.0, "mean_boundary_px": 0.0, "max_abs_logit": 0.05,
                                                         "max_abs_logit_outside_ties": 8e-5, "max_flip_fraction": 3e-6}}},
            {"name": "onnx-int8", "format": "onnx", "precision": "int8", "error": "exit code 4"},
        ],
        "scaling": [{"height": 128, "input_hw": [128, 96], **split},
                    {"height": 160, "input_hw": [160, 128], "full": {"median_ms": split["full"]["median_ms"] * 1.5},
                     "coarse": {"median_ms": split["coarse"]["median_ms"] * 1.6}, "peak_rss_mb": 1000.0}],
        "table1": [{"config": "alisnet_mnasnet", "precision": "int8", "params": None, "size_bytes": 4_004_000,
                    "paper_name": "- top-down path = ALiSNet", "paper_mb": 4.0}],
    }


def test_report_plot_and_readme(measured, native_ckpt, tmp_path):
    results = _results(measured, native_ckpt)
    md = bench.markdown_report(results)
    assert "| ptl-int8 | 4.00 | 50 | 60 | 0.5 | 900 | 30.0 | failed: IoU 0.9662, bnd 0.53 px |" in md
    assert "| onnx-int8 | — |" in md and "error: exit code 4" in md
    # a float row shows the gate's value (outside PointRend's tie zone) and the raw maximum beside it
    assert "passed: max\\|Δ\\| 8.0e-05 outside ties, 0.0003% px flipped (raw 5.0e-02)" in md
    assert "vs eager" in md  # the scripted row's parity
    assert "| alisnet_mnasnet | int8 | — | 4.00 | 4.0 |" in md
    assert "Latency grows as pixels^" in md and "test cpu" in md
    (tmp_path / "bench.md").write_text(md)
    bench.plot_results(results, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{bench.README_BEGIN}\nold numbers\n{bench.README_END}\nafter\n")
    assert bench.update_readme(readme, tmp_path)
    text = readme.read_text()
    assert "old numbers" not in text and "| ptl-int8 | 4.00 |" in text and "![latency vs size](bench.png)" in text
    assert text.startswith("# x\n\nbefore\n") and text.endswith("after\n")
    assert bench.update_readme(readme, tmp_path)  # idempotent: markers survive
    assert text == readme.read_text()
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    assert not bench.update_readme(bare, tmp_path) and bare.read_text() == "no markers\n"


def test_pointrend_time_within_the_timings_spread_is_not_reported_as_a_number(measured, native_ckpt):
    results = _results(measured, native_ckpt)
    timing = lambda median, p90: {"median_ms": median, "p90_ms": p90}  # noqa: E731
    results["scaling"] = [
        {"height": 512, "input_hw": [512, 384], "full": timing(225, 240), "coarse": timing(120, 130), "peak_rss_mb": 800.0},
        # coarse measured slower than full: the difference is noise, not a negative PointRend time
        {"height": 1536, "input_hw": [1536, 1152], "full": timing(2150, 2338), "coarse": timing(2300, 2334),
         "peak_rss_mb": 1200.0},
    ]
    md = bench.markdown_report(results)
    assert "| 512x384 | 225 | 120 | 105 | 47% |" in md
    assert "| 1536x1152 | 2150 | 2300 | within noise (±222) | — |" in md
    assert "-150" not in md and "PointRend's own growth is not resolved" in md  # one resolved height: no exponent
    assert bench.pointrend_noise_ms(results["scaling"][0]) == 25.0


def test_repo_readme_has_bench_markers():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert text.count(bench.README_BEGIN) == 1 and text.count(bench.README_END) == 1


@pytest.mark.parametrize("args, message", [
    (["--scaling-heights", "500,1024"], "multiple of 32"),
    (["--scaling-heights", "abc"], "comma-separated"),
    (["--targets", "coreml"], "Core ML cannot predict"),
    (["--targets", "tflite"], "unknown target"),
])
def test_bench_cli_refuses_bad_options(run_cli, native_ckpt, tmp_path, args, message):
    code, out, err = run_cli("bench", native_ckpt, "-o", tmp_path / "res", *args)
    assert code == 2 and message in err
    assert not (tmp_path / "res").exists()


def test_bench_refuses_unwritable_output(run_cli, native_ckpt, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run_cli("bench", native_ckpt, "-o", blocker / "res", "--json")
    assert code == 3
    assert json.loads(out)["ok"] is False and "cannot write" in err
