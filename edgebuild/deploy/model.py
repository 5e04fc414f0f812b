"""load(bundle) -> Model; Model.predict(image) -> Result. Each stage is timed (Result.ms) for `bench`.

Stages: preprocess (read + letterbox + tensor: edgebuild.data.preprocess), invoke (the runtime, with input
quantization and output dequantization: edgebuild.runtime), decode_nms (decode + NMS + un-letterbox:
edgebuild.postprocess.detect) and, for segmenters, masks (edgebuild.postprocess.masks) — the code validation runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebuild.deploy.bundle import model_file, read_meta
from edgebuild.errors import EdgebuildError

DEFAULT_CONF = 0.25


@dataclass
class Result:
    image: str
    width: int
    height: int
    boxes: np.ndarray               # [K, 4] float32 xyxy in original image pixels
    scores: np.ndarray              # [K] float32
    classes: np.ndarray             # [K] int64
    names: list[str]                # [K] class names
    masks: np.ndarray | None        # [H, W, K] uint8 0/1 (segmenters) or None
    ms: dict[str, float] = field(default_factory=dict)   # stage -> milliseconds

    def __len__(self) -> int:
        return len(self.scores)

    def to_json(self) -> dict:
        dets = []
        for i in range(len(self)):
            d = {"box": [float(v) for v in self.boxes[i]], "score": float(self.scores[i]),
                 "class": int(self.classes[i]), "name": self.names[i]}
            if self.masks is not None:
                d["mask"] = rle(self.masks[:, :, i])
            dets.append(d)
        return {"image": self.image, "width": self.width, "height": self.height, "detections": dets,
                "ms": {k: round(v, 3) for k, v in self.ms.items()}}


def rle(mask: np.ndarray) -> dict:
    """0/1 mask [H, W] -> uncompressed COCO RLE {"size": [H, W], "counts": [...]} (column-major runs, 0s first)."""
    flat = np.asarray(mask, np.uint8).ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


class Model:
    def __init__(self, bundle: Path, meta: dict, runner, model: Path):
        self.bundle, self.meta, self.runner, self.model = bundle, meta, runner, model
        self.imgsz = int(meta["imgsz"])
        self.names = [str(n) for n in meta.get("names") or range(int(meta["nc"]))]
        self.nms = {"iou": 0.7, "max_det": 300, **(meta["deploy"].get("nms") or {})}

    def predict(self, image, conf: float = DEFAULT_CONF, iou: float | None = None,
                max_det: int | None = None) -> Result:
        """Image path or BGR uint8 array -> Result (boxes in original pixels, names, scores, masks)."""
        from edgebuild.data.preprocess import CorruptImage, preprocess
        from edgebuild.postprocess import detect, masks

        t0 = time.perf_counter()
        try:
            x, lb = preprocess(image, self.imgsz)
        except CorruptImage as e:
            raise EdgebuildError(e.where, e.problem, "pass an image file OpenCV can read (JPEG, PNG, BMP, ...).") from None
        t1 = time.perf_counter()
        outputs = self.runner.predict(x)
        t2 = time.perf_counter()
        det, dec = detect(outputs, self.meta, lb, conf, self.nms["iou"] if iou is None else iou,
                          self.nms["max_det"] if max_det is None else max_det)
        t3 = time.perf_counter()
        m = masks(dec, det, self.imgsz, lb)
        t4 = time.perf_counter()
        ms = {"preprocess": (t1 - t0) * 1e3, "invoke": (t2 - t1) * 1e3, "decode_nms": (t3 - t2) * 1e3}
        if m is not None:
            ms["masks"] = (t4 - t3) * 1e3
        return Result(str(image) if not isinstance(image, np.ndarray) else "<array>", int(lb.orig_w), int(lb.orig_h),
                      det.boxes, det.scores, det.classes, [self.names[c] for c in det.classes], m, ms)


def load(bundle: str | Path, delegate: str | None = None, delegate_options: dict | None = None,
         model: str | None = None, threads: int = 1) -> Model:
    """Open a bundle directory. `delegate`: an external TFLite delegate library, or "auto" for the one the
    bundle's meta.json names for its target; `model`: a model file of the bundle other than the default."""
    from edgebuild.runtime import load_runner

    bundle = Path(bundle)
    meta = read_meta(bundle)
    if delegate == "auto":
        delegate = (meta["deploy"].get("delegate") or {}).get("library")
        if not delegate:
            raise EdgebuildError("--delegate auto", f"the bundle for {meta['deploy'].get('target')} names no "
                                 "delegate library.", "pass the delegate's path, or leave --delegate out (CPU).")
    if delegate:
        from edgebuild.runtime.litert import check_delegate_path

        check_delegate_path(delegate)
    path = model_file(bundle, meta, delegate, model)
    options = delegate_options
    if delegate and options is None:
        options = (meta["deploy"].get("delegate") or {}).get("options") or {}
    runner = load_runner(path, meta, threads=threads, delegate=delegate, delegate_options=options)
    return Model(bundle, meta, runner, path)
