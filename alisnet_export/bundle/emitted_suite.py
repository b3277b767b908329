"""Emit the runtime-only parity tests that travel with a bundle (``pytest BUNDLE/``).

Writes ``BUNDLE/tests/test_bundle_parity.py`` (a fixed file shipped in
``resources/bundle_tests/``) and ``BUNDLE/tests/parity_cases.npz``: photos already resized to the
parity height (uint8, so the test only has to normalise them per the manifest), the float model's
logits on them and, for each float gate's tolerance, PointRend's tie zone (``ties:TOL:NAME``, see
:mod:`.parity`), compressed.
"""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .._io import atomic_write
from ..config import ModelConfig
from ..preprocess import crop_box, load_rgb_image, mask_to_original, normalize, person_box, preprocess, resize_rgb, target_size

__all__ = ["TEST_FILE", "parity_cases", "write_bundle_tests"]

TEST_FILE = "test_bundle_parity.py"


def _case(image: np.ndarray, height: int, config: ModelConfig, model: nn.Module,
          tie_margins: Sequence[float]) -> tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]:
    size = target_size(image.shape[0], image.shape[1], height)
    rgb = np.clip(np.round(resize_rgb(image, size)[0].permute(1, 2, 0).numpy()), 0, 255).astype(np.uint8)
    x = normalize(torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), config.input.mean, config.input.std)
    with torch.inference_mode():
        if not tie_margins or not hasattr(model, "forward_with_tie_zone"):
            return rgb, model(x).numpy(), {}
        passes = {m: model.forward_with_tie_zone(x, m) for m in tie_margins}  # each pass also gives the logits
        return rgb, next(iter(passes.values()))[0].numpy(), {m: zone[0].numpy() for m, (_, zone) in passes.items()}


def parity_cases(photos: Sequence[Path], config: ModelConfig, model: nn.Module, *, height: int,
                 tie_margins: Sequence[float] = ()) -> dict[str, np.ndarray]:
    """Each photo whole and cropped to the person (box from the float model's mask, +margin); with the
    float model's PointRend tie zone at each of ``tie_margins`` (the float gates' tolerances)."""
    arrays: dict[str, np.ndarray] = {}
    names = []
    for path in photos:
        image = load_rgb_image(path)
        views = [(f"{path.stem}@{height}", image)]
        whole = preprocess(image, mean=config.input.mean, std=config.input.std, height=height)
        with torch.inference_mode():
            box = person_box(mask_to_original(model(whole.tensor), whole))
        if box is not None:
            x0, y0, x1, y1 = crop_box(box, image.shape[:2], config.input.crop_margin)
            views.append((f"{path.stem}-person@{height}", image[y0:y1, x0:x1]))
        for name, view in views:
            rgb, logits, ties = _case(np.ascontiguousarray(view), height, config, model, tie_margins)
            arrays[f"rgb:{name}"], arrays[f"logits:{name}"] = rgb, logits.astype(np.float32)
            for margin, zone in ties.items():
                arrays[f"ties:{float(margin)!r}:{name}"] = zone
            names.append(name)
    arrays["names"] = np.array(names)
    return arrays


def write_bundle_tests(bundle: Path, photos: Sequence[Path], config: ModelConfig, model: nn.Module, *,
                       height: int = 384, tie_margins: Sequence[float] = (), force: bool = False) -> dict[str, Path]:
    """Write the test module and its data into ``bundle/tests``; returns their paths."""
    folder = Path(bundle) / "tests"
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **parity_cases(photos, config, model.eval(), height=height, tie_margins=tie_margins))
    source = resources.files("alisnet_export").joinpath(f"resources/bundle_tests/{TEST_FILE}").read_text(encoding="utf-8")
    paths = {"tests": folder / TEST_FILE, "cases": folder / "parity_cases.npz"}
    atomic_write(paths["cases"], lambda p: p.write_bytes(buf.getvalue()), force=force)
    atomic_write(paths["tests"], lambda p: p.write_text(source, encoding="utf-8"), force=force)
    return paths
