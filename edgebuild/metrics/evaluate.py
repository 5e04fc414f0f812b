"""Run a model over dataset samples and score it: preprocess -> runner -> decode -> NMS -> COCO metrics.

Used by the validate steps for the float ONNX and for the deployable artifact alike, so both are measured
by the same code and evaluator.
"""
from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass

import numpy as np

from edgebuild.errors import EdgebuildError
from edgebuild.metrics import coco
from edgebuild.metrics.masks import encode_rle

log = logging.getLogger("edgebuild")
DRAW_CONF = 0.25      # detections kept for the report's drawn images
DRAW_MAX = 100


@dataclass
class Settings:
    imgsz: int
    conf: float = 0.001
    iou: float = 0.7
    max_det: int = 300
    report_images: int = 3
    on_corrupt: str = "skip"
    order: str = "rgb"          # channel order the model consumes (meta.json input.order)


def predict_image(runner, meta: dict, x: np.ndarray, lb, s: Settings):
    """One preprocessed image -> (Detections with boxes in original pixels, 0/1 masks [H, W, K] | None).
    The post-processing is edgebuild.postprocess, the same code the deploy runner uses on the board."""
    from edgebuild.postprocess import detect, masks

    det, dec = detect(runner.predict(x), meta, lb, s.conf, s.iou, s.max_det)
    return det, masks(dec, det, s.imgsz, lb)


def _load(sample, s: Settings):
    from edgebuild.data.preprocess import CorruptImage, preprocess

    try:
        return preprocess(sample.image_path, s.imgsz, order=s.order)
    except CorruptImage as e:  # header readable, pixels not
        if s.on_corrupt == "error":
            raise
        log.warning("skipping unreadable validation image %s (%s)", sample.image_path, e.problem)
        return None


def evaluate_model(runner, meta: dict, samples: list, names: list[str], s: Settings, progress=None,
                   record: list | None = None) -> tuple[dict, list]:
    """-> (metrics dict, predictions for the first `report_images` images). With `record`, every image's
    detections are appended to it ({"image", "boxes" original pixels xyxy, "scores", "classes"(, "masks" RLE)})."""
    segment = meta.get("task") == "segment"
    kept, dets_bbox, dets_segm, drawn = [], [], [], []
    skipped = 0
    for i, sample in enumerate(samples):
        loaded = _load(sample, s)
        if loaded is None:
            skipped += 1
            continue
        x, lb = loaded
        kept.append(sample)
        img_id = len(kept)
        det, masks = predict_image(runner, meta, x, lb, s)
        rles = encode_rle(masks) if masks is not None else [None] * len(det)
        for box, score, cls, rle in zip(det.boxes, det.scores, det.classes, rles):
            base = {"image_id": img_id, "category_id": coco.category_id(cls), "score": float(score)}
            x1, y1, x2, y2 = (float(v) for v in box)
            dets_bbox.append({**base, "bbox": [x1, y1, x2 - x1, y2 - y1]})
            if rle is not None:
                dets_segm.append({**base, "segmentation": rle})
        if record is not None:
            entry = {"image": str(sample.image_path), "boxes": det.boxes.tolist(), "scores": det.scores.tolist(),
                     "classes": det.classes.tolist()}
            record.append({**entry, "masks": rles} if masks is not None else entry)
        if len(drawn) < s.report_images:
            top = det.scores >= DRAW_CONF
            drawn.append({"image": str(sample.image_path), "width": int(lb.orig_w), "height": int(lb.orig_h),
                          "boxes": np.round(det.boxes[top][:DRAW_MAX], 2).tolist(),
                          "scores": np.round(det.scores[top][:DRAW_MAX], 4).tolist(),
                          "classes": det.classes[top][:DRAW_MAX].tolist()})
        if progress:
            progress(i + 1, len(samples), "images")
    if not kept:
        raise EdgebuildError("validation.split", "no readable validation images.",
                             "check dataset.path and validation.split.")
    gt = coco.ground_truth(kept, names)
    metrics = {"images": len(kept), "skipped": skipped, "bbox": coco.evaluate(gt, dets_bbox, "bbox")}
    if segment:
        if not coco.has_polygons(gt):
            raise EdgebuildError("dataset.path", "segment validation needs polygon labels and some are boxes only.",
                                 "use polygon labels (`cls x1 y1 x2 y2 ...`) or model.task=detect.")
        metrics["segm"] = coco.evaluate(gt, dets_segm, "segm")
    return metrics, drawn


def measure_latency(runner, x: np.ndarray, runs: int, warmup: int = 3) -> dict:
    """Host latency of runner.predict on one preprocessed image (median and p90 over `runs`)."""
    for _ in range(warmup):
        runner.predict(x)
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        runner.predict(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"median_ms": round(float(np.median(times)), 3), "p90_ms": round(float(np.percentile(times, 90)), 3),
            "runs": len(times), "warmup": warmup, "threads": runner.threads, "runtime": runner.kind,
            "device": f"host CPU ({platform.machine()}, {platform.processor() or 'unknown'})",
            "includes": "runtime invoke + input quantization + output dequantization; no preprocessing, decode or NMS"}
