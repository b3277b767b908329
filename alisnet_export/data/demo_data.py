"""The offline real-people demo set: registry photos and video, labelled by a matting teacher.

    fetch (demo_sources)  ->  teacher labels (teacher, pedestrians)  ->  held-out set (never trained on)
                          ->  training set: frame crops, photo crops, copy-paste composites,
                              person-free backgrounds, synthetic people  ->  DIR/train/{images,masks}

Layout written to ``out_dir`` (a git-ignored folder; nothing here is committed)::

    train/images/STEM.jpg   train/masks/STEM.png    portrait samples, masks 0/255 (SegmentationFolder)
    heldout/images/STEM.png heldout/masks/STEM.png  teacher masks of the evaluation images
    dataset.json   options, counts, and every sample's provenance
    sources.json   SOURCES.md   every fetched file: package, version, licence, sha256, how it was used

Held out, never trained on: ``astronaut.png`` and ``grace_hopper.jpg`` (the repository's test
photos) and the last :attr:`DemoDataOptions.heldout_frames` frames of ``vtest.avi``; no training frame
lies within :attr:`DemoDataOptions.frame_margin` frames of them, and the empty scene the frames are
compared with is the median of (every ``frame_stride``-th of) the frames before that margin only. :func:`check_heldout_excluded` re-checks
every sample's provenance before the dataset is declared built.

Real frames are cropped at the scale the model sees them at evaluation (1024 px high), so a
``train-demo`` crop of :attr:`DemoDataOptions.sample_size` shows people at their evaluation size.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import DataError, OutputError
from .copy_paste import Cutout, composite_portrait, cutouts_from_label, portrait_crop
from .demo_sources import FetchedSources, sources_markdown
from .pedestrians import label_frame, median_background, read_video_frames
from .teacher import MattingTeacher, alpha_to_mask

__all__ = [
    "DemoDataOptions",
    "DemoDataset",
    "HELDOUT_PHOTOS",
    "VIDEO",
    "heldout_frame_indices",
    "training_frame_indices",
    "check_heldout_excluded",
    "build_demo_dataset",
    "load_rgb",
    "open_demo_dataset",
]

HELDOUT_PHOTOS = ("astronaut.png", "grace_hopper.jpg")
VIDEO = "vtest.avi"
PERSON_PHOTOS = ("messi5.jpg", "camera.png", "obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
EVAL_HEIGHT = 1024


@dataclass(frozen=True)
class DemoDataOptions:
    seed: int = 0
    sample_size: tuple[int, int] = (384, 288)  # (H, W) of every training sample: portrait
    heldout_frames: int = 100  # the last N frames of the video
    frame_margin: int = 20  # no training frame this close to a held-out one
    frame_stride: int = 3  # every Nth frame before the margin is labelled for training
    crops_per_frame: int = 4
    crops_per_photo: int = 100
    composites: int = 1200
    portrait_composites: float = 0.6  # share of composites with one large person from the person photos
    portrait_height_range: tuple[float, float] = (0.8, 1.9)  # person height / crop height (above 1: cut off)
    background_crops: int = 400  # person-free portrait crops of the background photos (empty masks)
    scene_crops: int = 100  # ... of the video's empty scene (the median background)
    synthetic: int = 400  # synthetic people (exact masks) from alisnet_export.data.synthetic
    teacher_short_side: int = 512
    tree_frame_stride: int = 10

    def __post_init__(self) -> None:
        h, w = self.sample_size
        if h % 32 or w % 32 or h < w:
            raise ValueError(f"sample_size {self.sample_size}: need a portrait (H >= W), both multiples of 32")
        if self.heldout_frames < 1 or self.frame_margin < 0 or self.frame_stride < 1:
            raise ValueError("heldout_frames and frame_stride must be >= 1, frame_margin >= 0")


def heldout_frame_indices(total: int, count: int) -> list[int]:
    """The last ``count`` frames of a ``total``-frame video: evaluation only."""
    if not 0 < count < total:
        raise DataError(f"cannot hold out {count} of {total} video frames; choose 0 < heldout_frames < {total}")
    return list(range(total - count, total))


def training_frame_indices(total: int, heldout: Sequence[int], margin: int, stride: int) -> list[int]:
    """Every ``stride``-th frame that is more than ``margin`` frames away from every held-out frame."""
    first_heldout = min(heldout)
    return [i for i in range(0, total, stride) if i < first_heldout - margin and i not in heldout]


def check_heldout_excluded(provenance: Iterable[dict], heldout_sources: Sequence[str], heldout_frames: Sequence[int],
                           margin: int) -> None:
    """Raise if any training sample comes from a held-out photo or from a video frame near a held-out one."""
    lo, hi = min(heldout_frames) - margin, max(heldout_frames) + margin
    for record in provenance:
        for source in record.get("sources", []):
            name, _, frame = source.partition("@")
            if name in heldout_sources:
                raise DataError(f"training sample {record['stem']} uses held-out image {name}; this is a bug in the "
                                "data step: the held-out photos must never be trained on.")
            if name == VIDEO and frame and lo <= int(frame) <= hi:
                raise DataError(f"training sample {record['stem']} uses video frame {frame}, within {margin} frames of "
                                f"the held-out block {min(heldout_frames)}..{max(heldout_frames)}.")


def load_rgb(path: Path) -> np.ndarray:
    """Any of the fetched images as (H, W, 3) uint8 RGB: grey is replicated, transparency flattened on white."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                flat = Image.new("RGBA", im.size, (255, 255, 255, 255))
                flat.alpha_composite(im)
                im = flat
            return np.asarray(im.convert("RGB")).copy()
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the image: {exc}; delete the cache and run `make demo-data` again.") from None


# --------------------------------------------------------------------------------------------------
class _Writer:
    """Writes samples as STEM.jpg + STEM.png (0/255) and remembers where each came from."""

    def __init__(self, folder: Path, image_format: str) -> None:
        self.images, self.masks = folder / "images", folder / "masks"
        self.images.mkdir(parents=True, exist_ok=True)
        self.masks.mkdir(parents=True, exist_ok=True)
        self.image_format = image_format
        self.records: list[dict] = []

    def add(self, stem: str, image: np.ndarray, mask: np.ndarray, kind: str, sources: Sequence[str]) -> None:
        if image.shape[:2] != mask.shape or image.ndim != 3:
            raise ValueError(f"{stem}: image {image.shape} and mask {mask.shape} do not fit")
        suffix = ".jpg" if self.image_format == "jpeg" else ".png"
        kwargs = {"quality": 93} if self.image_format == "jpeg" else {}
        Image.fromarray(np.ascontiguousarray(image)).save(self.images / f"{stem}{suffix}", **kwargs)
        Image.fromarray(mask.astype(np.uint8) * 255).save(self.masks / f"{stem}.png")
        self.records.append({"stem": stem, "kind": kind, "sources": list(sources),
                             "person_fraction": round(float(mask.mean()), 4)})


@dataclass
class DemoDataset:
    """What :func:`build_demo_dataset` wrote (or :func:`open_demo_dataset` found)."""

    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    heldout: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def train_images(self) -> Path:
        return self.root / "train" / "images"

    @property
    def train_masks(self) -> Path:
        return self.root / "train" / "masks"

    @property
    def heldout_images(self) -> Path:
        return self.root / "heldout" / "images"

    @property
    def heldout_masks(self) -> Path:
        return self.root / "heldout" / "masks"


def open_demo_dataset(root: str | Path) -> DemoDataset:
    """A dataset a previous ``demo-data`` run built, or a DataError saying how to build it."""
    root = Path(root)
    index = root / "dataset.json"
    if not index.is_file():
        raise DataError(f"{index}: no demo dataset in {root}. Build it with `make demo-data` (or "
                        f"`alisnet-export demo-data --output {root}`).")
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{index}: unreadable ({exc}); rebuild with `alisnet-export demo-data --force`.") from None
    dataset = DemoDataset(root, data.get("counts", {}), data.get("heldout", []), data.get("seconds", 0.0))
    for folder in (dataset.train_images, dataset.train_masks, dataset.heldout_images, dataset.heldout_masks):
        if not folder.is_dir():
            raise DataError(f"{folder}: missing from the demo dataset; rebuild with `alisnet-export demo-data --force`.")
    return dataset


def _prepare(out_dir: Path, force: bool) -> None:
    owned = [out_dir / name for name in ("train", "heldout", "dataset.json", "sources.json", "SOURCES.md")]
    if any(p.exists() for p in owned):
        if not force:
            raise OutputError(f"{out_dir}: already holds a demo dataset; pass --force to rebuild it or choose another "
                              "--output.")
        for p in owned:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create it: {exc.strerror}") from None


def _say(progress: Optional[Callable[[str], None]], text: str) -> None:
    if progress:
        progress(text)


def _bar(items: Sequence, what: str, progress: Optional[Callable[[str], None]]) -> Iterable:
    """A progress bar on stderr when the caller reports progress (the CLI), else the items themselves."""
    if progress is None:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=what, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False)


def build_demo_dataset(sources: FetchedSources, out_dir: str | Path, options: DemoDataOptions = DemoDataOptions(), *,
                       force: bool = False, progress: Optional[Callable[[str], None]] = None) -> DemoDataset:
    """Label, composite and write the demo dataset (see the module docstring). Deterministic for a seed."""
    began = time.perf_counter()
    out_dir = Path(out_dir)
    _prepare(out_dir, force)
    teacher = MattingTeacher(sources.teacher, short_side=options.teacher_short_side)
    size = options.sample_size
    used: dict[str, str] = {}

    _say(progress, "held-out photos: teacher masks")
    heldout = _Writer(out_dir / "heldout", "png")
    for name in HELDOUT_PHOTOS:
        image = load_rgb(sources.path(name))
        heldout.add(Path(name).stem, image, alpha_to_mask(teacher.alpha(image)), "heldout_photo", [name])
        used[name] = "held out: evaluation only (teacher mask)"

    _say(progress, f"{VIDEO}: decoding, median background of the training frames")
    frames = read_video_frames(sources.path(VIDEO))
    heldout_idx = heldout_frame_indices(len(frames), options.heldout_frames)
    train_idx = training_frame_indices(len(frames), heldout_idx, options.frame_margin, options.frame_stride)
    scene = median_background(frames[0:heldout_idx[0] - options.frame_margin:options.frame_stride])
    _say(progress, f"{VIDEO}: labelling {len(heldout_idx)} held-out frames (motion + teacher on crops)")
    for i in _bar(heldout_idx, "held-out frames", progress):
        heldout.add(f"vtest_{i:04d}", frames[i], label_frame(frames[i], scene, teacher).mask, "heldout_frame",
                    [f"{VIDEO}@{i}"])
    used[VIDEO] = (f"frames {train_idx[0]}..{train_idx[-1]} (every {options.frame_stride}th) trained on; "
                   f"frames {heldout_idx[0]}..{heldout_idx[-1]} held out")

    train = _Writer(out_dir / "train", "jpeg")
    cutouts = _video_samples(train, frames, train_idx, scene, teacher, options, progress)
    del frames
    photo_cutouts = _photo_samples(train, sources, teacher, options, used, progress)
    cutouts += photo_cutouts
    backgrounds = _backgrounds(sources, options, used, scene)
    _say(progress, f"copy-paste: {options.composites} composites from {len(cutouts)} cut-outs on "
                   f"{len(backgrounds)} backgrounds; {options.background_crops + options.scene_crops} person-free crops")
    rng = np.random.default_rng([options.seed, 3])
    names = sorted(backgrounds)
    for k in range(options.composites):
        bg = names[int(rng.integers(len(names)))]
        if photo_cutouts and rng.random() < options.portrait_composites:
            # the paper's framing: one person filling the crop (head and torso, or the whole body), as the
            # model sees a person-box crop at 1024 px. Only six photos hold large people, so the pedestrians
            # are upscaled to that size too (many shapes and poses), and colours are remapped
            pool = photo_cutouts if rng.random() < 0.4 else cutouts
            image, mask, pasted = composite_portrait(rng, backgrounds[bg], pool, size, max_people=2,
                                                     height_range=options.portrait_height_range, max_upscale=8.0,
                                                     recolor=0.6, top_range=(-0.05, 0.25))
        else:
            image, mask, pasted = composite_portrait(rng, backgrounds[bg], cutouts, size)
        train.add(f"composite_{k:05d}", image, mask, "composite", [bg, *pasted])
    for k in range(options.background_crops):
        bg = names[int(rng.integers(len(names)))]
        image, mask = portrait_crop(rng, backgrounds[bg], None, size, scale_range=(0.3, 1.0))
        train.add(f"background_{k:05d}", image, mask, "background", [bg])
    eval_scale = EVAL_HEIGHT / scene.shape[0]
    for k in range(options.scene_crops):
        image, mask = portrait_crop(rng, scene, None, size, scale=eval_scale * rng.uniform(0.8, 1.25))
        train.add(f"scene_{k:05d}", image, mask, "background", [f"{VIDEO}:median"])
    _synthetic_samples(train, options, progress)

    check_heldout_excluded(train.records, HELDOUT_PHOTOS, heldout_idx, options.frame_margin)
    counts: dict[str, int] = {}
    for record in train.records:
        counts[record["kind"]] = counts.get(record["kind"], 0) + 1
    seconds = round(time.perf_counter() - began, 1)
    summary = {
        "format": "alisnet-export-demo-data", "version": 1, "options": asdict(options), "seconds": seconds,
        "counts": counts, "train_samples": len(train.records), "heldout": [r["stem"] for r in heldout.records],
        "heldout_frames": [heldout_idx[0], heldout_idx[-1]], "training_frames": train_idx,
        "teacher": {"file": sources.records[sources.names("teacher")[0]]["file"],
                    "sha256": sources.records[sources.names("teacher")[0]]["sha256"],
                    "short_side": options.teacher_short_side, "threshold": 0.5},
        "samples": train.records, "heldout_samples": heldout.records,
    }
    (out_dir / "dataset.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    records = {n: dict(r, used_as=used.get(n, "not used")) for n, r in sources.records.items()}
    (out_dir / "sources.json").write_text(json.dumps(records, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (out_dir / "SOURCES.md").write_text(sources_markdown(sources.records, used), encoding="utf-8")
    return DemoDataset(out_dir, counts, summary["heldout"], seconds)


def _video_samples(train: _Writer, frames: list[np.ndarray], indices: Sequence[int], scene: np.ndarray,
                   teacher: MattingTeacher, options: DemoDataOptions,
                   progress: Optional[Callable[[str], None]]) -> list[Cutout]:
    """Portrait crops of the labelled training frames at evaluation scale; the pedestrians as cut-outs."""
    _say(progress, f"{VIDEO}: labelling {len(indices)} training frames")
    eval_scale = EVAL_HEIGHT / frames[0].shape[0]
    cutouts: list[Cutout] = []
    for i in _bar(indices, "training frames", progress):
        label = label_frame(frames[i], scene, teacher)
        rng = np.random.default_rng([options.seed, 1, i])
        for k in range(options.crops_per_frame):
            image, mask = portrait_crop(rng, frames[i], label.alpha, options.sample_size, scale=eval_scale,
                                        near_person=k > 0)
            train.add(f"frame_{i:04d}_{k}", image, mask, "video_frame", [f"{VIDEO}@{i}"])
        # a pedestrian is ~60-150 px here; at twice that it is as sharp as the evaluation's 1024 px frames
        cutouts += cutouts_from_label(frames[i], label.alpha, label.mask, f"{VIDEO}@{i}", min_height=50,
                                      max_upscale=eval_scale * 1.25)
    return cutouts


def _photo_samples(train: _Writer, sources: FetchedSources, teacher: MattingTeacher, options: DemoDataOptions,
                   used: dict[str, str], progress: Optional[Callable[[str], None]]) -> list[Cutout]:
    cutouts: list[Cutout] = []
    for p, name in enumerate(PERSON_PHOTOS):
        _say(progress, f"{name}: teacher mask, {options.crops_per_photo} portrait crops, cut-out")
        image = load_rgb(sources.path(name))
        alpha = teacher.alpha(image)
        rng = np.random.default_rng([options.seed, 2, p])
        for k in range(options.crops_per_photo):
            crop, mask = portrait_crop(rng, image, alpha, options.sample_size, scale_range=(0.45, 1.0),
                                       near_person=True)
            train.add(f"photo_{Path(name).stem}_{k:03d}", crop, mask, "photo", [name])
        cutouts += cutouts_from_label(image, alpha, alpha_to_mask(alpha), name, min_height=80, max_upscale=2.5)
        used[name] = "person photo: teacher mask, portrait crops, cut-out for composites"
    return cutouts


def _backgrounds(sources: FetchedSources, options: DemoDataOptions, used: dict[str, str],
                 scene: np.ndarray) -> dict[str, np.ndarray]:
    """Every person-free image (photos, tree.avi frames, the video's empty scene), by provenance name."""
    out = {name: load_rgb(sources.path(name)) for name in sources.names("background")}
    for name in out:
        used[name] = "person-free background (empty mask; composites)"
    for video in sources.names("background_video"):
        frames = read_video_frames(sources.path(video))
        for i in range(0, len(frames), options.tree_frame_stride):
            out[f"{video}@{i}"] = frames[i]
        used[video] = f"person-free background: every {options.tree_frame_stride}th frame"
    out[f"{VIDEO}:median"] = scene
    return out


def _synthetic_samples(train: _Writer, options: DemoDataOptions, progress: Optional[Callable[[str], None]]) -> None:
    if options.synthetic <= 0:
        return
    from .synthetic import SyntheticPeople

    _say(progress, f"synthetic people: {options.synthetic}")
    people = SyntheticPeople(options.synthetic, *options.sample_size, seed=options.seed)
    for k in range(options.synthetic):
        image, mask = people[k]
        train.add(f"synthetic_{k:05d}", image, mask, "synthetic", [f"synthetic@{options.seed}:{k}"])
