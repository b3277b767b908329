"""The paper's evaluation protocol on ground truth, for checkpoints and exported artifacts side by side.

Protocol (ALiSNet, Sec. 4 and Eq. 1), per image:

1. Person box: the tight box of the ground-truth person pixels (default), or a given box (a
   ``--boxes`` file, or the union of the COCO person boxes). An image without a person and without a
   box is evaluated whole.
2. Crop to the box enlarged by ``margin`` (10%) of its size on each side, clipped to the image.
3. Resize the crop to ``height`` rows (default 1024), width keeping the aspect and rounded to a
   multiple of 32 (:func:`alisnet_export.preprocess.target_size`); normalise with the target's mean/std.
4. Run the target; upsample its logits bilinearly (half-pixel centres) **to the crop's own size** and
   take ``logit[1] > logit[0]``. The ground truth is cropped, never resized, so IoU is computed at
   the crop's original resolution, as the paper does, and the masks are those an app would get back
   (preprocessing spec step 5).
5. Person IoU of the crop; pixels labelled 255 (COCO crowd regions) count for neither side.

The reported number is the mean +- std over images of that per-image IoU, in percent (Eq. 1); the
dataset-level mIoU over {background, person} (on the same crops) is reported beside it.

A target is a float checkpoint (``.pth``/``.pt``/``.pkl``; preprocessing from its config) or an
artifact (``.ptl``, ``.pte``, ``.onnx``, ``.mlpackage``, a ``NAME.manifest.json`` or a bundle folder;
preprocessing from the manifest beside it, else from ``config``), run through its runtime's runner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import DataError, EnvironmentProblem
from .metrics import ConfusionCounts, SegmentationMetrics
from ..preprocess import crop_box, logits_to_mask, normalize, person_box, resize_rgb, target_size

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "EvalTarget",
    "EvalItem",
    "open_targets",
    "open_dataset",
    "read_boxes",
    "evaluate_targets",
    "TargetScore",
    "EvalResult",
    "resolve_margin",
    "runnable_targets",
    "write_eval_report",
    "write_table_into",
]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pkl")


@dataclass
class EvalTarget:
    """One model to score: a float checkpoint or an artifact, with the normalisation it expects."""

    label: str
    path: Path
    kind: str  # "checkpoint" or "artifact"
    format: str  # "torch" for checkpoints, else the artifact format
    precision: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    run: Optional[Callable[[np.ndarray], np.ndarray]] = None  # (1,3,H,W) float32 -> (1,K,H,W) logits
    skipped: Optional[str] = None  # why it cannot run here (e.g. Core ML off macOS)
    size_constraints: Optional[Mapping[str, int]] = None
    info: dict[str, Any] = field(default_factory=dict)

    def check_size(self, h: int, w: int, image: str) -> None:
        c = self.size_constraints
        if not c:
            return
        lo_h, hi_h = c.get("min_height", 0), c.get("max_height", 1 << 30)
        lo_w, hi_w = c.get("min_width", 0), c.get("max_width", 1 << 30)
        if not (lo_h <= h <= hi_h and lo_w <= w <= hi_w):
            raise DataError(
                f"{image}: its crop resizes to {h}x{w}, outside what {self.path} accepts (height {lo_h}..{hi_h}, "
                f"width {lo_w}..{hi_w}, from its manifest); evaluate at another --height or re-export with wider bounds"
            )


def _checkpoint_target(path: Path, config: Optional[str]) -> EvalTarget:
    from ..checkpoint import load_checkpoint
    from ..runtimes.torch_runners import TorchModelRunner

    loaded = load_checkpoint(path, config)
    if loaded.is_qat:
        raise DataError(f"{path}: a QAT checkpoint; eval scores float checkpoints and exported artifacts. "
                        "Export it first (alisnet-export ptl CKPT) and evaluate the .ptl.")
    cfg = loaded.config
    runner = TorchModelRunner(loaded.build_model())
    params = sum(p.numel() for p in runner.model.parameters())
    return EvalTarget(path.name, path, "checkpoint", "torch", "float32", tuple(cfg.input.mean), tuple(cfg.input.std),
                      run=runner, info={"variant": cfg.name, "sha256": loaded.sha256, "crop_margin": cfg.input.crop_margin,
                                        "size_bytes": 4 * params, "size_of": "float32 weights"})


def _artifact_targets(path: Path, config: Optional[str]) -> list[EvalTarget]:
    from ..config import InputConfig, load_config
    from ..verify.recheck import resolve_targets
    from ..runtimes.base import runner_for

    default_input = load_config(config).input if config else InputConfig()
    out = []
    for t in resolve_targets(path, precision="unknown"):  # precision comes from the manifest when there is one
        if t.manifest is not None:
            section = t.manifest["input"]
            mean, std = tuple(section["normalization"]["mean"]), tuple(section["normalization"]["std"])
            constraints = section.get("size_constraints")
            info = {"variant": t.manifest.get("model", {}).get("variant"), "preprocessing": "manifest",
                    "crop_margin": section.get("resize", {}).get("crop_margin")}
        else:
            mean, std, constraints = tuple(default_input.mean), tuple(default_input.std), None
            info = {"preprocessing": f"config {config}" if config else "default ImageNet mean/std (no manifest beside it)"}
        size = (sum(f.stat().st_size for f in t.path.rglob("*") if f.is_file()) if t.path.is_dir()
                else t.path.stat().st_size)
        target = EvalTarget(t.path.name, t.path, "artifact", t.format, t.precision, mean, std,
                            size_constraints=constraints, info={**info, "size_bytes": size, "size_of": "file"})
        try:
            target.run = runner_for(t.format)(t.path)
        except EnvironmentProblem as exc:
            target.skipped = str(exc)
        out.append(target)
    return out


def open_targets(paths: Sequence[Path], config: Optional[str] = None) -> list[EvalTarget]:
    """Open every target (checkpoints load their model, artifacts their runtime). Bad paths are DataErrors."""
    targets: list[EvalTarget] = []
    for path in map(Path, paths):
        if not path.exists():
            raise DataError(f"{path}: no such checkpoint, artifact, manifest or bundle folder")
        if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
            targets.append(_checkpoint_target(path, config))
        else:
            targets += _artifact_targets(path, config)
    labels = [t.label for t in targets]
    for t in targets:  # two targets with one file name (e.g. two bundles) get their full path as label
        if labels.count(t.label) > 1:
            t.label = str(t.path)
    return targets


@dataclass
class EvalItem:
    """One image of the evaluation set."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8
    target: np.ndarray  # (H, W) bool, or uint8 0/1/255
    box: Optional[tuple[int, int, int, int]] = None  # given person box (x0, y0, x1, y1); None: from the mask


def _foreground(target: np.ndarray) -> np.ndarray:
    return target if target.dtype == bool else target == 1


def read_boxes(path: Path) -> dict[str, tuple[int, int, int, int]]:
    """A JSON object ``{"IMAGE_STEM_OR_FILE_NAME": [x0, y0, x1, y1], ...}`` (pixels, x1/y1 exclusive)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such box file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON box file: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object mapping image names to [x0, y0, x1, y1], found {type(data).__name__}")
    boxes = {}
    for name, box in data.items():
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)) \
                or box[2] <= box[0] or box[3] <= box[1]:
            raise DataError(f"{path}: the box of {name!r} is {box!r}; expected [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
        boxes[str(name)] = tuple(int(round(v)) for v in box)
    return boxes


def open_dataset(*, data: Optional[Path] = None, coco: Optional[Path] = None, images: Optional[Path] = None,
                 boxes: Optional[Path] = None, coco_boxes: bool = False) -> tuple[str, int, Callable[[], Iterator[EvalItem]]]:
    """``(description, number of images, iterator factory)`` for an images/masks folder or a COCO file.

    ``data`` is a folder with ``images/`` and ``masks/`` (same stems), or the root written by
    ``alisnet-export demo-data`` (its ``heldout/`` pair is used).
    """
    from ..data.datasets import CocoPersonDataset, SegmentationFolder

    if coco_boxes and coco is None:
        raise DataError("--coco-boxes needs --coco FILE.json (the boxes come from its annotations)")
    if (data is None) == (coco is None):
        raise DataError("give either --data DIR (images/ + masks/) or --coco FILE.json --images DIR, not both or neither")
    given = read_boxes(boxes) if boxes is not None else {}
    if data is not None and str(data).startswith("testbed:"):
        from ..data.testbed import testbed_dataset

        folder = testbed_dataset(str(data))  # renders the split on first use
        names = [image.stem for image, _ in folder.pairs]
        files = [image.name for image, _ in folder.pairs]
        dataset, description = folder, (f"{data}: {len(folder.pairs)} synthetic people at 1024x768 with exact masks "
                                        "(alisnet_export.data.testbed; never trained or calibrated on)")
    elif data is not None:
        data = Path(data)
        if not (data / "images").is_dir() and (data / "heldout" / "images").is_dir():
            data = data / "heldout"  # the demo-data root: score its held-out set
        if not data.is_dir():
            raise DataError(f"{data}: no such dataset folder (expected DIR/images and DIR/masks with the same file stems)")
        folder = SegmentationFolder(data / "images", data / "masks")
        names = [image.stem for image, _ in folder.pairs]
        files = [image.name for image, _ in folder.pairs]
        dataset, description = folder, folder.describe()
    else:
        if coco_boxes and boxes is not None:
            raise DataError("give --boxes FILE or --coco-boxes, not both")
        if images is None:
            raise DataError(f"--coco {coco} needs --images DIR, the folder its file names are relative to")
        dataset = CocoPersonDataset(coco, images)  # crowd regions are ignored (255)
        files = [info["file_name"] for info in dataset.images]
        names = [Path(f).stem for f in files]
        description = dataset.describe()
    if given:
        missing = [f for n, f in zip(names, files) if n not in given and f not in given]
        if missing:
            raise DataError(f"{boxes}: no box for {len(missing)} image(s): {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''}; every image needs an entry (stem or file name)")

    def box_of(index: int) -> Optional[tuple[int, int, int, int]]:
        if given:
            return given.get(names[index], given.get(files[index]))
        if coco_boxes:
            info = dataset.images[index]
            anns = [a for a in dataset.annotations.get(info["id"], []) if not a.get("iscrowd") and a.get("bbox")]
            if not anns:
                return None
            x0 = min(a["bbox"][0] for a in anns)
            y0 = min(a["bbox"][1] for a in anns)
            x1 = max(a["bbox"][0] + a["bbox"][2] for a in anns)
            y1 = max(a["bbox"][1] + a["bbox"][3] for a in anns)
            return int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))
        return None

    def items() -> Iterator[EvalItem]:
        for i in range(len(dataset)):
            image, target = dataset[i]
            yield EvalItem(names[i], image, target, box_of(i))

    return description, len(dataset), items


@dataclass
class TargetScore:
    target: EvalTarget
    counts: ConfusionCounts = field(default_factory=ConfusionCounts)

    @property
    def metrics(self) -> Optional[SegmentationMetrics]:
        return self.counts.metrics() if self.counts.per_image else None

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        out: dict[str, Any] = {"target": t.label, "path": str(t.path), "kind": t.kind, "format": t.format,
                               "precision": t.precision, "mean": list(t.mean), "std": list(t.std), **t.info}
        if t.skipped:
            out.update(status="skipped", reason=t.skipped)
            return out
        m = self.metrics
        out.update(status="evaluated", metrics=m.to_dict() if m else None)
        if m:
            out["foreground_iou_percent"] = {"mean": round(100 * m.foreground_iou_mean, 3),
                                             "std": round(100 * m.foreground_iou_std, 3)}
        return out


@dataclass
class EvalResult:
    scores: list[TargetScore]
    images: list[dict[str, Any]]  # per image: name, crop, input size, IoU per target label
    height: int
    margin: float

    def table_rows(self) -> list[dict[str, str]]:
        rows = []
        for s in self.scores:
            t, m = s.target, s.metrics
            size = t.info.get("size_bytes")
            row = {"target": t.label, "format": t.format, "precision": t.precision,
                   "size": "" if size is None else f"{size / 1e6:.2f}"}
            if t.skipped or m is None:
                row.update(images="0", fg="skipped: " + (t.skipped or "no images"), miou="", person_bg="", acc="")
            else:
                row.update(images=str(m.num_images),
                           fg=f"{100 * m.foreground_iou_mean:.2f} ± {100 * m.foreground_iou_std:.2f}",
                           miou=f"{100 * m.miou:.2f}", person_bg=f"{100 * m.iou_person:.2f} / {100 * m.iou_background:.2f}",
                           acc=f"{100 * m.pixel_accuracy:.2f}")
            rows.append(row)
        return rows

    def markdown(self, *, title: str = "Evaluation on ground truth", context: Optional[Mapping[str, str]] = None) -> str:
        lines = [f"# {title}", ""]
        lines += [f"- **{k}**: {v}" for k, v in (context or {}).items()]
        lines += [f"- **protocol**: crop to the person box + {self.margin:.0%} margin, resize to {self.height} px "
                  "height (width a multiple of 32), logits upsampled to the crop, IoU at the crop's resolution "
                  "(ALiSNet Eq. 1); crowd pixels ignored", "",
                  "| target | format | precision | images | person IoU per image, mean ± std (%) | mIoU (%) "
                  "| IoU person / background (%) | pixel accuracy (%) | size (MB) |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in self.table_rows():
            lines.append(f"| {r['target']} | {r['format']} | {r['precision']} | {r['images']} | {r['fg']} | {r['miou']} "
                         f"| {r['person_bg']} | {r['acc']} | {r['size']} |")
        lines += ["", "Size: the artifact file; for a float checkpoint, its weights at float32 (4 bytes a parameter)."]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        import csv
        import io

        labels = [s.target.label for s in self.scores if not s.target.skipped]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "input_height", "input_width",
                         "gt_person_fraction"] + [f"iou:{label}" for label in labels])
        for row in self.images:
            writer.writerow([row["image"], *row["crop"], *row["input_hw"], f"{row['gt_person_fraction']:.6f}"]
                            + [f"{row['iou'][label]:.6f}" for label in labels])
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"height": self.height, "margin": self.margin, "targets": [s.to_dict() for s in self.scores],
                "images": self.images}


def _logits_on_crop(logits: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    if tuple(t.shape[-2:]) != tuple(crop_hw):
        t = F.interpolate(t, size=crop_hw, mode="bilinear", align_corners=False)
    return logits_to_mask(t)


def evaluate_targets(targets: Sequence[EvalTarget], items: Iterable[EvalItem], *, height: int = 1024,
                     margin: float = 0.10, progress: Optional[Callable[[str], None]] = None) -> EvalResult:
    """Score every runnable target on every item with the paper's protocol (module docstring).

    Each image is decoded, cropped and resized once; only the normalisation differs per target.
    """
    scores = [TargetScore(t) for t in targets]
    runnable = [s for s in scores if s.target.skipped is None]
    rows: list[dict[str, Any]] = []
    for item in items:
        h, w = item.image.shape[:2]
        if item.target.shape != (h, w):
            raise DataError(f"{item.name}: mask is {item.target.shape[1]}x{item.target.shape[0]} but the image is "
                            f"{w}x{h}; each mask must have its image's size")
        box = item.box or person_box(_foreground(item.target))
        x0, y0, x1, y1 = crop_box(box, (h, w), margin) if box is not None else (0, 0, w, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise DataError(f"{item.name}: person box {box} leaves an empty crop of a {w}x{h} image")
        size = target_size(y1 - y0, x1 - x0, height)
        pixels = resize_rgb(item.image[y0:y1, x0:x1], size)  # (1, 3, H, W) float in [0, 255]
        gt = item.target[y0:y1, x0:x1]
        row: dict[str, Any] = {"image": item.name, "crop": [x0, y0, x1, y1], "input_hw": list(size),
                               "box_source": "given" if item.box else ("mask" if box else "whole image"),
                               "gt_person_fraction": float(_foreground(gt).mean()), "iou": {}}
        for s in runnable:
            t = s.target
            t.check_size(size[0], size[1], item.name)
            x = normalize(pixels, t.mean, t.std).numpy()
            logits = np.asarray(t.run(x))
            if logits.ndim != 4 or logits.shape[0] != 1 or logits.shape[1] < 2:
                raise DataError(f"{t.path}: returned logits of shape {logits.shape}; expected (1, K, H, W)")
            pred = _logits_on_crop(logits, (y1 - y0, x1 - x0))
            row["iou"][t.label] = s.counts.add(pred, gt if gt.dtype == bool else gt.astype(np.uint8))
        rows.append(row)
        if progress:
            progress(item.name)
    if not rows:
        raise DataError("the evaluation set holds no images")
    return EvalResult(scores, rows, height, margin)


def resolve_margin(targets: Sequence[EvalTarget], margin: Optional[float] = None) -> float:
    """``margin``, else the crop margin that every target recording one agrees on (their manifests), else
    0.10, the paper's."""
    if margin is not None:
        return margin
    margins = {t.info.get("crop_margin") for t in targets if t.info.get("crop_margin") is not None}
    return margins.pop() if len(margins) == 1 else 0.10


def runnable_targets(targets: Sequence[EvalTarget]) -> list[EvalTarget]:
    """The targets whose runtime can run here; :class:`EnvironmentProblem` when none can."""
    runnable = [t for t in targets if t.skipped is None]
    if not runnable:
        raise EnvironmentProblem("none of the targets can run on this machine: " + "; ".join(t.skipped for t in targets))
    return runnable


def write_eval_report(folder: Path, result: EvalResult, markdown: str, payload: Mapping[str, Any]) -> dict[str, Path]:
    """``eval.md`` (``markdown``), ``per_image.csv`` and ``eval.json`` (``payload`` plus the list of these
    files) in ``folder``, each written atomically; returns the files."""
    from .._io import atomic_write

    folder = Path(folder)
    files = {"markdown": folder / "eval.md", "json": folder / "eval.json", "csv": folder / "per_image.csv"}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(files["markdown"], lambda p: p.write_text(markdown, encoding="utf-8"), force=True)
    atomic_write(files["csv"], lambda p: p.write_text(result.csv(), encoding="utf-8"), force=True)
    text = json.dumps({**payload, "files": {k: str(v) for k, v in files.items()}}, indent=2)
    atomic_write(files["json"], lambda p: p.write_text(text, encoding="utf-8"), force=True)
    return files


def write_table_into(path: Path, markdown: str, command: str, begin: str, end: str) -> None:
    """Put the table of ``markdown`` (:meth:`EvalResult.markdown`, without its title) and the ``command`` that
    generated it between the lines ``begin`` and ``end`` of the text file ``path`` (e.g. the README)."""
    from .._io import replace_between_markers

    block = "\n".join(markdown.splitlines()[2:]) + f"\n\nGenerated by `{command}`.\n"
    if not replace_between_markers(path, begin, end, block):
        raise DataError(f"{path}: has no {begin!r} ... {end!r} lines; add them where the table belongs.")
