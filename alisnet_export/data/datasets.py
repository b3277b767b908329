"""Real-data datasets: an images/ + masks/ folder pair, and COCO-style person annotations.

Both yield ``(image (H, W, 3) uint8 RGB, target (H, W))`` like
:class:`~alisnet_export.data.synthetic.SyntheticPeople`: the folder gives a bool mask, COCO a uint8
target with 0 (background), 1 (person) and 255 (ignore: crowd regions). Images go through
:func:`alisnet_export.preprocess.load_rgb_image`, which refuses grayscale, alpha and tiny images.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DataError
from ..modeling import IGNORE_INDEX
from ..preprocess import IMAGE_SUFFIXES, load_mask, load_rgb_image
from .coco_masks import segmentation_to_mask

__all__ = ["SegmentationFolder", "CocoPersonDataset"]

_SHOW = 5  # how many file names an error lists


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" (+{len(names) - _SHOW} more)" if len(names) > _SHOW else "")


def _files_by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not folder.exists():
        raise DataError(f"{folder}: {what} folder does not exist; check the path (expected a folder of image files).")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a {what} folder.")
    by_stem: dict[str, Path] = {}
    duplicates: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in by_stem:
                duplicates.append(f"{by_stem[path.stem].name} / {path.name}")
            by_stem[path.stem] = path
    if duplicates:
        raise DataError(f"{folder}: several {what} files share a stem, so the pairing is ambiguous: {_few(duplicates)}. "
                        "Keep one file per stem.")
    if not by_stem:
        raise DataError(f"{folder}: the {what} folder holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    return by_stem


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read image header: {exc}") from None


class SegmentationFolder(Dataset):
    """Pairs ``images_dir/NAME.*`` with ``masks_dir/NAME.*`` (any image suffix) by file stem.

    Masks are binary: any non-zero value (or alpha, for RGBA masks) is the person. ``check_sizes``
    reads every file header up front so a size mismatch is reported before training starts.
    """

    def __init__(self, images_dir: str | Path, masks_dir: str | Path, *, check_sizes: bool = True,
                 cache: bool = False) -> None:
        self.images_dir, self.masks_dir = Path(images_dir), Path(masks_dir)
        #: decoded pairs kept in memory (``cache=True``): training reads each image many times, and decoding a
        #: 1024 px PNG costs more than the augmentation that follows
        self._cache: Optional[dict[int, tuple[np.ndarray, np.ndarray]]] = {} if cache else None
        images = _files_by_stem(self.images_dir, "images")
        masks = _files_by_stem(self.masks_dir, "masks")
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            parts = [f"images in {self.images_dir} and masks in {self.masks_dir} do not pair up by file stem:"]
            if no_mask:
                parts.append(f"{len(no_mask)} image(s) without a mask: {_few([images[s].name for s in no_mask])};")
            if no_image:
                parts.append(f"{len(no_image)} mask(s) without an image: {_few([masks[s].name for s in no_image])}.")
            parts.append("Each image NAME.jpg needs a mask NAME.png (same stem); rename or remove the odd ones.")
            raise DataError(" ".join(parts))
        self.pairs: list[tuple[Path, Path]] = [(images[s], masks[s]) for s in sorted(images)]
        if check_sizes:
            bad = [(i, m, _image_size(i), _image_size(m)) for i, m in self.pairs]
            bad = [b for b in bad if b[2] != b[3]]
            if bad:
                raise DataError(f"{len(bad)} mask(s) differ in size from their image: " + _few(
                    [f"{i} is {iw}x{ih} but {m} is {mw}x{mh}" for i, m, (iw, ih), (mw, mh) in bad])
                    + ". Each mask must have its image's width and height.")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image_path, mask_path = self.pairs[index]
        image = load_rgb_image(image_path)
        mask = load_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                            f"{image.shape[1]}x{image.shape[0]}; each mask must have its image's size.")
        if self._cache is not None:
            self._cache[index] = (image, mask)
        return image, mask

    def describe(self) -> str:
        return f"{len(self)} image/mask pairs from {self.images_dir} + {self.masks_dir}"


class CocoPersonDataset(Dataset):
    """COCO-style person segmentation: every person instance of an image merged into one mask (the paper).

    Items are ``(image, target)`` with target uint8: 1 = person, 0 = background, and 255 (ignore) on
    ``iscrowd`` regions when ``crowd_as_ignore`` (else crowds count as person). Images without any
    person annotation are kept as negatives unless ``include_empty=False``.
    """

    def __init__(self, annotation_json: str | Path, images_dir: str | Path, *, crowd_as_ignore: bool = True,
                 include_empty: bool = True, category: str = "person") -> None:
        self.annotation_json, self.images_dir = Path(annotation_json), Path(images_dir)
        self.crowd_as_ignore = crowd_as_ignore
        data = self._read_json()
        src = self.annotation_json
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DataError(f"{src}: not a COCO annotation file: it has no {key!r} list "
                                "(expected keys images, annotations, categories).")
        person_ids = {c.get("id") for c in data["categories"] if isinstance(c, dict) and c.get("name") == category}
        if not person_ids:
            names = sorted(str(c.get("name")) for c in data["categories"] if isinstance(c, dict))
            raise DataError(f"{src}: no category named {category!r}; categories are {_few(names) or 'none'}. "
                            "Use a file with person annotations (e.g. COCO instances_*.json).")
        if not self.images_dir.is_dir():
            raise DataError(f"{self.images_dir}: images folder does not exist (the file names in {src} are relative to it).")
        anns: dict[Any, list[dict]] = defaultdict(list)
        for ann in data["annotations"]:
            if isinstance(ann, dict) and ann.get("category_id") in person_ids:
                if "segmentation" not in ann or "image_id" not in ann:
                    raise DataError(f"{src}: annotation {ann.get('id')} has no 'segmentation' or 'image_id'.")
                anns[ann["image_id"]].append(ann)
        self.images: list[dict] = []
        for info in data["images"]:
            if not isinstance(info, dict) or not {"id", "file_name", "height", "width"} <= set(info):
                raise DataError(f"{src}: an image entry lacks id/file_name/height/width: {str(info)[:120]}")
            if include_empty or anns.get(info["id"]):
                self.images.append(info)
        self.annotations = anns
        if not self.images:
            raise DataError(f"{src}: no images to use (the file lists {len(data['images'])} images, "
                            f"{sum(len(a) for a in anns.values())} person annotations).")
        missing = [i["file_name"] for i in self.images if not (self.images_dir / i["file_name"]).is_file()]
        if missing:
            raise DataError(f"{len(missing)} image file(s) listed in {src} are missing from {self.images_dir}: "
                            f"{_few(missing)}. Check --images points at the folder the annotations were made for.")

    def _read_json(self) -> dict:
        try:
            data = json.loads(self.annotation_json.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{self.annotation_json}: no such annotation file.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.annotation_json}: cannot read it: {exc}") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.annotation_json}: not valid JSON ({exc}); expected a COCO annotation file.") from None
        if not isinstance(data, dict):
            raise DataError(f"{self.annotation_json}: expected a JSON object (a COCO annotation file), found {type(data).__name__}.")
        return data

    def __len__(self) -> int:
        return len(self.images)

    def target(self, index: int) -> np.ndarray:
        """The merged (H, W) uint8 target of image ``index`` (0 / 1 / 255)."""
        info = self.images[index]
        h, w = int(info["height"]), int(info["width"])
        person = np.zeros((h, w), dtype=bool)
        crowd = np.zeros((h, w), dtype=bool)
        for ann in self.annotations.get(info["id"], []):
            try:
                m = segmentation_to_mask(ann["segmentation"], h, w)
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{self.annotation_json}: annotation {ann.get('id')} of image {info['file_name']}: {exc}") from None
            if ann.get("iscrowd") and self.crowd_as_ignore:
                crowd |= m
            else:
                person |= m
        target = np.zeros((h, w), dtype=np.uint8)
        target[crowd] = IGNORE_INDEX
        target[person] = 1  # a person drawn over a crowd region is a person
        return target

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        info = self.images[index]
        path = self.images_dir / info["file_name"]
        image = load_rgb_image(path)
        if image.shape[:2] != (int(info["height"]), int(info["width"])):
            raise DataError(f"{path} is {image.shape[1]}x{image.shape[0]} but {self.annotation_json} says "
                            f"{info['width']}x{info['height']}; the annotations are for another version of this image.")
        return image, self.target(index)

    def describe(self) -> str:
        return f"{len(self)} images from {self.annotation_json} ({self.images_dir})"
