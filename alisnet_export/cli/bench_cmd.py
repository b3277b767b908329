"""``alisnet-export bench``: size, latency, memory, export time and parity of every format, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ._common import Reporter, json_option, pass_reporter, resolve_checkpoint

__all__ = ["bench_command", "COMMANDS"]


def _heights(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give heights as comma-separated integers, e.g. 512,768,1024") from None
    bad = [h for h in out if h % 32 or h < 128]
    if bad:
        raise click.BadParameter(f"{', '.join(map(str, bad))}: every height must be a multiple of 32 and at least 128")
    return out


@click.command("bench")
@click.argument("ckpt", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False), default=Path("benchmarks/results"),
              show_default=True, help="Folder for bench.json, bench.md and bench.png (replaced files).")
@click.option("--height", default=1024, show_default=True, type=click.IntRange(128, 4096),
              help="Input height of the latency table (3:4 portrait; multiple of 32).")
@click.option("--runs", default=10, show_default=True, type=click.IntRange(1), help="Timed runs per artifact.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed runs first.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0),
              help="Threads every runtime is pinned to (0: every core).")
@click.option("--targets", default="ptl:int8,ptl:float32,pte:int8,pte:float32,onnx:int8,onnx:float32", show_default=True,
              help="Exported targets to measure (as `bundle --targets`). Core ML cannot run here.")
@click.option("--scaling-heights", default="512,768,1024,1536", show_default=True, callback=_heights,
              help="Heights of the scaling table.")
@click.option("--scaling-runs", default=5, show_default=True, type=click.IntRange(1), help="Timed runs per scaling point.")
@click.option("--no-table1", is_flag=True, help="Skip the paper's Table 1 (variant sizes).")
@click.option("--update-readme", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Paste the tables and plot between the bench markers of this README.")
@json_option
@pass_reporter
def bench_command(reporter: Reporter, ckpt: Optional[Path], output: Path, height: int, runs: int, warmup: int, threads: int,
                  targets: str, scaling_heights: tuple[int, ...], scaling_runs: int, no_table1: bool,
                  update_readme: Optional[Path], as_json: bool) -> int:
    """Benchmark CKPT (default: the demo checkpoint) in every format this machine runs.

    \b
    Exports .ptl/.pte/ONNX (int8 and fp32) with the `bundle` command, then times each artifact, the
    eager and scripted float model and the coarse-only ablation in a fresh process (median and p90,
    threads pinned, peak memory), with export time, parity, FLOPs against the machine's GEMM rate,
    PointRend's share, scaling with the input height and the paper's Table 1 sizes.
    Writes bench.json, bench.md and bench.png. Takes about 10 minutes on 2 cores.
    """
    from ..bench.runner import BenchOptions, run_bench
    from ..bench.runner import update_readme as paste
    from ..formats import parse_targets

    try:
        target_ids = tuple(f"{t.format}:{t.precision}" for t in parse_targets(targets))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--targets") from None
    if any(t.startswith("coreml") for t in target_ids):
        raise click.BadParameter("Core ML cannot predict on this platform; leave it out of the benchmark",
                                 param_hint="--targets")
    options = BenchOptions(height=height, runs=runs, warmup=warmup, threads=threads, targets=target_ids,
                           scaling_heights=scaling_heights, scaling_runs=scaling_runs, table1=not no_table1)
    path = resolve_checkpoint(ckpt)
    reporter.line(f"alisnet-export bench: {path} -> {output}", bold=True)
    results = run_bench(path, output, options, log=lambda m: reporter.line(f"  {m}"))
    reporter.line((output / "bench.md").read_text())
    pasted = False
    if update_readme is not None:
        pasted = paste(update_readme, output)
        reporter.line(f"README tables {'updated' if pasted else 'NOT updated (no bench markers)'}: {update_readme}")
    errors = [r["name"] for r in results["artifacts"] if "error" in r]
    reporter.line(f"wrote {output / 'bench.json'}, {output / 'bench.md'}, {output / 'bench.png'} "
                  f"in {results['bench_seconds'] / 60:.1f} min")
    if errors:
        reporter.line(f"could not measure: {', '.join(errors)}", fg="red")
    reporter.result({"ok": not errors, "output": str(output), "results": results, "readme_updated": pasted})
    return 0 if not errors else 1


COMMANDS = [bench_command]
