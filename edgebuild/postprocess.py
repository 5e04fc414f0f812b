"""Raw model outputs -> detections in original-image pixels (+ instance masks). The ONE post-processing path.

Used by validation (edgebuild.metrics.evaluate) and by the deploy runner on the board (edgebuild.deploy), so the
two cannot drift. numpy + OpenCV only: this module is copied into every deploy bundle.

    detect(outputs, meta, lb, conf, iou, max_det) -> (Detections, Decoded)   decode + NMS + un-letterbox
    masks(decoded, det, imgsz, lb) -> uint8 [H, W, K] | None                segmenters: the detections' masks
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from edgebuild.layout import Decoded, decode
from edgebuild.metrics.nms import Detections, nms


def detect(outputs: Mapping[str, np.ndarray], meta: Mapping, lb, conf: float, iou: float,
           max_det: int) -> tuple[Detections, Decoded]:
    """Runner outputs (by role) -> (Detections with boxes in original pixels clipped to the image, Decoded).

    NMS is class-aware and multi-label (the Ultralytics validation protocol): every (box, class) pair above
    `conf` is a candidate. `lb` is the LetterboxInfo of the preprocessed image."""
    dec = decode(outputs, meta, min_score=conf)   # only anchors NMS can keep: the DFL softmax is the costly part
    det = nms(dec.boxes, dec.scores, conf, iou, max_det)
    det.boxes = lb.unletterbox_boxes(det.boxes)
    return det, dec


def masks(dec: Decoded, det: Detections, imgsz: int, lb) -> np.ndarray | None:
    """0/1 masks [orig_h, orig_w, K] (Fortran order) of the detections, or None for detectors."""
    if dec.protos is None or dec.mask_coefs is None:
        return None
    from edgebuild.metrics.masks import assemble_masks

    return assemble_masks(dec.protos, dec.mask_coefs[det.index], det.boxes, imgsz, lb)
