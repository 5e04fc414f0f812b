"""Decode the raw outputs of every export layout into boxes, scores and mask terms. The ONE place decode math lives.

    decode(outputs, meta) -> Decoded
        outputs: {role: float32 array} as a runtime returns them (leading batch dim of 1 allowed),
                 roles from meta["outputs"]: boxes, scores, mask_coefs, protos (split layouts) or fused, protos.
        meta:    the export meta.json (layout, imgsz, strides, nc, outputs).

Layouts (see docs/CONTRACTS.md):
  split       boxes [N,4] xyxy normalized to [0,1] in-graph        -> multiplied by imgsz
  split_ltrb  boxes [N,4] raw DFL distances l,t,r,b in grid units  -> anchors (cell centres) and strides rebuilt here
  split_dfl   boxes [N,4*R] raw DFL logits (R = meta reg_max bins)  -> softmax + expectation here, then as split_ltrb
  fused       Ultralytics' [4+C(+nm), N] pixel xywh + scores (+ mask coefficients), protos NCHW

Every result is in letterboxed input pixels (xyxy), the frame the model saw; un-letterboxing belongs to the caller.
Anchor order is Ultralytics' `make_anchors`: level by level (strides ascending), row-major inside a level.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edgebuild.errors import EdgebuildError

LAYOUTS = ("split", "split_ltrb", "split_dfl", "fused")
REG_MAX = 16  # DFL bins of every YOLOv8/YOLO11 head


@dataclass(frozen=True)
class Decoded:
    boxes: np.ndarray                  # [N, 4] xyxy, letterboxed input pixels
    scores: np.ndarray                 # [N, C] class probabilities (sigmoid already applied)
    mask_coefs: np.ndarray | None      # [N, nm] or None for detect
    protos: np.ndarray | None          # [H, W, nm] or None for detect


def anchor_grid(imgsz: int, strides: list[int] | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(centres [N,2] in grid units (x+0.5, y+0.5), stride per anchor [N,1]) exactly as Ultralytics' make_anchors."""
    centres, stride_col = [], []
    for s in strides:
        g = int(imgsz) // int(s)
        ys, xs = np.meshgrid(np.arange(g, dtype=np.float32) + 0.5, np.arange(g, dtype=np.float32) + 0.5, indexing="ij")
        centres.append(np.stack([xs.ravel(), ys.ravel()], 1))
        stride_col.append(np.full((g * g, 1), float(s), np.float32))
    return np.concatenate(centres), np.concatenate(stride_col)


def dfl_expectation(logits: np.ndarray, reg_max: int = REG_MAX) -> np.ndarray:
    """[N, 4*R] DFL logits (side-major: l bins, t bins, r bins, b bins) -> [N, 4] expected distances in grid units,
    exactly Ultralytics' DFL module (softmax over the R bins, then sum of p_i * i)."""
    x = np.asarray(logits, np.float32).reshape(len(logits), 4, reg_max)
    e = np.exp(x - x.max(axis=2, keepdims=True))
    # elementwise sums, not a matmul: each row's result is independent of how many rows are decoded together
    return (e * np.arange(reg_max, dtype=np.float32)).sum(axis=2) / e.sum(axis=2)


def num_anchors(imgsz: int, strides) -> int:
    return sum((int(imgsz) // int(s)) ** 2 for s in strides)


def decode(outputs: Mapping[str, np.ndarray], meta: Mapping[str, Any], min_score: float | None = None) -> Decoded:
    """Raw model outputs (by role) -> Decoded in letterboxed input pixels. See the module docstring.

    min_score: decode only the anchors whose best class score exceeds it (what NMS at conf=min_score can keep);
    the others are dropped from boxes, scores and mask_coefs. Each kept row is computed exactly as without it."""
    layout = meta.get("layout")
    if layout not in LAYOUTS:
        raise EdgebuildError("meta.json layout", f"{layout!r} is not a known output layout.",
                             f"use a meta.json written by the export step (layout one of {', '.join(LAYOUTS)}).")
    imgsz, strides, nc = int(meta["imgsz"]), [int(s) for s in meta["strides"]], int(meta["nc"])
    n = num_anchors(imgsz, strides)
    segment = meta.get("task") == "segment"
    if layout == "fused":
        fused = _rows(_get(outputs, "fused"), n, None, "fused")          # [4+C(+nm), N]
        if fused.shape[0] < 4 + nc:
            raise _shape_error("fused", fused.shape, f"[4+{nc}(+nm), {n}]")
        if min_score is not None:
            fused = fused[:, fused[4:4 + nc].max(0) > min_score]
        xy, wh = fused[0:2].T, fused[2:4].T
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
        scores = np.ascontiguousarray(fused[4:4 + nc].T)
        coefs = np.ascontiguousarray(fused[4 + nc:].T) if segment else None
    else:
        reg_max = int(meta.get("reg_max", REG_MAX)) if layout == "split_dfl" else 1
        raw = _cols(_get(outputs, "boxes"), n, 4 * reg_max, "boxes")
        scores = _cols(_get(outputs, "scores"), n, nc, "scores")
        rows = slice(None) if min_score is None else np.flatnonzero(scores.max(1) > min_score)
        scores, raw = scores[rows], raw[rows]
        if layout == "split_dfl":
            raw = dfl_expectation(raw, reg_max)
        if layout == "split":
            boxes = raw * np.float32(imgsz)
        else:
            centres, stride = anchor_grid(imgsz, strides)
            boxes = np.concatenate([centres[rows] - raw[:, :2], centres[rows] + raw[:, 2:]], 1) * stride[rows]
        coefs = _cols(_get(outputs, "mask_coefs"), n, None, "mask_coefs")[rows] if segment else None
    protos = _protos(_get(outputs, "protos"), coefs.shape[1], layout) if segment else None
    return Decoded(boxes.astype(np.float32, copy=False), scores.astype(np.float32, copy=False), coefs, protos)


def _get(outputs: Mapping[str, np.ndarray], role: str) -> np.ndarray:
    if role not in outputs:
        raise EdgebuildError("meta.json outputs", f"the model outputs have no {role!r} role (got {sorted(outputs)}).",
                             "decode the outputs with the meta.json of the same export (roles must match the layout).")
    arr = np.asarray(outputs[role], dtype=np.float32)
    if arr.ndim >= 3:
        if arr.shape[0] != 1:
            raise _shape_error(role, arr.shape, "a batch of 1")
        arr = arr[0]
    return arr


def _cols(arr: np.ndarray, n: int, k: int | None, role: str) -> np.ndarray:
    """[N, K] (accepting [K, N] from runtimes that keep channels first)."""
    if arr.ndim == 2 and arr.shape[0] == n and (k is None or arr.shape[1] == k):
        return arr
    if arr.ndim == 2 and arr.shape[1] == n and (k is None or arr.shape[0] == k):
        return np.ascontiguousarray(arr.T)
    raise _shape_error(role, arr.shape, f"[{n}, {k if k is not None else 'K'}]")


def _rows(arr: np.ndarray, n: int, k: int | None, role: str) -> np.ndarray:
    """[K, N] (accepting [N, K])."""
    if arr.ndim == 2 and arr.shape[1] == n:
        return arr
    if arr.ndim == 2 and arr.shape[0] == n:
        return np.ascontiguousarray(arr.T)
    raise _shape_error(role, arr.shape, f"[K, {n}]")


def _protos(arr: np.ndarray, nm: int, layout: str) -> np.ndarray:
    """[H, W, nm]. Split layouts emit NHWC, fused (Ultralytics) NCHW; a runtime may have transposed either."""
    if arr.ndim != 3 or nm not in (arr.shape[0], arr.shape[2]):
        raise _shape_error("protos", arr.shape, f"[H, W, {nm}] or [{nm}, H, W]")
    channels_last = arr.shape[2] == nm and (arr.shape[0] != nm or layout != "fused")
    return arr if channels_last else np.ascontiguousarray(arr.transpose(1, 2, 0))


def _shape_error(role: str, shape, expected: str) -> EdgebuildError:
    return EdgebuildError("meta.json outputs", f"output {role!r} has shape {list(shape)}, expected {expected}.",
                          "decode the outputs with the meta.json of the same export (imgsz, strides, nc must match).")
