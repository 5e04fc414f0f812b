"""Step `calibrate` (TFLite): float SavedModel + calibration set -> `calibrated.tflite`, the float flatbuffer whose
activation tensors carry the ranges the quantizer will use (calibration.method over the streamed calibset).

Its own step, keyed by the float model, the calibration set and the method only: per-channel and per-tensor targets,
precision and correction all start from the same ranges, and the correction's simulation uses exactly them.
"""
from __future__ import annotations

import json

from edgebuild.engine import StepContext, step


@step("calibrate", version=1,
      config=("calibration.method", "calibration.percentile", "calibration.num_bins", "model.imgsz"),
      upstream=("tfconvert", "calibset"),
      applies=lambda cfg: cfg.target.backend == "tflite" and cfg.precision.mode != "fp16",
      artifacts=("calibrated.tflite", "ranges.json"), isolate=True)
def calibrate(ctx: StepContext) -> None:
    from edgebuild.data.preprocess import channel_order
    from edgebuild.data.stream import iter_calibration, manifest_size
    from edgebuild.tflite import quantize

    cfg, imgsz = ctx.cfg, int(ctx.cfg.model.imgsz)
    manifest = ctx.inputs["calibset"] / "manifest.json"
    order = channel_order(json.loads((ctx.inputs["tfconvert"] / "meta.json").read_text()))

    def samples():
        return iter_calibration(manifest, imgsz, dtype="float32", layout="NHWC", order=order)

    c = cfg.calibration
    calibrated, used = quantize.calibrate(ctx.inputs["tfconvert"] / "saved_model", samples, manifest_size(manifest),
                                          method=c.method, percentile=float(c.percentile), num_bins=int(c.num_bins),
                                          input_shape=[1, imgsz, imgsz, 3], progress=ctx.progress)
    (ctx.out / "calibrated.tflite").write_bytes(calibrated)
    (ctx.out / "ranges.json").write_text(json.dumps({"method": c.method, "images": manifest_size(manifest),
                                                     "ranges": used}, indent=1))
    ctx.log.info("calibrate: %s ranges of %d tensors", c.method, len(used))
