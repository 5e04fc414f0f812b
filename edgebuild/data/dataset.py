"""Datasets: one Sample type for YOLO and COCO, `open_dataset(cfg)`, and the built-in demo dataset.

A Dataset lists the images of a split quickly (`image_files`), and parses labels into Samples
(`samples`, sorted by image path). Image headers are read to get sizes; an image that cannot be read
is skipped with a warning and counted (`dataset.on_corrupt=skip`) or is an error (`error`).
Label problems (class out of range, coordinates outside the image, malformed lines) are always errors.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgebuild.errors import EdgebuildError

log = logging.getLogger("edgebuild")

IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".mpo", ".dng", ".pfm"}
BUILTIN_DEMO = "builtin:demo"
DEMO_VERSION = "demo-v1"  # bump when edgebuild.demo.synth output changes
COORD_TOLERANCE = 0.01  # normalized coordinates may exceed [0, 1] by this much (then clipped), as Ultralytics


class Sample(NamedTuple):
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray  # [K, 4] float32 xyxy in original image pixels
    classes: np.ndarray  # [K] int64
    polygons: list | None  # K arrays [P, 2] float32 in pixels, or None when the labels have no polygons


class Dataset:
    """Base class: the split listing and label parsing are format specific, the corrupt-image policy is not."""

    format = ""

    def __init__(self, source: Path, names: list[str], on_corrupt: str = "skip"):
        self.source, self.names, self.on_corrupt = Path(source), list(names), on_corrupt
        self.skipped: dict[str, list[tuple[str, str]]] = {}  # split -> [(path, reason)]
        self._samples: dict[str, list[Sample]] = {}

    def splits(self) -> list[str]:
        raise NotImplementedError

    def image_files(self, split: str, key: str | None = None) -> list[Path]:
        """Sorted image paths of a split (no decoding). `key` names the config key that chose the split."""
        raise NotImplementedError

    def definition_files(self, split: str) -> list[Path]:
        """Files that define the split besides its images (data.yaml, the COCO json)."""
        return [self.source]

    def label_files(self, split: str, key: str | None = None) -> list[Path]:
        """Label files of the split (for cache keys)."""
        raise NotImplementedError

    def samples(self, split: str, key: str | None = None) -> list[Sample]:
        if split not in self._samples:
            self.skipped[split] = []
            self._samples[split] = self._load(split, key)
            if self.skipped[split]:
                path, reason = self.skipped[split][0]
                log.warning("dataset: skipped %d unreadable image(s) of split %r (first: %s: %s); "
                            "dataset.on_corrupt=error makes this an error", len(self.skipped[split]), split,
                            path, reason)
        return self._samples[split]

    def _load(self, split: str, key: str | None) -> list[Sample]:
        raise NotImplementedError

    def _image_size(self, path: Path, split: str) -> tuple[int, int] | None:
        """(width, height) after EXIF rotation, or None for a skipped unreadable image."""
        try:
            return image_size(path)
        except (OSError, ValueError, SyntaxError, ImportError) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        if self.on_corrupt == "error":
            raise EdgebuildError(str(path), f"the image cannot be read ({reason}).",
                                 "replace or delete the file, or set dataset.on_corrupt=skip to skip such images.")
        self.skipped[split].append((str(path), reason))
        return None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, as OpenCV will decode it (EXIF orientation applied).
    Raises OSError/ValueError for unreadable files, including JPEGs without an end-of-image marker."""
    with open(path, "rb") as f:
        head = f.read(16)
        if not any(head.startswith(m) for m in _MAGIC) and not (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
            raise ValueError("not an image (unknown file signature)")
        if head[:2] == b"\xff\xd8":
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            if b"\xff\xd9" not in f.read():
                raise ValueError("truncated JPEG: no end-of-image marker")
    with _pil_open()(path) as im:
        w, h = im.size
        if im.format == "JPEG" and im.getexif().get(0x0112) in (5, 6, 7, 8):
            w, h = h, w
    if w < 1 or h < 1:
        raise ValueError("zero-sized image")
    return int(w), int(h)


_MAGIC = (b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"PF", b"Pf")


def _pil_open():
    """PIL's own Image.open. Ultralytics replaces it process-wide with a wrapper that tries to pip-install
    pi-heif on any unidentified file; we never want a download (or a crash) from a bad dataset image."""
    import sys

    from PIL import Image

    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", None) or Image.open


def coord_error(where: str, value: float, what: str) -> EdgebuildError:
    return EdgebuildError(where, f"{what} {value:g} is outside the image (allowed [0, 1] +- {COORD_TOLERANCE}).",
                          "fix the label: coordinates must be normalized by the image width and height.")


def class_error(where: str, cls, nc: int, names_file: str) -> EdgebuildError:
    return EdgebuildError(where, f"class {cls} is out of range: {names_file} defines {nc} classes (0..{nc - 1}).",
                          f"fix the label, or add the class to the names in {names_file}.")


def open_dataset(cfg) -> Dataset:
    """The dataset of cfg.dataset (path, format, images, on_corrupt); builtin:demo is generated on first use."""
    d = cfg.dataset
    path = str(d.path)
    if path.startswith("builtin:"):
        if path != BUILTIN_DEMO:
            raise EdgebuildError("dataset.path", f"{path!r} is not a built-in dataset.",
                                 f"use {BUILTIN_DEMO} or the path of a YOLO data.yaml / COCO json.")
        from edgebuild.data.yolo import YoloDataset

        return YoloDataset(demo_dataset(cfg), d.on_corrupt)
    if d.format == "coco":
        from edgebuild.data.coco import CocoDataset

        return CocoDataset(path, d.images, d.on_corrupt)
    from edgebuild.data.yolo import YoloDataset

    return YoloDataset(path, d.on_corrupt)


def _cache_root(cfg) -> Path:
    from edgebuild.cache import cache_root

    return cache_root(cfg)


def demo_dataset(cfg=None) -> Path:
    """data.yaml of the demo dataset under <cache root>/datasets/demo-v1/, generated atomically on first use."""
    from edgebuild.demo import synth

    root = _cache_root(cfg) / "datasets"
    final = root / DEMO_VERSION
    if (final / "data.yaml").is_file():
        return final / "data.yaml"
    tmp = root / f".tmp-{DEMO_VERSION}-{uuid.uuid4().hex}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        synth.generate(tmp, seed=synth.DEMO_SEED, n_train=synth.DEMO_TRAIN, n_val=synth.DEMO_VAL,
                       imgsz=synth.DEMO_IMGSZ)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not leave a half-written dataset behind
        raise EdgebuildError("build.cache_dir", f"cannot write the demo dataset under {root} ({e.strerror}).",
                             "point build.cache_dir or $EDGEBUILD_CACHE at a writable directory.") from None
    try:
        os.rename(tmp, final)
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "data.yaml").is_file():
            raise
    return final / "data.yaml"
