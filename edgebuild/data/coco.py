"""COCO instances json: images (id, file_name, width, height), annotations (image_id, category_id,
bbox [x, y, w, h] pixels, segmentation polygons), categories (id, name).

dataset.path may contain `{split}` (e.g. annotations/instances_{split}.json) so train and val are
separate files; without it the one json serves every split (a warning says calibration and
validation then share images). dataset.images (may also contain `{split}`) is the directory the
file_name entries are relative to; default: the json's directory. Category ids map to class indices
in ascending id order. Crowd annotations (iscrowd=1) are ignored; multi-part polygons are concatenated.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from edgebuild.data.dataset import COORD_TOLERANCE, Dataset, Sample, class_error, coord_error
from edgebuild.errors import EdgebuildError

log = logging.getLogger("edgebuild")


class CocoDataset(Dataset):
    format = "coco"

    def __init__(self, path: str, images: str | None = None, on_corrupt: str = "skip"):
        self.pattern, self.images_pattern = str(path), images
        if Path(self.pattern).suffix.lower() in (".yaml", ".yml"):
            raise EdgebuildError("dataset.format", f"is coco but dataset.path {path} is a YAML file.",
                                 "set dataset.format=yolo for a YOLO data.yaml.")
        self._docs: dict[str, dict] = {}
        first = self._json_path("val") if "{split}" in self.pattern else Path(self.pattern)
        probe = first if first.is_file() else None
        if probe is None and "{split}" in self.pattern:
            probe = next((self._json_path(s) for s in ("train", "val", "test") if self._json_path(s).is_file()), None)
        if probe is None:
            raise EdgebuildError("dataset.path", f"the COCO json {first.expanduser().resolve()} does not exist.",
                                 "point dataset.path at a COCO instances json (use {split} in the name for "
                                 "per-split files), or set dataset.format=yolo for a data.yaml.")
        doc = self._doc_at(probe)
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        self.cat_index = {c["id"]: i for i, c in enumerate(cats)}
        super().__init__(probe.expanduser().resolve(), [str(c["name"]) for c in cats], on_corrupt)

    def _json_path(self, split: str) -> Path:
        return Path(self.pattern.replace("{split}", split)).expanduser()

    def _doc_at(self, path: Path) -> dict:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise EdgebuildError(str(path), f"is not a readable COCO json ({e}).",
                                 "fix or regenerate the file.") from None
        missing = [k for k in ("images", "annotations", "categories") if not isinstance(doc.get(k), list)]
        if missing:
            raise EdgebuildError(str(path), f"has no {', '.join(missing)} list(s); not a COCO instances json.",
                                 "use an instances_*.json with images, annotations and categories.")
        return doc

    def _doc(self, split: str, key: str | None) -> tuple[Path, dict]:
        p = self._json_path(split)
        if not p.is_file():
            raise EdgebuildError(key or "dataset.path", f"split {split!r}: the COCO json {p.resolve()} does not exist.",
                                 "choose a split that has a json, or fix dataset.path ({split} is replaced by the "
                                 "split name).")
        if split not in self._docs:
            if "{split}" not in self.pattern:
                log.warning("dataset.path has no {split}: split %r uses all of %s (calibration and validation "
                            "share images)", split, p)
            self._docs[split] = self._doc_at(p)
        return p.resolve(), self._docs[split]

    def _images_dir(self, split: str, json_path: Path) -> Path:
        if self.images_pattern is None:
            return json_path.parent
        d = Path(self.images_pattern.replace("{split}", split)).expanduser().resolve()
        if not d.is_dir():
            raise EdgebuildError("dataset.images", f"the image directory {d} does not exist.",
                                 "set dataset.images to the directory the json's file_name entries are relative to.")
        return d

    def splits(self) -> list[str]:
        if "{split}" not in self.pattern:
            return ["train", "val", "test"]
        return [s for s in ("train", "val", "test") if self._json_path(s).is_file()]

    def definition_files(self, split: str) -> list[Path]:
        return [self._json_path(split).resolve()]

    def label_files(self, split: str, key: str | None = None) -> list[Path]:
        return self.definition_files(split)

    def _entries(self, split: str, key: str | None) -> tuple[Path, dict, list[tuple[Path, dict]]]:
        jp, doc = self._doc(split, key)
        base = self._images_dir(split, jp)
        entries = sorted(((base / im["file_name"]).resolve(), im) for im in doc["images"])
        if not entries:
            raise EdgebuildError(key or str(jp), f"split {split!r} ({jp}) has no images.",
                                 "add images to the json or choose another split.")
        return jp, doc, entries

    def image_files(self, split: str, key: str | None = None) -> list[Path]:
        return [p for p, _ in self._entries(split, key)[2]]

    def _load(self, split: str, key: str | None) -> list[Sample]:
        jp, doc, entries = self._entries(split, key)
        cat_index = {c["id"]: i for i, c in enumerate(sorted(doc["categories"], key=lambda c: c["id"]))}
        if cat_index != self.cat_index:
            raise EdgebuildError(str(jp), "its categories differ from the other split's.",
                                 "use the same categories list in every split's json.")
        anns: dict = {}
        for a in doc["annotations"]:
            if not a.get("iscrowd", 0):
                anns.setdefault(a["image_id"], []).append(a)
        out = []
        for path, im in entries:
            if not path.is_file():
                size = self._image_size(path, split)  # skip or error as dataset.on_corrupt says
            else:
                size = (int(im["width"]), int(im["height"])) if "width" in im and "height" in im else None
                size = size or self._image_size(path, split)
            if size is None:
                continue
            out.append(self._sample(path, size, anns.get(im["id"], []), jp))
        return out

    def _sample(self, path: Path, size: tuple[int, int], anns: list[dict], jp: Path) -> Sample:
        w, h = size
        boxes, classes, polys, all_polys = [], [], [], True
        for a in anns:
            where = f"{jp}: annotation id {a.get('id')}"
            if a.get("category_id") not in self.cat_index:
                raise class_error(where, a.get("category_id"), len(self.cat_index), f"{jp.name} categories")
            x, y, bw, bh = (float(v) for v in a["bbox"])
            xyxy = np.array([x, y, x + bw, y + bh])
            lim = np.array([w, h, w, h], np.float64)
            norm = xyxy / lim
            bad = norm[(norm < -COORD_TOLERANCE) | (norm > 1 + COORD_TOLERANCE)]
            if bad.size:
                raise coord_error(where, float(bad[0]), "bbox coordinate (normalized by image size)")
            boxes.append(np.clip(xyxy, 0, lim))
            classes.append(self.cat_index[a["category_id"]])
            seg = a.get("segmentation")
            if isinstance(seg, list) and seg and all(isinstance(s, list) and len(s) >= 6 for s in seg):
                pts = np.concatenate([np.array(s, np.float32).reshape(-1, 2) for s in seg])
                polys.append(pts.clip(0, (w, h)).astype(np.float32))
            else:
                all_polys = False
        return Sample(path, w, h, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64),
                      polys if all_polys else None)
