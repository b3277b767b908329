"""``quant-report``: where int8 loses the silhouette, per layer, and how unsure the float model is anyway.

For the ``.ptl`` path (eager QNNPACK int8, quantized exactly as ``alisnet-export ptl`` quantizes it:
same calibration, same equalization) on the parity photos:

* per quantized layer, in graph order: SQNR and relative L2 of its output vs the float model's
  (:func:`.quantize.debug.layer_errors`; propagated and isolated);
* for the worst K layers (isolated SQNR): mask IoU and contour distance vs float with that layer alone
  in float, and with only that layer in int8 (:func:`.quantize.debug.attribute_layers`);
* per image, the float model's own uncertainty (:func:`.parity.uncertain_fraction`) with a picture;
* ``report.json``, ``report.html`` with the plots and overlays of the worst images, written atomically.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ._io import atomic_write
from .parity import UNCERTAIN_MARGIN, ParityReport, Thresholds, uncertain_fraction, uncertainty_note
from .quantize import debug, eager, mixed_precision
from .verify.reports import denormalize, write_overlays
from .visualize import save_png

__all__ = ["PtlQuantModels", "build_ptl_int8", "ptl_quant_report", "uncertainty_picture", "write_quant_report",
           "REPORT_FILES", "load_float_checkpoint", "run_ptl_report"]

REPORT_FILES = ("report.json", "report.html", "layers.png")


class PtlQuantModels:
    """The float model, its fused twin, and the converted int8 model of the .ptl path."""

    def __init__(self, source: nn.Module, twin: nn.Module, converted: nn.Module, equalization: dict[str, Any],
                 calibration_images: int) -> None:
        self.source, self.twin, self.converted = source, twin, converted
        self.equalization, self.calibration_images = equalization, calibration_images


def build_ptl_int8(reference: nn.Module, calibration: Sequence[torch.Tensor], *, equalize: bool = True,
                   options: eager.EagerQuantOptions = eager.EagerQuantOptions(),
                   log: Callable[[str], None] = lambda m: None) -> PtlQuantModels:
    """Quantize ``reference`` as ``alisnet-export ptl`` does (post-training): equalize, prepare, calibrate, convert."""
    from .quantize.equalize import equalize_for_quantization

    source, equalization = equalize_for_quantization(reference, list(calibration), enabled=equalize, log=log)
    prepared = eager.prepare(source, qat=False, options=options)
    n = eager.calibrate(prepared, calibration)
    return PtlQuantModels(source, mixed_precision.float_twin(source), eager.convert(prepared), equalization, n)


def uncertainty_picture(picture: np.ndarray, logits: np.ndarray, margin: float = UNCERTAIN_MARGIN) -> np.ndarray:
    """The photo dimmed; the float mask tinted green, its unsure pixels (|fg - bg| < margin) orange,
    unsure background pixels magenta."""
    _, where = uncertain_fraction(logits, margin)
    mask = logits[0, 1] > logits[0, 0]
    out = picture.astype(np.float32) * 0.4
    out[mask & ~where] = 0.5 * out[mask & ~where] + 0.5 * np.array([40, 170, 40])
    out[mask & where] = (255, 150, 0)
    out[~mask & where] = (200, 40, 200)
    return out.clip(0, 255).astype(np.uint8)


def ptl_quant_report(
    models: PtlQuantModels,
    inputs: Sequence[tuple[str, np.ndarray]],
    reference: nn.Module,
    *,
    top_k: int = 8,
    reverse: bool = True,
    thresholds: Optional[Thresholds] = None,
    log: Callable[[str], None] = lambda m: None,
) -> tuple[dict[str, Any], ParityReport, list[tuple[str, np.ndarray]]]:
    """The ptl section of the report (a JSON-ready dict), the all-int8 parity report (masks kept), and
    the float logits per image."""
    eager.use_qnnpack()
    timing: dict[str, float] = {}
    xs = [torch.from_numpy(x) for _, x in inputs]
    t = time.perf_counter()
    with torch.no_grad():
        reference_logits = [(name, reference(x).numpy()) for (name, _), x in zip(inputs, xs)]
    timing["float_model_s"] = time.perf_counter() - t
    t = time.perf_counter()
    baseline = debug.evaluate_model(models.converted, reference_logits, xs, name="ptl-int8", thresholds=thresholds,
                                     keep_masks=True)
    timing["int8_model_s"] = time.perf_counter() - t
    s = baseline.summary()
    log(f"all int8: mask IoU mean {s['mean_iou']:.4f} (min {s['min_iou']:.4f}), contour {s['mean_boundary_px']:.2f} px")
    t = time.perf_counter()
    errors = debug.layer_errors(models.twin, models.converted, xs)
    timing["layer_errors_s"] = time.perf_counter() - t
    worst = debug.worst_layers(errors, top_k)
    log(f"{len(errors)} quantized layers; worst isolated SQNR: "
        + ", ".join(f"{e.name} {e.rank_sqnr_db:.1f} dB" for e in worst[:5]))
    t = time.perf_counter()
    attributions = debug.attribute_layers(models.twin, models.converted, models.twin, worst, reference_logits, xs,
                                          baseline=baseline, reverse=reverse, progress=lambda n: log(f"  attributing {n}"))
    timing["attribution_s"] = time.perf_counter() - t
    section = {
        "target": "ptl",
        "scheme": "eager-ptq",
        "engine": eager.ENGINE,
        "calibration_images": models.calibration_images,
        "equalization": models.equalization,
        "int8": {**s, "passed": baseline.passed, "failures": [g.describe() for g in baseline.failures]},
        "per_image": [{"image": m.name, "mask_iou": m.mask_iou, "boundary_mean_px": m.boundary_mean_px,
                       "float_uncertain_fraction": m.float_uncertain_fraction} for m in baseline.images],
        "layers": [e.to_dict() for e in errors],
        "worst_layers": [e.name for e in worst],
        "attribution": [a.to_dict() for a in sorted(attributions, key=lambda a: -a.iou_recovered)],
        "notes": [
            "sqnr_db is propagated (each model on its own inputs, as on the phone); local_sqnr_db is isolated (the "
            "int8 layer on the float model's input): the error the layer adds by itself. Worst layers are ranked by "
            "local_sqnr_db.",
            "PointRend's point-head layers run on the points each model chose from its own coarse logits; where the "
            "choices differ, their propagated SQNR measures the choice, not the arithmetic.",
        ],
        "timing": timing,
    }
    return section, baseline, reference_logits


def _plot_layers(path: Path, section: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = section["layers"]
    att = section["attribution"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 8), gridspec_kw={"height_ratios": [3, 2]})
    x = np.arange(len(layers))
    prop = [l["sqnr_db"] if l["sqnr_db"] is not None else np.nan for l in layers]
    loc = [l["local_sqnr_db"] if l["local_sqnr_db"] is not None else np.nan for l in layers]
    ax1.plot(x, prop, "-", color="#888", label="propagated SQNR (int8 model vs float)")
    ax1.plot(x, loc, "o", ms=3, color="#1f77b4", label="isolated SQNR (this layer alone int8)")
    worst = set(section["worst_layers"])
    for i, l in enumerate(layers):
        if l["name"] in worst:
            ax1.plot(i, l["local_sqnr_db"], "o", ms=7, mfc="none", mec="#d62728")
            ax1.annotate(l["name"], (i, l["local_sqnr_db"]), fontsize=6, rotation=30, color="#d62728")
    ax1.set_xlabel("quantized layer, graph order")
    ax1.set_ylabel("SQNR (dB)")
    ax1.set_title("ptl int8 (QNNPACK): per-layer error vs float")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    names = [a["name"] for a in att]
    y = np.arange(len(att))
    ax2.barh(y - 0.2, [a["iou_recovered"] for a in att], height=0.4, color="#2ca02c",
             label="IoU recovered with this layer alone float")
    lost = [(1.0 - a["only_int8_mean_iou"]) if a["only_int8_mean_iou"] is not None else 0.0 for a in att]
    ax2.barh(y + 0.2, [-v for v in lost], height=0.4, color="#d62728", label="IoU lost with only this layer int8")
    ax2.set_yticks(y, names, fontsize=7)
    ax2.axvline(0, color="k", lw=0.8)
    ax2.set_xlabel("mean mask IoU vs float (change)")
    ax2.legend(fontsize=8, loc="lower right")
    ax2.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"), force=True)
    plt.close(fig)


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return format(v, spec)


def _html(report: dict[str, Any], overlays: list[dict[str, Any]]) -> str:
    e = html.escape
    sec = report["targets"]["ptl"]
    s = sec["int8"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Quantization report</title><style>",
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}",
             "td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}.warn{color:#b00;font-weight:bold}",
             "img{max-width:32%;margin-right:1%;border:1px solid #999}img.wide{max-width:100%}</style></head><body>",
             "<h1>Quantization report</h1><ul>"]
    for k in ("checkpoint", "variant", "height", "images", "seconds"):
        parts.append(f"<li><b>{k}</b>: {e(str(report[k]))}</li>")
    parts.append("</ul>")
    if report["uncertainty"]["note"]:
        parts.append(f"<p class='warn'>{e(report['uncertainty']['note'])}</p>")
    parts.append(f"<h2>ptl (eager QNNPACK int8)</h2><p>all int8: mask IoU mean {s['mean_iou']:.4f} (min "
                 f"{s['min_iou']:.4f}), contour {s['mean_boundary_px']:.2f} px mean, gate "
                 f"{'PASSED' if s['passed'] else 'FAILED'}</p><img class='wide' src='layers.png'>")
    parts.append("<h3>Attribution (worst layers by isolated SQNR)</h3><table><tr><th>layer</th><th>isolated SQNR dB</th>"
                 "<th>propagated SQNR dB</th><th>IoU, this layer float</th><th>contour px</th><th>IoU recovered</th>"
                 "<th>IoU, only this layer int8</th><th>contour px</th></tr>")
    for a in sec["attribution"]:
        parts.append(f"<tr><td>{e(a['name'])}</td><td>{_fmt(a['local_sqnr_db'], '.1f')}</td><td>{_fmt(a['sqnr_db'], '.1f')}</td>"
                     f"<td>{a['keep_float_mean_iou']:.4f}</td><td>{a['keep_float_boundary_px']:.2f}</td>"
                     f"<td>{a['iou_recovered']:+.4f}</td><td>{_fmt(a['only_int8_mean_iou'], '.4f')}</td>"
                     f"<td>{_fmt(a['only_int8_boundary_px'])}</td></tr>")
    parts.append("</table><h3>Float-model uncertainty</h3><p>Orange: float person pixels with |fg - bg| &lt; "
                 f"{UNCERTAIN_MARGIN:g} (int8 cannot be expected to agree there); magenta: unsure background; "
                 "green: confident person.</p><table><tr><th>image</th><th>unsure share of the float mask</th>"
                 "<th>int8 IoU</th></tr>")
    for item in sec["per_image"]:
        parts.append(f"<tr><td>{e(item['image'])}</td><td>{item['float_uncertain_fraction']:.1%}</td>"
                     f"<td>{item['mask_iou']:.4f}</td></tr>")
    parts.append("</table>")
    for name, file in report["uncertainty"]["pictures"].items():
        parts.append(f"<img src='{e(file)}' title='{e(name)}'>")
    parts.append("<h3>Worst images, all int8</h3>")
    for item in overlays:
        f = item["files"]
        parts.append(f"<h4>{e(item['image'])}: IoU {item['iou']:.4f}, contour {item['boundary_mean_px']:.2f} px</h4>"
                     "<p>float mask | int8 mask | disagreement (red: only float, blue: only int8)</p>"
                     f"<img src='{e(f['float'])}'><img src='{e(f['artifact'])}'><img src='{e(f['diff'])}'>")
    parts.append("<h3>Every quantized layer (graph order)</h3><table><tr><th>#</th><th>layer</th><th>kind</th>"
                 "<th>SQNR dB</th><th>isolated SQNR dB</th><th>rel. L2</th><th>calls</th></tr>")
    for l in sec["layers"]:
        parts.append(f"<tr><td>{l['order']}</td><td>{e(l['name'])}</td><td>{l['kind']}</td><td>{_fmt(l['sqnr_db'], '.1f')}</td>"
                     f"<td>{_fmt(l['local_sqnr_db'], '.1f')}</td><td>{_fmt(l['rel_l2'], '.3g')}</td><td>{l['calls']}</td></tr>")
    parts.append("</table>")
    parts += [f"<p><small>{e(n)}</small></p>" for n in sec["notes"]]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_quant_report(out_dir: Path, report: dict[str, Any], baseline: ParityReport,
                       reference_logits: Sequence[tuple[str, np.ndarray]], inputs: Sequence[tuple[str, np.ndarray]],
                       mean: Sequence[float], std: Sequence[float], *, worst: int = 3) -> dict[str, Path]:
    """Write report.json, report.html, layers.png, the uncertainty pictures and the overlays into ``out_dir``
    (each file atomically); fills ``report["uncertainty"]`` and ``report["files"]``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = {name: denormalize(x, mean, std) for name, x in inputs}
    fractions, files = {}, {}
    for name, logits in reference_logits:
        fractions[name] = uncertain_fraction(logits)[0]
        file = f"unsure.{name}.png".replace("@", "_").replace("/", "_")
        image = uncertainty_picture(pictures[name], logits)
        atomic_write(out_dir / file, lambda p, im=image: save_png(im, p), force=True)
        files[name] = file
    report["uncertainty"] = {"margin": UNCERTAIN_MARGIN, "float_uncertain_fraction": fractions,
                             "note": uncertainty_note(fractions), "pictures": files}
    overlays = write_overlays(baseline, pictures, out_dir, worst=worst)
    _plot_layers(out_dir / "layers.png", report["targets"]["ptl"])
    paths = {"json": out_dir / "report.json", "html": out_dir / "report.html", "plot": out_dir / "layers.png"}
    report["files"] = {k: p.name for k, p in paths.items()}
    report["files"]["overlays"] = overlays
    page = _html(report, overlays)
    text = json.dumps(report, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)) + "\n"
    atomic_write(paths["html"], lambda p: p.write_text(page, encoding="utf-8"), force=True)
    atomic_write(paths["json"], lambda p: p.write_text(text, encoding="utf-8"), force=True)
    return paths


def load_float_checkpoint(ckpt: Optional[str | Path], config: Optional[str] = None,
                          pointrend: Optional[bool] = None) -> Any:
    """The float checkpoint to debug (default: the embedded default); a QAT checkpoint is refused."""
    from .checkpoint import load_checkpoint
    from .errors import DataError
    from .zoo import default_checkpoint

    loaded = load_checkpoint(Path(ckpt) if ckpt is not None else default_checkpoint().path, config, pointrend=pointrend)
    if loaded.is_qat:
        raise DataError(f"{loaded.path}: a QAT checkpoint; quant-report debugs post-training quantization of a float "
                        "checkpoint (pass the float checkpoint the QAT started from)")
    return loaded


def run_ptl_report(loaded: Any, out_dir: Path, *, images: Sequence[str | Path] = (),
                   calibration_images: Sequence[str | Path] = (), height: int = 1024,
                   calibration_height: Optional[int] = None, top_k: int = 8, reverse: bool = True,
                   person_crops: bool = True, equalize: bool = True, log: Callable[[str], None] = lambda m: None,
                   warn: Callable[[str], None] = lambda m: None) -> tuple[dict[str, Any], dict[str, Path]]:
    """The whole report for the int8 .ptl path of ``loaded`` (a float checkpoint): quantize it as ``ptl`` does,
    calibrating on ``calibration_images`` at ``calibration_height`` (default: the checkpoint's calibration set,
    at ``height``), measure it on ``images`` (default: its parity set) at ``height``, and write the files into
    ``out_dir`` (:func:`write_quant_report`). Returns ``(report, files)``."""
    from .samples import calibration_inputs, image_sets_for, parity_inputs

    start = time.perf_counter()
    cfg, reference = loaded.config, loaded.build_model()
    measured, calibration_set = image_sets_for(loaded.sha256, images, calibration_images, calibrate=True, warn=warn)
    inputs = list(parity_inputs(list(measured.paths), cfg, height=height, reference=reference, person_crops=person_crops))
    calibration = calibration_inputs(list(calibration_set.paths), cfg, height=calibration_height or height)
    models = build_ptl_int8(reference, calibration, equalize=equalize, log=log)
    log(f"calibrated on {models.calibration_images} images; measuring {len(inputs)} images")
    section, baseline, reference_logits = ptl_quant_report(models, inputs, reference, top_k=top_k, reverse=reverse,
                                                           log=log)
    report: dict[str, Any] = {
        "checkpoint": str(loaded.path), "sha256": loaded.sha256, "variant": cfg.name, "height": height,
        "calibration_height": calibration_height or height, "images": [name for name, _ in inputs],
        "image_sets": {"measured": measured.to_dict(), "calibration": calibration_set.to_dict()},
        "targets": {"ptl": section},
    }
    report["seconds"] = round(time.perf_counter() - start, 1)
    paths = write_quant_report(out_dir, report, baseline, reference_logits, inputs, cfg.input.mean, cfg.input.std)
    return report, paths
