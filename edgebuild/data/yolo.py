"""Ultralytics YOLO layout: data.yaml (`path`, `train`/`val`/`test`, `names` dict or list),
images/<split>/*, labels/<split>/*.txt with `cls cx cy w h` boxes or `cls x1 y1 x2 y2 ...` polygons,
normalized to [0, 1]. `path` is relative to the data.yaml itself; a split is a directory, a .txt list
of images, or a list of those. An image without a label file has no objects.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml

from edgebuild.data.dataset import (COORD_TOLERANCE, IMAGE_SUFFIXES, Dataset, Sample, class_error,
                                    coord_error)
from edgebuild.errors import EdgebuildError

SPLIT_KEYS = ("train", "val", "test")


def label_path(image: Path) -> Path:
    """Ultralytics' img2label_paths: the last /images/ becomes /labels/, the suffix .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    s = str(image)
    return Path(sb.join(s.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


_LISTINGS: dict[str, tuple[list[tuple[str, int]], list[Path]]] = {}


def list_images(root: Path) -> list[Path]:
    """Image files under `root` (recursively). Remembered per process with every directory's mtime: a plan lists a
    split several times (precheck, calibset, validation), and 20,000 images take a second to walk."""
    key = str(root)
    hit = _LISTINGS.get(key)
    if hit is not None:
        try:
            if all(os.stat(d).st_mtime_ns == m for d, m in hit[0]):
                return list(hit[1])
        except OSError:
            pass
    dirs, found, stack = [], [], [key]
    while stack:
        d = stack.pop()
        dirs.append((d, os.stat(d).st_mtime_ns))
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir():
                    stack.append(e.path)
                elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file():
                    found.append(e.path)
    files = [Path(f) for f in sorted(found)]
    _LISTINGS[key] = (dirs, files)
    return list(files)


class YoloDataset(Dataset):
    format = "yolo"

    def __init__(self, path: str | Path, on_corrupt: str = "skip"):
        p = Path(path).expanduser()
        if p.is_dir() and (p / "data.yaml").is_file():
            p = p / "data.yaml"
        if not p.is_file():
            raise EdgebuildError("dataset.path", f"the YOLO data.yaml {p.resolve()} does not exist.",
                                 "point dataset.path at the data.yaml of a YOLO dataset (or use builtin:demo; "
                                 "for a COCO json also set dataset.format=coco).")
        p = p.resolve()
        if p.suffix.lower() == ".json":
            raise EdgebuildError("dataset.format", f"is yolo but dataset.path {p} is a json file.",
                                 "set dataset.format=coco for a COCO instances json.")
        try:
            doc = yaml.safe_load(p.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise EdgebuildError(str(p), f"is not valid YAML ({str(e).splitlines()[0]}).",
                                 "fix the file; see the Ultralytics dataset format.") from None
        if not isinstance(doc, dict):
            raise EdgebuildError(str(p), "is not a YAML mapping with path/train/val/names.",
                                 "write a data.yaml with path, train, val and names keys.")
        self.doc = doc
        super().__init__(p, _names(doc, p), on_corrupt)
        root = Path(doc.get("path") or ".")
        self.root = (root if root.is_absolute() else p.parent / root).resolve()

    def splits(self) -> list[str]:
        return [k for k in SPLIT_KEYS if self.doc.get(k)]

    def _sources(self, split: str, key: str | None) -> list[Path]:
        if not self.doc.get(split):
            raise EdgebuildError(key or str(self.source),
                                 f"split {split!r} is not defined in {self.source} (it defines: "
                                 f"{', '.join(self.splits()) or 'none'}).",
                                 f"use one of those splits, or add `{split}: images/{split}` to {self.source}.")
        entries = self.doc[split] if isinstance(self.doc[split], list) else [self.doc[split]]
        out = []
        for e in entries:
            q = Path(str(e))
            q = q if q.is_absolute() else self.root / q
            if not q.exists():
                raise EdgebuildError(str(self.source), f"the {split!r} images {q} do not exist.",
                                     f"create {q} or fix `{split}:` (relative to path: {self.root}).")
            out.append(q)
        return out

    def image_files(self, split: str, key: str | None = None) -> list[Path]:
        files: list[Path] = []
        for src in self._sources(split, key):
            if src.is_dir():
                files += list_images(src)
            else:  # a .txt list of images, relative to the dataset root
                for line in src.read_text().splitlines():
                    if line.strip():
                        f = Path(line.strip())
                        files.append(f if f.is_absolute() else (self.root / f).resolve())
        files = sorted(set(files), key=str)
        if not files:
            raise EdgebuildError(key or str(self.source),
                                 f"split {split!r} of {self.source} has no images "
                                 f"(looked in {', '.join(str(s) for s in self._sources(split, key))}).",
                                 f"put images ({', '.join(sorted(IMAGE_SUFFIXES))}) there or choose another split.")
        return files

    def label_files(self, split: str, key: str | None = None) -> list[Path]:
        return [lp for lp in map(label_path, self.image_files(split, key)) if lp.is_file()]

    def _load(self, split: str, key: str | None) -> list[Sample]:
        out = []
        for img in self.image_files(split, key):
            size = self._image_size(img, split)
            if size is None:
                continue
            out.append(_parse_labels(img, label_path(img), size, len(self.names), self.source.name))
        return out


def _names(doc: dict, path: Path) -> list[str]:
    names = doc.get("names")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    if isinstance(names, dict) and names:
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            keys = []
        if keys != list(range(len(names))):
            raise EdgebuildError(f"{path}: names", "class ids must be the integers 0..N-1.",
                                 "number the names 0, 1, 2, ... without gaps.")
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    raise EdgebuildError(f"{path}: names", "the class names are missing.",
                         "add `names:` as a list or a {0: name, 1: name} mapping.")


def _parse_labels(img: Path, lp: Path, size: tuple[int, int], nc: int, names_file: str) -> Sample:
    w, h = size
    boxes, classes, polys, all_polys = [], [], [], True
    if lp.is_file():
        for n, line in enumerate(lp.read_text().splitlines(), 1):
            if not line.strip():
                continue
            where = f"{lp}:{n}"
            try:
                vals = [float(v) for v in line.split()]
            except ValueError:
                raise EdgebuildError(where, f"not a label line: {line[:60]!r}.",
                                     "write `cls cx cy w h` or `cls x1 y1 x2 y2 ...` with numbers.") from None
            cls, coords = vals[0], np.array(vals[1:], np.float64)
            if cls != int(cls) or not 0 <= cls < nc:
                raise class_error(where, int(cls) if cls == int(cls) else cls, nc, names_file)
            if len(coords) == 4:
                cx, cy, bw, bh = coords
                pts_norm = np.array([[cx - bw / 2, cy - bh / 2], [cx + bw / 2, cy + bh / 2]])
                all_polys = False
                poly = None
            elif len(coords) >= 6 and len(coords) % 2 == 0:
                pts_norm = coords.reshape(-1, 2)
                poly = pts_norm
            else:
                raise EdgebuildError(where, f"{len(vals)} numbers is neither a box (5) nor a polygon (odd, >= 7).",
                                     "write `cls cx cy w h` or `cls x1 y1 x2 y2 x3 y3 ...`.")
            bad = pts_norm[(pts_norm < -COORD_TOLERANCE) | (pts_norm > 1 + COORD_TOLERANCE)]
            if bad.size:
                raise coord_error(where, float(bad[0]), "coordinate")
            pts = pts_norm.clip(0, 1) * (w, h)
            boxes.append([*pts.min(0), *pts.max(0)])
            classes.append(int(cls))
            if poly is not None:
                polys.append((poly.clip(0, 1) * (w, h)).astype(np.float32))
    return Sample(img, w, h, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64),
                  polys if all_polys else None)
