"""Class-aware batched non-maximum suppression in numpy (the Ultralytics validation protocol).

`nms(boxes, scores)` keeps, per class, the highest-scoring boxes that do not overlap a kept box of
the same class by more than `iou`. With `multi_label=True` (what Ultralytics' validator uses) every
(box, class) pair scoring above `conf` is a candidate; with False only each box's best class is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_WH = 7680.0   # class offset: boxes of different classes are moved this far apart so they never overlap
MAX_NMS = 30000   # candidates considered after the confidence filter (highest scores first)


@dataclass
class Detections:
    boxes: np.ndarray     # [K, 4] float32 xyxy (same coordinates as the input boxes)
    scores: np.ndarray    # [K] float32
    classes: np.ndarray   # [K] int64
    index: np.ndarray     # [K] int64: row of the input each detection came from (to pick mask coefficients)

    def __len__(self) -> int:
        return len(self.scores)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box [4] against many [M, 4]."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int) -> np.ndarray:
    """Indices of boxes kept by greedy NMS, highest score first; stops after max_keep."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and len(keep) < max_keep:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
        multi_label: bool = True) -> Detections:
    """boxes [N, 4] xyxy, scores [N, C] per-class probabilities -> the kept detections, best first."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32)
    scores = scores.reshape(len(boxes), scores.shape[-1] if scores.ndim > 1 else -1)   # N may be 0 (nothing above conf)
    if multi_label:
        rows, cls = np.nonzero(scores > conf)
        sc = scores[rows, cls]
    else:
        cls = scores.argmax(1)
        sc = scores[np.arange(len(scores)), cls]
        rows = np.nonzero(sc > conf)[0]
        cls, sc = cls[rows], sc[rows]
    if sc.size > MAX_NMS:
        top = np.argsort(-sc, kind="stable")[:MAX_NMS]
        rows, cls, sc = rows[top], cls[top], sc[top]
    shifted = boxes[rows] + (cls.astype(np.float32) * MAX_WH)[:, None]
    keep = greedy_nms(shifted, sc, iou, max_det)
    return Detections(boxes[rows[keep]], sc[keep], cls[keep].astype(np.int64), rows[keep].astype(np.int64))
