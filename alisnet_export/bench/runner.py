"""Benchmarks: size, latency, memory, export time and parity of every format, side by side.

``alisnet-export bench`` / ``make bench``. One run:

1. exports every target the tool can run here (``.ptl``, ``.pte`` and ONNX, each int8 and fp32) into one
   bundle through the Python API (:func:`api.prepare`, :func:`api.bundle`: what ``alisnet-export bundle``
   runs), which records each export's wall time and parity gate;
2. times each artifact, plus the eager float model, the scripted (TorchScript, frozen) float model and
   the coarse-only ablation (no PointRend, paper Table 3), in a fresh process per artifact with the
   thread count pinned: median and p90 latency over ``runs`` after ``warmup`` runs, and the process's
   peak resident memory;
3. measures the model's FLOPs (``torch.utils.flop_counter``) and this machine's fp32 GEMM rate, so every
   latency is shown against the compute floor (FLOPs / GEMM rate);
4. measures PointRend's share of the runtime, and how latency and memory grow with the input height;
5. reproduces the paper's Table 1 (sizes of the variants) with our numbers beside the paper's.

Outputs: ``bench.json`` (everything), ``bench.md`` (the tables) and ``bench.png`` (latency vs size,
labelled with parity). :func:`update_readme` pastes the tables between markers in the README, so the
numbers there are always the benchmark's, never typed by hand.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..allocator import keep_freed_memory
from ..errors import DataError, ExportError, OutputError
from ..formats import bench_targets

__all__ = [
    "BenchOptions",
    "run_bench",
    "measure",
    "markdown_report",
    "plot_results",
    "update_readme",
    "README_BEGIN",
    "README_END",
]

#: int8 exports of these configs are measured for Table 1 (random weights: the size does not depend on them)
TABLE1_INT8 = ("mnasnet_fpn_pointrend", "alisnet_mnasnet")
#: every target this machine can run (Core ML predicts on macOS only): the formats table's bench column
DEFAULT_TARGETS = bench_targets()
README_BEGIN = "<!-- bench:begin (written by `make bench`; do not edit by hand) -->"
README_END = "<!-- bench:end -->"


@dataclass
class BenchOptions:
    height: int = 1024
    runs: int = 10
    warmup: int = 2
    threads: int = 0  # 0: every core
    targets: tuple[str, ...] = DEFAULT_TARGETS
    scaling_heights: tuple[int, ...] = (512, 768, 1024, 1536)
    scaling_runs: int = 5
    table1: bool = True
    timeout_s: float = 900.0  # per worker process

    def __post_init__(self) -> None:
        if self.height % 32 or self.height < 128:
            raise DataError(f"bench height {self.height} must be a multiple of 32 and at least 128")
        for h in self.scaling_heights:
            if h % 32 or h < 128:
                raise DataError(f"scaling height {h} must be a multiple of 32 and at least 128")
        if self.runs < 1 or self.warmup < 0 or self.scaling_runs < 1:
            raise DataError("bench needs runs >= 1, warmup >= 0 and scaling runs >= 1")
        if not self.threads:
            self.threads = os.cpu_count() or 1


def portrait_size(height: int) -> tuple[int, int]:
    """(H, W) of the benchmark input: a 3:4 portrait (a phone photo cropped to the person), W a multiple of 32."""
    return height, max(32, int(round(height * 0.75 / 32)) * 32)


# --------------------------------------------------------------------------------------------------
# measurements that run inside one worker process


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _bench_input(height: int, mean: Sequence[float], std: Sequence[float]) -> Any:
    """A real photo (the astronaut) resized to a portrait ``height`` and normalised like every artifact's input."""
    import numpy as np

    from ..preprocess import load_rgb_image, normalize, resize_rgb
    from ..samples import sample_image_paths

    path = next(p for p in sample_image_paths() if p.stem == "astronaut")
    h, w = portrait_size(height)
    image = load_rgb_image(path)
    x = normalize(resize_rgb(image, (h, w)), mean, std)
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def _time_calls(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def _stats(ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(ms)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"median_ms": statistics.median(ordered), "p90_ms": p90, "min_ms": ordered[0], "runs": len(ordered)}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process (the worker): load ``spec['kind']``, time it, report memory.

    Kinds: ``eager`` / ``coarse`` (the float model with / without PointRend), ``scripted`` (TorchScript,
    frozen), ``artifact`` (any exported file, by its runner), ``flops``, ``gemm``; and ``export``
    (:func:`export_bundle`, threads not pinned).
    """
    if spec["kind"] == "export":
        return export_bundle(spec)
    import numpy as np
    import torch

    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    kind = spec["kind"]
    if kind == "gemm":
        return {"gflops": gemm_gflops(threads)}
    rss_before = _rss_mb()
    height = int(spec["height"])
    from ..checkpoint import load_checkpoint

    loaded = load_checkpoint(Path(spec["ckpt"]), None, pointrend=False if kind == "coarse" else None)
    x_np = _bench_input(height, loaded.config.input.mean, loaded.config.input.std)
    result: dict[str, Any] = {"kind": kind, "input_hw": list(x_np.shape[2:]), "threads": threads}
    t0 = time.perf_counter()
    if kind in ("eager", "coarse", "scripted", "flops", "pointrend_split"):
        model = loaded.build_model().eval()
        x = torch.from_numpy(x_np)
        if kind == "flops":
            from torch.utils.flop_counter import FlopCounterMode

            with torch.inference_mode():
                counter = FlopCounterMode(display=False)
                with counter:
                    model(x)
                total = counter.get_total_flops()
                counter_c = FlopCounterMode(display=False)
                with counter_c:
                    model.forward_coarse(x)
            return {"flops": int(total), "coarse_flops": int(counter_c.get_total_flops()), "input_hw": list(x.shape[2:])}
        if kind == "pointrend_split":
            with torch.inference_mode():
                full = _time_calls(lambda: model(x), int(spec["runs"]), int(spec["warmup"]))
                coarse = _time_calls(lambda: model.forward_coarse(x), int(spec["runs"]), int(spec["warmup"]))
            result.update({"full": _stats(full), "coarse": _stats(coarse), "peak_rss_mb": _peak_rss_mb(),
                           "rss_before_load_mb": rss_before})
            return result
        fn: Callable[[], Any]
        if kind == "scripted":
            with torch.inference_mode():
                reference = model(x)
            s0 = time.perf_counter()
            scripted = torch.jit.freeze(torch.jit.script(model))
            result["export_seconds"] = time.perf_counter() - s0
            with torch.inference_mode():
                result["max_abs_logit_vs_eager"] = float((scripted(x) - reference).abs().max())

            def fn() -> Any:
                with torch.inference_mode():
                    return scripted(x)
        else:
            def fn() -> Any:
                with torch.inference_mode():
                    return model(x)
    elif kind == "artifact":
        from ..runtimes.base import open_runner

        path = Path(spec["path"])
        if path.suffix == ".pte":
            try:  # ExecuTorch's XNNPACK threadpool defaults to every core; pin it like the others
                from executorch.extension.pybindings import portable_lib

                portable_lib._unsafe_reset_threadpool(threads)
                result["executorch_threads"] = int(portable_lib._threadpool_get_thread_count())
            except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - older ExecuTorch
                result["executorch_threads"] = None
        if path.suffix in (".onnx", ".ort"):  # ONNX Runtime's intra-op pool, pinned like the others
            from ..runtimes.onnx_runner import OnnxRuntimeRunner

            runner: Any = OnnxRuntimeRunner(path, threads=threads)
        else:
            runner = open_runner(path)

        def fn() -> Any:
            return runner(x_np)
    else:
        raise ValueError(f"unknown measurement kind {kind!r}")
    result["load_seconds"] = time.perf_counter() - t0
    out = fn()
    result["output_shape"] = list(np.asarray(out).shape)
    result.update(_stats(_time_calls(fn, int(spec["runs"]), int(spec["warmup"]))))
    result["rss_before_load_mb"] = rss_before
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def gemm_gflops(threads: int, n: int = 1024, min_seconds: float = 1.5) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s, best of repeated ``n x n`` products)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / 4)
    return 2 * n**3 / best / 1e9


def run_worker(spec: dict[str, Any], timeout_s: Optional[float]) -> dict[str, Any]:
    """:func:`measure` in a fresh Python process (threads pinned when ``spec`` has ``threads``; ``timeout_s``
    None: no limit). Its peak memory is its own while this process stays smaller (see :func:`export_targets`)."""
    env = dict(os.environ)
    if "threads" in spec:
        threads = str(spec["threads"])
        env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    cmd = [sys.executable, "-m", "alisnet_export.bench.runner", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": f"worker printed no result: {proc.stdout[-200:]!r}"}


# --------------------------------------------------------------------------------------------------
# the run


def export_bundle(spec: dict[str, Any]) -> dict[str, Any]:
    """Export ``spec['targets']`` of ``spec['ckpt']`` into one bundle ``spec['folder']`` at ``spec['height']``
    with :func:`api.prepare` and :func:`api.bundle` (what ``alisnet-export bundle`` runs, with its defaults).
    Returns the part of ``bundle --json`` that the benchmark reads: ``ok``, ``exit_code`` and ``targets``
    (per target: path, size, export time, parity). Raises :class:`ExportError` when a target did not export."""
    from .. import api
    from ..bundle.build import parse_targets

    targets = parse_targets(",".join(spec["targets"]))
    session = api.prepare(Path(spec["ckpt"]), height=int(spec["height"]),
                          calibrate=any(t.precision == "int8" for t in targets))
    outcome = api.bundle(session, targets, Path(spec["folder"]), force=True)
    if outcome.export_failed:  # exit 4 stops the benchmark; exit 1 (a parity gate failed) is a row of its table
        failed = "; ".join(f"{r.target.id}: {r.error}" for r in outcome.results if r.status == "error")
        raise ExportError(f"exit {outcome.exit_code}: {failed}")
    return {"ok": outcome.exit_code == 0, "exit_code": outcome.exit_code,
            "targets": [r.to_dict(outcome.folder) for r in outcome.results]}


def export_targets(ckpt: Path, folder: Path, targets: Sequence[str], height: int,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """:func:`export_bundle` in a worker process, plus ``wall_seconds``.

    Not in this process: a worker started later would inherit this process's memory high-water mark
    (``ru_maxrss`` survives fork and exec), and the exports' peak would then read as every artifact's
    peak memory. Table 1 exports in this process because no worker follows it."""
    from ..bundle.build import parse_targets

    try:
        parse_targets(",".join(targets))
    except ValueError as exc:
        raise DataError(f"bench: {exc}") from None
    log(f"exporting {', '.join(targets)} at {height} px (api.bundle, in a worker process)")
    t0 = time.perf_counter()
    result = run_worker({"kind": "export", "ckpt": str(ckpt), "folder": str(folder), "targets": list(targets),
                         "height": height}, timeout_s=None)
    if "error" in result:
        raise ExportError(f"bench: the bundle export failed: {result['error']}")
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def _write_random_checkpoint(config_name: str, path: Path) -> Path:
    import torch

    from ..checkpoint import save_checkpoint
    from ..config import load_config
    from ..modeling.alisnet import build_model

    torch.manual_seed(0)
    cfg = load_config(config_name)
    save_checkpoint(path, build_model(cfg).state_dict(), cfg, meta={"note": "random weights for the size table"})
    return path


def _state_dict_bytes(model: Any) -> int:
    """Bytes of ``model``'s state dict as ``torch.save`` writes it (the fp32 file size)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def _paper_int8_mb(paper: dict[str, Any]) -> Optional[float]:
    """The paper's int8 size of a variant: its QAT size, or its size when that row is the quantized model."""
    return paper.get("size_mb_qat", paper.get("size_mb") if paper.get("quantized") else None)


def table1(workdir: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Parameters and sizes of every variant (the configs' ``paper`` sections give the paper's numbers):
    fp32 state dict, and an int8 .ptl where the paper has one."""
    from .. import api
    from ..zoo import variant_table
    from ..config import load_config
    from ..modeling.alisnet import build_model

    rows: list[dict[str, Any]] = []
    for v in variant_table():
        cfg = load_config(v["variant"])
        paper = cfg.paper
        rows.append({"config": v["variant"], "precision": "float32", "params": v["parameters"],
                     "size_bytes": _state_dict_bytes(build_model(cfg)),
                     "paper_name": paper.get("table"), "paper_mb": None if paper.get("quantized") else v["paper_mb"],
                     "artifact": "state dict (torch.save)"})
    for name in TABLE1_INT8:
        log(f"table 1: int8 .ptl of {name} (random weights)")
        ckpt = _write_random_checkpoint(name, workdir / f"{name}-random.pth")
        try:  # as `alisnet-export ptl CKPT --no-parity --height 256`: the default int8 .ptl, no parity gate
            session = api.prepare(ckpt, height=256)
            outcome = api.export(session, "ptl", workdir / "table1", precision="int8", name=f"{name}-int8",
                                 force=True, run_parity=False)
        except Exception as exc:  # one variant that does not export is a row of the table, not the end of the run
            rows.append({"config": name, "precision": "int8", "error": [f"{type(exc).__name__}: {exc}".splitlines()[0]]})
            continue
        paper = load_config(name).paper
        rows.append({"config": name, "precision": "int8", "params": None,
                     "size_bytes": outcome.record.entry["size_bytes"], "paper_name": paper.get("table"),
                     "paper_mb": _paper_int8_mb(paper), "artifact": ".ptl (eager QNNPACK, per-channel)"})
    return rows


def _machine(threads: int) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    # every worker calls keep_freed_memory too (same environment, same C library): record what they run with
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "system": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(), "torch": torch.__version__,
            "malloc_keeps_freed_memory": keep_freed_memory()}


def run_bench(ckpt: Path, out_dir: Path, options: BenchOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole benchmark; writes ``bench.json``, ``bench.md`` and ``bench.png`` into ``out_dir``."""
    from ..checkpoint import load_checkpoint

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write the benchmark results there ({exc.strerror})") from None
    loaded = load_checkpoint(ckpt)
    t_start = time.perf_counter()
    results: dict[str, Any] = {"checkpoint": {"path": str(ckpt), "variant": loaded.config.name, "sha256": loaded.sha256},
                               "machine": _machine(options.threads), "options": asdict(options),
                               "input_hw": list(portrait_size(options.height))}
    spec_base = {"threads": options.threads, "height": options.height, "runs": options.runs, "warmup": options.warmup,
                 "ckpt": str(ckpt)}
    with tempfile.TemporaryDirectory(prefix="alisnet-bench-") as tmp:
        work = Path(tmp)
        log("measuring the fp32 GEMM rate and the model's FLOPs")
        gemm = run_worker({**spec_base, "kind": "gemm"}, options.timeout_s)
        flops = run_worker({**spec_base, "kind": "flops"}, options.timeout_s)
        results["compute"] = {**gemm, **flops}
        floor_ms = (flops["flops"] / (gemm["gflops"] * 1e9) * 1000.0) if "flops" in flops and "gflops" in gemm else None
        results["compute"]["floor_ms"] = floor_ms

        export = export_targets(ckpt, work / "bundle", options.targets, options.height, log)
        results["export"] = {"wall_seconds": export["wall_seconds"], "exit_code": 0 if export.get("ok") else 1}
        rows: list[dict[str, Any]] = []
        float_bytes = _state_dict_bytes(loaded.build_model())
        plan: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            ("eager float32", {"kind": "eager"}, {"format": "torch eager", "precision": "float32"}),
            ("scripted float32", {"kind": "scripted"}, {"format": "TorchScript", "precision": "float32"}),
            ("coarse only (no PointRend)", {"kind": "coarse"}, {"format": "torch eager", "precision": "float32"}),
        ]
        for target in export["targets"]:
            info = {"format": target["format"], "precision": target["precision"], "target": target}
            if "path" not in target:
                rows.append({"name": target["id"], **info, "error": target.get("error", "not exported")})
                continue
            plan.append((target["id"], {"kind": "artifact", "path": target["path"]}, info))
        for name, spec, info in plan:
            log(f"timing {name}: {options.runs} runs after {options.warmup} warm-up at "
                f"{'x'.join(map(str, portrait_size(options.height)))}, {options.threads} thread(s)")
            m = run_worker({**spec_base, **spec}, options.timeout_s)
            row = {"name": name, **{k: v for k, v in info.items() if k != "target"}, **m}
            target = info.get("target")
            if target:
                row.update({"size_bytes": target["size_bytes"], "export_seconds": target.get("export_seconds"),
                            "parity": target.get("parity", {}), "quantization": target.get("quantization")})
            elif spec["kind"] in ("eager", "scripted"):
                row["size_bytes"] = float_bytes
            if floor_ms and "median_ms" in row:
                row["floor_ratio"] = row["median_ms"] / floor_ms
            rows.append(row)
        results["artifacts"] = rows

        log("PointRend's share and scaling with the input height")
        scaling = []
        ptl_path = _target_path(export, "ptl", "int8")
        for h in options.scaling_heights:
            m = run_worker({**spec_base, "kind": "pointrend_split", "height": h, "runs": options.scaling_runs,
                            "warmup": 1}, options.timeout_s)
            entry: dict[str, Any] = {"height": h, "input_hw": list(portrait_size(h)), **m}
            if ptl_path is not None:
                entry["ptl_int8"] = run_worker({**spec_base, "kind": "artifact", "path": ptl_path, "height": h,
                                                "runs": options.scaling_runs, "warmup": 1}, options.timeout_s)
            scaling.append(entry)
        results["scaling"] = scaling
        if options.table1:  # last: it exports in this process, and no worker may start after that
            results["table1"] = table1(work, log)
    results["bench_seconds"] = time.perf_counter() - t_start
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "bench.md").write_text(markdown_report(results))
    plot_results(results, out_dir / "bench.png")
    return results


def pointrend_noise_ms(entry: dict[str, Any]) -> float:
    """Run-to-run spread of the full and the coarse timing at one height (p90 - median of each, added):
    a PointRend time (full - coarse) below it is not resolved by the measurement."""
    return sum(max(entry[k].get("p90_ms", entry[k]["median_ms"]) - entry[k]["median_ms"], 0.0) for k in ("full", "coarse"))


def _target_path(export: dict[str, Any], fmt: str, precision: str) -> Optional[str]:
    for t in export["targets"]:
        if t["format"] == fmt and t["precision"] == precision and "path" in t:
            return t["path"]
    return None


# --------------------------------------------------------------------------------------------------
# reports


def _mb(n: Optional[float]) -> str:
    return "—" if n is None else f"{n / 1e6:.2f}"


def _ms(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.0f}"


def _parity_text(row: dict[str, Any]) -> str:
    if "max_abs_logit_vs_eager" in row:
        return f"max\\|Δ\\| {row['max_abs_logit_vs_eager']:.1e} vs eager"
    parity = row.get("parity") or {}
    summary = parity.get("summary")
    if not summary:
        return "reference" if row.get("name") == "eager float32" else ("ablation" if "coarse" in row.get("name", "") else "—")
    status = parity.get("status", "?")
    if row.get("precision") in ("float32",):
        if "max_abs_logit_outside_ties" in summary:  # the float gate: outside PointRend's tie zone
            return (f"{status}: max\\|Δ\\| {summary['max_abs_logit_outside_ties']:.1e} outside ties, "
                    f"{summary['max_flip_fraction']:.4%} px flipped (raw {summary['max_abs_logit']:.1e})")
        return f"{status}: max\\|Δ\\| {summary['max_abs_logit']:.1e}"
    return f"{status}: IoU {summary['mean_iou']:.4f}, bnd {summary['mean_boundary_px']:.2f} px"


def _slope(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    import math

    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def markdown_report(results: dict[str, Any]) -> str:
    m, c = results["machine"], results["compute"]
    h, w = results["input_hw"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} thread(s) pinned; {m['system']}, Python {m['python']}, "
        f"torch {m['torch']}. Checkpoint: `{Path(results['checkpoint']['path']).name}` ({results['checkpoint']['variant']}). "
        f"Input {h}x{w} ({h} px height, 3:4 portrait; the paper runs at 1024). Median/p90 over {results['options']['runs']} runs after "
        f"{results['options']['warmup']} warm-up, each artifact in a fresh process"
        + ("" if not m.get("malloc_keeps_freed_memory") else
           " that keeps freed memory for reuse, as the command line does (docs/design.md 4.11)")
        + "; peak memory = that process's peak RSS. "
        f"Benchmark wall time {results['bench_seconds'] / 60:.1f} min.",
        "",
    ]
    if "flops" in c:
        lines += [f"Compute: {c['flops'] / 1e9:.2f} GFLOP per image ({c['coarse_flops'] / 1e9:.2f} before PointRend); "
                  f"fp32 GEMM rate {c['gflops']:.1f} GFLOP/s, so the fp32 compute floor is {c['floor_ms']:.0f} ms. "
                  "'× floor' = median latency / floor (int8 kernels can beat it).", ""]
    lines += ["| artifact | size (MB) | median (ms) | p90 (ms) | × floor | peak mem (MB) | export (s) | parity vs float |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["artifacts"]:
        if "error" in r:
            lines.append(f"| {r['name']} | — | — | — | — | — | — | error: {str(r['error'])[:80]} |")
            continue
        export_s = r.get("export_seconds")
        lines.append(f"| {r['name']} | {_mb(r.get('size_bytes'))} | {_ms(r.get('median_ms'))} | {_ms(r.get('p90_ms'))} | "
                     f"{r.get('floor_ratio', 0):.1f} | {r.get('peak_rss_mb', 0):.0f} | "
                     f"{'—' if export_s is None else f'{export_s:.1f}'} | {_parity_text(r)} |")
    sc = results.get("scaling") or []
    if sc:
        lines += ["", "Scaling with the input height (eager float32; PointRend = full − coarse; int8 .ptl beside it):", "",
                  "| input | full (ms) | coarse (ms) | PointRend (ms) | PointRend share | peak mem (MB) | int8 .ptl (ms) | int8 .ptl peak mem (MB) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        resolved = []  # heights where full - coarse stands out of the two timings' run-to-run spread
        for e in sc:
            if "full" not in e:
                lines.append(f"| {e['input_hw'][0]}x{e['input_hw'][1]} | error: {str(e.get('error'))[:80]} |||||||")
                continue
            full, coarse = e["full"]["median_ms"], e["coarse"]["median_ms"]
            p = e.get("ptl_int8") or {}
            if full - coarse > pointrend_noise_ms(e):
                resolved.append(e)
                pr_cells = f"{full - coarse:.0f} | {(full - coarse) / full:.0%}"
            else:
                pr_cells = f"within noise (±{pointrend_noise_ms(e):.0f}) | —"
            lines.append(f"| {e['input_hw'][0]}x{e['input_hw'][1]} | {full:.0f} | {coarse:.0f} | {pr_cells} | "
                         f"{e['peak_rss_mb']:.0f} | {_ms(p.get('median_ms'))} | {p.get('peak_rss_mb', float('nan')):.0f} |")
        ok = [e for e in sc if "full" in e]
        px = [e["input_hw"][0] * e["input_hw"][1] for e in ok]
        s_full = _slope(px, [e["full"]["median_ms"] for e in ok])
        s_coarse = _slope(px, [e["coarse"]["median_ms"] for e in ok])
        s_pr = _slope([e["input_hw"][0] * e["input_hw"][1] for e in resolved],
                      [e["full"]["median_ms"] - e["coarse"]["median_ms"] for e in resolved])
        if s_full is not None:
            pr_text = (f"PointRend as pixels^{s_pr:.2f}" if s_pr is not None else
                       "PointRend's own growth is not resolved (full − coarse is within the timings' spread at most heights)")
            lines += ["", f"Latency grows as pixels^{s_full:.2f} overall: the backbone and head (coarse) as pixels^{s_coarse:.2f}, "
                      f"{pr_text}. PointRend refines a fixed budget of points per step "
                      "(8192 in the paper's config), so its point-head cost is constant once the grid has more cells than "
                      "that; what still grows is the upsampling of the logit map and the uncertainty top-k over it. "
                      "'within noise': full − coarse is smaller than the two timings' spread (p90 − median, added)."]
    t1 = results.get("table1") or []
    if t1:
        lines += ["", "Paper Table 1 (model size) with ours beside it:", "",
                  "| variant (config) | precision | parameters | ours (MB) | paper (MB) | paper's row |",
                  "|---|---|---:|---:|---:|---|"]
        for r in t1:
            if "error" in r:
                lines.append(f"| {r['config']} | {r['precision']} | — | error | — | |")
                continue
            params = f"{r['params'] / 1e6:.2f} M" if r.get("params") else "—"
            lines.append(f"| {r['config']} | {r['precision']} | {params} | {_mb(r['size_bytes'])} | "
                         f"{r['paper_mb'] if r.get('paper_mb') is not None else '—'} | {r.get('paper_name') or ''} |")
    return "\n".join(lines) + "\n"


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Latency vs size, one point per artifact, labelled with its parity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for r in results["artifacts"]:
        if "median_ms" not in r or not r.get("size_bytes"):
            continue
        size = r["size_bytes"] / 1e6
        int8 = r.get("precision") == "int8"
        ax.scatter(size, r["median_ms"], s=60, marker="o" if int8 else "s", color="tab:blue" if int8 else "tab:orange")
        label = r["name"]
        summary = (r.get("parity") or {}).get("summary")
        if summary and int8:
            label += f"\nIoU {summary['mean_iou']:.3f}"
        elif summary:
            label += f"\n|Δ| {summary.get('max_abs_logit_outside_ties', summary['max_abs_logit']):.0e}"
        ax.annotate(label, (size, r["median_ms"]), textcoords="offset points", xytext=(6, 4), fontsize=7)
    h, w = results["input_hw"]
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel(f"median latency at {h}x{w} (ms)")
    ax.set_xscale("log")
    ax.set_title(f"{results['checkpoint']['variant']}: latency vs size ({results['machine']['threads']} threads, "
                 f"{results['machine']['cpu'][:40]})", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def update_readme(readme: Path, results_dir: Path) -> bool:
    """Replace the text between :data:`README_BEGIN` and :data:`README_END` with the latest tables."""
    from .._io import replace_between_markers

    md = (Path(results_dir) / "bench.md").read_text()
    rel = os.path.relpath(Path(results_dir) / "bench.png", readme.parent)
    return replace_between_markers(readme, README_BEGIN, README_END, f"{md}\n![latency vs size]({rel})")


if __name__ == "__main__":  # the worker: python -m alisnet_export.bench.runner '{"kind": ...}'
    import warnings

    warnings.filterwarnings("ignore")
    keep_freed_memory()  # as the command line's own process does: latency without re-faulting activations
    print(json.dumps(measure(json.loads(sys.argv[1]))))
