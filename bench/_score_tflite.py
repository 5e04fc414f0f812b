"""Child process of bench/run_all.py: score a TFLite file exported by Ultralytics in OUR evaluator.

    python bench/_score_tflite.py MODEL.tflite [--imgsz 320] [--max-images N]

Writes MODEL.meta.json describing Ultralytics' fused detect layout (one output, role "fused", [1, 4+nc, N]: pixel xywh +
class scores; docs/CONTRACTS.md) and runs edgebuild.runtime.load_runner + edgebuild.metrics.evaluate.evaluate_model
(letterbox preprocess -> LiteRT runner (input quantized / outputs dequantized with the tensors' own params) ->
edgebuild.layout.decode -> NMS -> faster-coco-eval) on the shapes-hard val split: the same code path edgebuild's own
validate step uses. Prints one JSON line with the bbox metrics.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "shapes-hard" / "data.yaml"


def fused_meta(imgsz: int, names: list[str], strides=(8, 16, 32)) -> dict:
    from edgebuild.layout import num_anchors

    n, nc = num_anchors(imgsz, strides), len(names)
    return {"task": "detect", "layout": "fused", "imgsz": imgsz, "nc": nc, "names": names, "strides": list(strides),
            "normalized": False,
            "input": {"name": "images", "shape": [1, imgsz, imgsz, 3], "layout": "NHWC", "dtype": "float32",
                      "range": [0, 1]},
            "outputs": [{"name": "output0", "role": "fused", "shape": [1, 4 + nc, n]}],
            "source": {"weights": "shapes-hard-yolov8n-det.pt", "exporter": "ultralytics"}}


class _Scaled:
    """Multiplies fused xywh rows by imgsz when an export emits normalized boxes (kept generic; 8.4 emits pixels)."""

    def __init__(self, runner, imgsz):
        self.r, self.imgsz, self.kind, self.threads = runner, imgsz, runner.kind, runner.threads

    def predict(self, x):
        out = self.r.predict(x)
        f = out["fused"].copy()
        f[0, :4] *= self.imgsz
        return {**out, "fused": f}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--max-images", type=int, default=None)
    a = ap.parse_args()
    from omegaconf import OmegaConf

    from edgebuild import schema
    from edgebuild.data.dataset import open_dataset
    from edgebuild.data.preprocess import preprocess
    from edgebuild.metrics.evaluate import Settings, evaluate_model, measure_latency
    from edgebuild.runtime import load_runner

    cfg = schema.validate(OmegaConf.create({"dataset": {"path": str(DATA)}}))
    ds = open_dataset(cfg)
    samples = ds.samples("val", "validation.split")[: a.max_images]
    meta = fused_meta(a.imgsz, list(ds.names))
    runner = load_runner(a.model, meta, threads=1)
    x, _ = preprocess(samples[0].image_path, a.imgsz)
    probe = runner.predict(x)["fused"]
    box_max = float(np.abs(probe[0, :4]).max())
    normalized = box_max <= 2.0
    if normalized:
        meta["normalized"] = True
        runner = _Scaled(runner, a.imgsz)
    a.model.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1))
    t = time.perf_counter()
    metrics, _ = evaluate_model(runner, meta, samples, list(ds.names), Settings(imgsz=a.imgsz))
    secs = time.perf_counter() - t
    d = runner.r.input if normalized else runner.input
    print(json.dumps({"model": str(a.model), "images": metrics["images"], "bbox": metrics["bbox"],
                      "eval_seconds": round(secs, 1), "fused_box_abs_max_first_image": box_max,
                      "boxes_normalized": normalized,
                      "input": {"dtype": np.dtype(d["dtype"]).name, "quantization": list(map(float, d["quantization"]))},
                      "latency": measure_latency(runner, x, 20)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
