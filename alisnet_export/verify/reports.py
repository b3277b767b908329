"""Parity reports for people and for CI: JUnit XML, Markdown, HTML with overlay pictures.

* JUnit: one ``<testsuite>`` per artifact, one ``<testcase>`` per image x gate (and the mean gates),
  a ``<failure>`` with the measured value and the limit when a gate fails.
* Markdown / HTML: a summary per artifact, every failed gate, per-image metrics, and overlay PNGs of
  the worst images (float mask vs artifact mask, disagreement highlighted), because people would
  rather look than read.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .._io import atomic_write
from ..parity import UNCERTAIN_MARGIN, ImageMetrics, ParityReport, uncertainty_note
from ..visualize import disagreement_overlay, mask_overlay, save_png

__all__ = ["junit_xml", "write_junit", "denormalize", "write_overlays", "markdown_report", "html_report", "write_reports"]


def junit_xml(reports: Sequence[ParityReport]) -> str:
    suites = ET.Element("testsuites", name="alisnet-export parity")
    total_tests = total_failures = 0
    for report in reports:
        cases = report.gates or []
        failures = sum(1 for g in cases if not g.passed)
        suite = ET.SubElement(suites, "testsuite", name=f"parity.{report.artifact}", tests=str(len(cases) or 1),
                              failures=str(failures if cases else 1), errors="0", skipped="0")
        props = ET.SubElement(suite, "properties")
        for key, value in (("format", report.format), ("precision", report.precision)):
            ET.SubElement(props, "property", name=key, value=str(value))
        if not cases:  # nothing was compared: that is a failure, not a pass
            case = ET.SubElement(suite, "testcase", classname=f"parity.{report.artifact}", name="images")
            ET.SubElement(case, "failure", message="no images were compared", type="ParityError")
            total_tests += 1
            total_failures += 1
            continue
        for gate in cases:
            case = ET.SubElement(suite, "testcase", classname=f"parity.{report.artifact}",
                                 name=f"{gate.scope}.{gate.gate}", time="0")
            if not gate.passed:
                ET.SubElement(case, "failure", message=gate.describe(), type="ParityGateFailed").text = gate.describe()
        total_tests += len(cases)
        total_failures += failures
    suites.set("tests", str(total_tests))
    suites.set("failures", str(total_failures))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(path: Path, reports: Sequence[ParityReport], *, force: bool = True) -> None:
    text = junit_xml(reports)
    atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"), force=force)


def denormalize(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(1, 3, H, W) normalised input -> (H, W, 3) uint8 RGB picture."""
    rgb = (x[0].transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)) * 255.0
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def write_overlays(report: ParityReport, pictures: Mapping[str, np.ndarray], out_dir: Path, *, worst: int = 3) -> list[dict[str, Any]]:
    """PNG overlays of the ``worst`` images (lowest IoU): float mask, artifact mask, disagreement."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = sorted(report.images, key=lambda m: m.mask_iou)[:worst]
    written = []
    for m in ranked:
        if m.name not in report.masks or m.name not in pictures:
            continue
        ref, cand = report.masks[m.name]
        picture = pictures[m.name]
        stem = f"{report.artifact}.{m.name}".replace("@", "_").replace("/", "_")
        files = {}
        for kind, image in (("float", mask_overlay(picture, ref)), ("artifact", mask_overlay(picture, cand)),
                            ("diff", disagreement_overlay(picture, ref, cand))):
            path = out_dir / f"{stem}.{kind}.png"
            atomic_write(path, lambda p, im=image: save_png(im, p), force=True)
            files[kind] = path.name
        written.append({"image": m.name, "iou": m.mask_iou, "boundary_mean_px": m.boundary_mean_px, "files": files})
    return written


def _summary_rows(report: ParityReport) -> list[tuple[str, str]]:
    s = report.summary()
    if not s.get("images"):
        return [("images", "0")]
    return [
        ("status", "PASSED" if report.passed else "FAILED"),
        ("images", str(s["images"])),
        ("mask IoU", f"mean {s['mean_iou']:.4f}, min {s['min_iou']:.4f}"),
        ("boundary", f"mean {s['mean_boundary_px']:.2f} px, worst p95 {s['max_boundary_p95_px']:.2f} px"),
        ("max |Δlogit|", f"{s['max_abs_logit']:.4g} (mean {s['mean_abs_logit']:.3g})"),
        *([("outside PointRend's tie zone",
            f"max |Δlogit| {s['max_abs_logit_outside_ties']:.4g}; refined differently: at most "
            f"{s['max_flip_fraction']:.4%} of an image's pixels (zone ≤ {s['max_tie_zone_fraction']:.4%})")]
          if "max_abs_logit_outside_ties" in s else []),
        ("width drift", f"≤ {s['max_width_drift_px']} px at body heights 20/35/50/65/80%"),
        *([("float model unsure", f"up to {s['max_float_uncertain_fraction']:.1%} of the float person mask has "
            f"|fg - bg| < {UNCERTAIN_MARGIN:g}")] if "max_float_uncertain_fraction" in s else []),
    ]


def _uncertainty_note(report: ParityReport) -> str:
    return uncertainty_note({m.name: m.float_uncertain_fraction for m in report.images
                             if m.float_uncertain_fraction is not None})


def _unsure_cell(m: ImageMetrics) -> str:
    return "—" if m.float_uncertain_fraction is None else f"{m.float_uncertain_fraction:.1%}"


def _logit_cell(m: ImageMetrics) -> str:
    """Max |Δlogit|, and with a tie zone the value outside it and the pixels refined differently inside it."""
    if m.max_abs_logit_outside_ties is None:
        return f"{m.max_abs_logit:.3g}"
    return f"{m.max_abs_logit:.3g} ({m.max_abs_logit_outside_ties:.3g} outside ties; {m.flip_pixels} flipped)"


def markdown_report(reports: Sequence[ParityReport], overlays: Mapping[str, list[dict[str, Any]]],
                    *, title: str = "Parity report", context: Optional[Mapping[str, str]] = None) -> str:
    lines = [f"# {title}", ""]
    for key, value in (context or {}).items():
        lines.append(f"- **{key}**: {value}")
    verdict = all(r.passed for r in reports) and bool(reports)
    lines += ["", f"**Overall: {'PASSED' if verdict else 'FAILED'}**", ""]
    for report in reports:
        lines += [f"## {report.artifact} ({report.format}, {report.precision})", ""]
        lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in _summary_rows(report)] + [""]
        if report.failures:
            lines += ["Failed gates:", ""] + [f"- `{g.describe()}`" for g in report.failures] + [""]
        if _uncertainty_note(report):
            lines += [f"> **{_uncertainty_note(report)}**", ""]
        lines += ["| image | size | IoU | agreement | boundary mean / p95 px | max \\|Δlogit\\| | width drift px "
                  "| float unsure |",
                  "|---|---|---:|---:|---:|---:|---|---:|"]
        for m in report.images:
            lines.append(f"| {m.name} | {m.height}x{m.width} | {m.mask_iou:.4f} | {m.pixel_agreement:.4f} | "
                         f"{m.boundary_mean_px:.2f} / {m.boundary_p95_px:.2f} | {_logit_cell(m)} | "
                         f"{', '.join(map(str, m.width_drift_px))} | {_unsure_cell(m)} |")
        lines.append("")
        for item in overlays.get(report.artifact, []):
            files = item["files"]
            lines += [f"**{item['image']}**: IoU {item['iou']:.4f}, boundary {item['boundary_mean_px']:.2f} px "
                      "(float mask | artifact mask | disagreement: red = only float, blue = only artifact)", "",
                      f"![float]({files['float']}) ![artifact]({files['artifact']}) ![diff]({files['diff']})", ""]
    return "\n".join(lines) + "\n"


def html_report(reports: Sequence[ParityReport], overlays: Mapping[str, list[dict[str, Any]]],
                *, title: str = "Parity report", context: Optional[Mapping[str, str]] = None) -> str:
    e = html.escape
    verdict = all(r.passed for r in reports) and bool(reports)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.pass{color:#080}.fail{color:#b00;font-weight:bold}",
        "img{max-width:32%;margin-right:1%;border:1px solid #999}</style></head><body>",
        f"<h1>{e(title)}</h1><ul>",
    ]
    parts += [f"<li><b>{e(k)}</b>: {e(str(v))}</li>" for k, v in (context or {}).items()]
    parts.append(f"</ul><p class='{'pass' if verdict else 'fail'}'>Overall: {'PASSED' if verdict else 'FAILED'}</p>")
    for report in reports:
        cls = "pass" if report.passed else "fail"
        parts.append(f"<h2>{e(report.artifact)} <small>({e(report.format)}, {e(report.precision)})</small> "
                     f"<span class='{cls}'>{'PASSED' if report.passed else 'FAILED'}</span></h2><table>")
        parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _summary_rows(report)]
        parts.append("</table>")
        if report.failures:
            parts.append("<p class='fail'>Failed gates:</p><ul>")
            parts += [f"<li class='fail'>{e(g.describe())}</li>" for g in report.failures]
            parts.append("</ul>")
        if _uncertainty_note(report):
            parts.append(f"<p class='fail'>{e(_uncertainty_note(report))}</p>")
        parts.append("<table><tr><th>image</th><th>size</th><th>IoU</th><th>agreement</th><th>boundary mean / p95 px</th>"
                     "<th>max |Δlogit|</th><th>width drift px</th><th>float unsure</th></tr>")
        for m in report.images:
            parts.append(f"<tr><td>{e(m.name)}</td><td>{m.height}x{m.width}</td><td>{m.mask_iou:.4f}</td>"
                         f"<td>{m.pixel_agreement:.4f}</td><td>{m.boundary_mean_px:.2f} / {m.boundary_p95_px:.2f}</td>"
                         f"<td>{e(_logit_cell(m))}</td><td>{e(', '.join(map(str, m.width_drift_px)))}</td>"
                         f"<td>{_unsure_cell(m)}</td></tr>")
        parts.append("</table>")
        for item in overlays.get(report.artifact, []):
            f = item["files"]
            parts.append(f"<h3>{e(item['image'])}: IoU {item['iou']:.4f}, boundary {item['boundary_mean_px']:.2f} px</h3>"
                         "<p>float mask | artifact mask | disagreement (red: only float, blue: only artifact)</p>"
                         f"<img src='{e(f['float'])}'><img src='{e(f['artifact'])}'><img src='{e(f['diff'])}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_reports(out_dir: Path, reports: Sequence[ParityReport], pictures: Mapping[str, np.ndarray], *,
                  title: str = "Parity report", context: Optional[Mapping[str, str]] = None, worst: int = 3) -> dict[str, Path]:
    """Write report.md, report.html and the overlay PNGs into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overlays = {r.artifact: write_overlays(r, pictures, out_dir, worst=worst) for r in reports}
    md, page = markdown_report(reports, overlays, title=title, context=context), html_report(reports, overlays, title=title, context=context)
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    atomic_write(paths["markdown"], lambda p: p.write_text(md, encoding="utf-8"), force=True)
    atomic_write(paths["html"], lambda p: p.write_text(page, encoding="utf-8"), force=True)
    return paths
