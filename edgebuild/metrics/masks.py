"""Instance masks from prototype masks and per-detection coefficients, in original image pixels.

Per detection: logits = coefs . protos at proto resolution, bilinearly resampled straight into the
original image frame (undoing the letterbox in the same affine map), cropped to the detection's box and
thresholded at logit 0 (= sigmoid 0.5), as Ultralytics' process_mask does. Only each box's region is
resampled, so the cost follows the box areas, not K x image size.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def assemble_masks(protos: np.ndarray, coefs: np.ndarray, boxes: np.ndarray, imgsz: int, lb) -> np.ndarray:
    """protos [h, w, nm], coefs [K, nm], boxes [K, 4] xyxy in ORIGINAL image pixels, lb = LetterboxInfo
    -> uint8 0/1 masks [orig_h, orig_w, K] in Fortran order (ready for RLE encoding)."""
    ph, pw, nm = protos.shape
    k = len(coefs)
    H, W = int(lb.orig_h), int(lb.orig_w)
    out = np.zeros((H, W, k), dtype=np.uint8, order="F")
    if k == 0:
        return out
    logits = (np.asarray(coefs, np.float32).reshape(k, nm) @ protos.reshape(-1, nm).astype(np.float32).T)
    logits = logits.reshape(k, ph, pw)
    # original pixel X -> input pixel u = X * scale + pad_x -> proto coordinate (u + 0.5) * pw / imgsz - 0.5
    sx, sy = lb.scale * pw / imgsz, lb.scale * ph / imgsz
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64).reshape(k, 4)):
        c0, r0 = max(0, math.floor(x1)), max(0, math.floor(y1))
        c1, r1 = min(W, math.ceil(x2)), min(H, math.ceil(y2))
        if c1 <= c0 or r1 <= r0:
            continue
        m = np.array([[sx, 0, ((c0 + 0.5) * lb.scale + lb.pad_x) * pw / imgsz - 0.5],
                      [0, sy, ((r0 + 0.5) * lb.scale + lb.pad_y) * ph / imgsz - 0.5]], np.float64)
        roi = cv2.warpAffine(logits[i], m, (c1 - c0, r1 - r0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        cx = np.arange(c0, c1) + 0.5
        cy = np.arange(r0, r1) + 0.5
        inside = ((cy >= y1) & (cy <= y2))[:, None] & ((cx >= x1) & (cx <= x2))[None, :]
        out[r0:r1, c0:c1, i] = (roi > 0) & inside
    return out


def encode_rle(masks: np.ndarray) -> list[dict]:
    """uint8/bool [H, W, K] -> COCO RLE dicts (counts as str, JSON-serializable)."""
    from faster_coco_eval.core import mask as mask_utils

    if masks.shape[2] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks, dtype=np.uint8))
    for r in rles:
        if isinstance(r["counts"], bytes):
            r["counts"] = r["counts"].decode("ascii")
    return rles
