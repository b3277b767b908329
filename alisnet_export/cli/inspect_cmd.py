"""``alisnet-export inspect``: what a checkpoint holds, without running it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional

import click

from ..zoo import variant_table
from ._common import Reporter, human_size, json_option, model_options, pass_reporter, resolve_checkpoint

__all__ = ["inspect_checkpoint", "COMMANDS"]


def inspect_checkpoint(path: Path, config: Optional[str] = None, no_pointrend: bool = False) -> dict[str, Any]:
    """A JSON-ready summary: variant, parameter counts, size, source format, key statistics."""
    from ..checkpoint import load_checkpoint

    loaded = load_checkpoint(path, config, pointrend=False if no_pointrend else None)
    cfg = loaded.config
    sd = loaded.state_dict
    groups: Counter[str] = Counter()
    params_by_group: Counter[str] = Counter()
    dtypes: Counter[str] = Counter()
    for key, tensor in sd.items():
        group = key.split(".")[0]
        if group == "point_rend":
            group = "point_head"
        groups[group] += 1
        if tensor.is_floating_point() and not any(s in key for s in ("running_mean", "running_var")):
            params_by_group[group] += tensor.numel()
        dtypes[str(tensor.dtype).replace("torch.", "")] += 1
    total_params = sum(params_by_group.values())
    out: dict[str, Any] = {
        "ok": True,
        "path": str(loaded.path),
        "size_bytes": loaded.size_bytes,
        "sha256": loaded.sha256,
        "source_format": loaded.source_format,
        "kind": "qat" if loaded.is_qat else "float",
        "variant": cfg.name,
        "backbone": cfg.backbone,
        "top_down": cfg.top_down,
        "pointrend": cfg.point_rend.enabled,
        "subdivision": {"steps": cfg.point_rend.subdivision_steps, "num_points": cfg.point_rend.subdivision_num_points},
        "parameters": total_params,
        "parameters_by_module": dict(params_by_group),
        "float32_size_bytes": total_params * 4,
        "int8_weight_size_bytes": total_params,
        "tensors": len(sd),
        "tensors_by_module": dict(groups),
        "dtypes_loaded": dict(dtypes),
        "stored_dtypes": loaded.stored_dtypes,
        "meta": loaded.meta,
        "config": cfg.to_dict(),
    }
    if loaded.qat:
        out["qat"] = loaded.qat
    return out


@click.command("inspect")
@model_options
@json_option
@pass_reporter
def inspect_command(ckpt: Optional[Path], config: Optional[str], no_pointrend: bool, as_json: bool,
                    reporter: Reporter) -> int:
    """Show a checkpoint's variant, parameter count, size, source format and key statistics.

    CKPT may be a native alisnet-export checkpoint, a detectron2 model_final.pth or a detectron2
    .pkl (numpy) file; it is read without unpickling arbitrary objects.
    """
    info = inspect_checkpoint(resolve_checkpoint(ckpt), config, no_pointrend)
    pr = info["subdivision"]
    by = info["parameters_by_module"]
    reporter.line(f"{info['path']}", bold=True)
    rows = [
        ("file", f"{human_size(info['size_bytes'])}, sha256 {info['sha256'][:16]}..."),
        ("format", f"{info['source_format']} ({info['kind']})"),
        ("variant", f"{info['variant']}: backbone {info['backbone']}, top-down path {'yes' if info['top_down'] else 'no'}, "
                    + (f"PointRend {pr['steps']} steps x {pr['num_points']} points" if info["pointrend"] else "no PointRend")),
        ("parameters", f"{info['parameters'] / 1e6:.3f} M ("
                       + ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in by.items()) + ")"),
        ("float32 size", human_size(info["float32_size_bytes"])),
        ("int8 weights", f"~{human_size(info['int8_weight_size_bytes'])}"),
        ("tensors", f"{info['tensors']} (" + ", ".join(f"{k} {v}" for k, v in info["dtypes_loaded"].items()) + ")"),
    ]
    if info["stored_dtypes"]:
        rows.append(("stored as", ", ".join(f"{k} {v}" for k, v in info["stored_dtypes"].items())))
    for key in ("description", "trained_on", "training_time_s", "hardware", "metrics"):
        if key in info["meta"]:
            rows.append((key.replace("_", " "), str(info["meta"][key])))
    reporter.table(rows)
    reporter.result(info)
    return 0


@click.command("variants")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (as in the README).")
@json_option
@pass_reporter
def variants_command(markdown: bool, as_json: bool, reporter: Reporter) -> int:
    """List the shipped model variants: parameters and size, beside the paper's Table 1."""
    rows = variant_table()
    if markdown:
        reporter.line("| variant | backbone | top-down | parameters | fp32 MB | int8 weights MB | paper MB |")
        reporter.line("|---|---|---|---:|---:|---:|---|")
        for r in rows:
            paper = "" if r["paper_mb"] is None else f"{r['paper_mb']}"
            if r["paper_qat_mb"] is not None:
                paper += f" (QAT {r['paper_qat_mb']})"
            reporter.line(f"| {r['variant']} | {r['backbone']} | {'yes' if r['top_down'] else 'no'} | "
                          f"{r['parameters'] / 1e6:.2f} M | {r['float32_mb']:.1f} | {r['int8_weights_mb']:.1f} | {paper} |")
    else:
        reporter.table([(r["variant"], f"{r['parameters'] / 1e6:6.2f} M params, {r['float32_mb']:6.1f} MB fp32"
                         + (f"  (paper: {r['paper_mb']} MB)" if r["paper_mb"] else "")) for r in rows])
    reporter.result({"ok": True, "variants": rows})
    return 0


COMMANDS = [inspect_command, variants_command]
