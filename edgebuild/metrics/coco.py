"""COCO-protocol bbox and segm accuracy (mAP50, mAP50-95, AR@100, per-class AP) with faster-coco-eval.

Ground truth comes from the dataset samples (boxes, and polygons for segm); detections are COCO result
dicts in original image pixels. pycocotools can be selected as the evaluator to cross-check.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging

import numpy as np


def category_id(cls: int) -> int:
    return int(cls) + 1  # COCO ids start at 1


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def ground_truth(samples, names: list[str]) -> dict:
    """COCO dataset dict from dataset samples; image ids are 1.. in sample order."""
    images, anns = [], []
    for img_id, s in enumerate(samples, 1):
        images.append({"id": img_id, "width": int(s.width), "height": int(s.height), "file_name": str(s.image_path)})
        polys = s.polygons if s.polygons is not None else [None] * len(s.classes)
        for box, cls, poly in zip(np.asarray(s.boxes, float).reshape(-1, 4), s.classes, polys):
            x1, y1, x2, y2 = (float(v) for v in box)
            ann = {"id": len(anns) + 1, "image_id": img_id, "category_id": category_id(cls), "iscrowd": 0,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
            if poly is not None and len(poly) >= 3:
                pts = np.asarray(poly, float).reshape(-1, 2)
                ann["segmentation"] = [pts.reshape(-1).tolist()]
                ann["area"] = _polygon_area(pts)
            anns.append(ann)
    cats = [{"id": category_id(i), "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": cats}


def has_polygons(gt: dict) -> bool:
    return bool(gt["annotations"]) and all("segmentation" in a for a in gt["annotations"])


def _empty(names: list[str]) -> dict:
    return {"map50": 0.0, "map50_95": 0.0, "recall": 0.0, "detections": 0,
            "per_class": {n: {"ap50": 0.0, "ap50_95": 0.0} for n in names}}


def evaluate(gt: dict, detections: list[dict], iou_type: str, backend: str = "faster") -> dict:
    """gt from ground_truth(); detections: [{image_id, category_id, score, bbox xywh | segmentation RLE}].

    Returns {"map50", "map50_95", "recall" (AR@100), "detections", "per_class": {name: {ap50, ap50_95}}};
    per-class values are None for classes without ground truth."""
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    key = "bbox" if iou_type == "bbox" else "segmentation"
    dets = [{k: v for k, v in d.items() if k in ("image_id", "category_id", "score", key)} for d in detections]
    if not dets:
        return _empty(names)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        if backend == "faster":
            from faster_coco_eval import COCO, COCOeval_faster as Eval

            logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # its summaries would flood the build log
            coco_gt = COCO(copy.deepcopy(gt))
        elif backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval as Eval

            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(gt)
            coco_gt.createIndex()
        else:
            raise ValueError(f"unknown COCO evaluator {backend!r}")
        coco_dt = coco_gt.loadRes(dets)  # fresh dicts (loadRes adds keys to them)
        ev = Eval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats, dtype=float)
    return {"map50": float(stats[1]), "map50_95": float(stats[0]), "recall": float(stats[8]),
            "detections": len(dets), "per_class": _per_class(ev, names)}


def _per_class(ev, names: list[str]) -> dict:
    """AP per category from the accumulated precision array [T, R, K, A, M] (area all, maxDets 100)."""
    prec = np.asarray(ev.eval["precision"])
    cat_ids = list(ev.params.catIds)
    a = list(ev.params.areaRngLbl).index("all")
    m = len(ev.params.maxDets) - 1
    out = {}
    for i, name in enumerate(names):
        cid = category_id(i)
        if cid not in cat_ids:
            out[name] = None
            continue
        p = prec[:, :, cat_ids.index(cid), a, m]
        p50 = p[0][p[0] > -1]
        pall = p[p > -1]
        out[name] = None if pall.size == 0 else {"ap50": float(p50.mean()) if p50.size else 0.0,
                                                 "ap50_95": float(pall.mean())}
    return out
