"""Step `calibrate` (TFLite): activation statistics -> `calibrated.tflite`, the float flatbuffer whose activation
tensors carry the ranges the quantizer will use (calibration.method computed from the `calibstats` step's
statistics: the model is not run again).

Its own step, keyed by the statistics and the method only: per-channel and per-tensor targets, precision and
correction all start from the same ranges, and the correction's simulation uses exactly them.
"""
from __future__ import annotations

import json

from edgebuild.engine import StepContext, step


@step("calibrate", version=2, config=("calibration.method", "calibration.percentile"), upstream=("calibstats",),
      applies=lambda cfg: cfg.target.backend == "tflite" and cfg.precision.mode != "fp16",
      artifacts=("calibrated.tflite", "ranges.json"), isolate=True)
def calibrate(ctx: StepContext) -> None:
    from edgebuild.quant.calibrators import ActivationStats
    from edgebuild.tflite import quantize

    c, src = ctx.cfg.calibration, ctx.inputs["calibstats"]
    stats = ActivationStats.load(src)
    calibrated, used = quantize.apply_method((src / "graph.tflite").read_bytes(), stats, c.method, float(c.percentile))
    (ctx.out / "calibrated.tflite").write_bytes(calibrated)
    (ctx.out / "ranges.json").write_text(json.dumps({"method": c.method, "images": stats.images, "ranges": used},
                                                    indent=1))
    ctx.log.info("calibrate: %s ranges of %d tensors", c.method, len(used))
