"""Step `calibstats` (TFLite): float SavedModel + calibration set -> activation statistics of every tensor.

One pass of the float model over the streamed calibration set records what every calibration method needs (each
tensor's min/max and |x| histogram: edgebuild.quant.calibrators.ActivationStats). Keyed by the float model, the
calibration set and calibration.num_bins only, never by method, target or precision: a target sweep or a
`calibration=minmax,entropy,percentile` sweep runs the model over the calibration images once.

Outputs: `graph.tflite` (the calibrate-only float flatbuffer whose tensors the statistics name), `stats.json` +
`counts.npy` (the statistics).
"""
from __future__ import annotations

import json

from edgebuild.engine import StepContext, step


@step("calibstats", version=2, config=("calibration.num_bins", "model.imgsz"), upstream=("tfconvert", "calibset"),
      applies=lambda cfg: cfg.target.backend == "tflite" and cfg.precision.mode != "fp16", isolate=True)
def calibstats(ctx: StepContext) -> None:
    from edgebuild.data.preprocess import channel_order
    from edgebuild.data.stream import iter_calibration, manifest_size
    from edgebuild.tflite import quantize

    imgsz, manifest = int(ctx.cfg.model.imgsz), ctx.inputs["calibset"] / "manifest.json"
    total = manifest_size(manifest)
    order = channel_order(json.loads((ctx.inputs["tfconvert"] / "meta.json").read_text()))
    graph, stats = quantize.collect_stats(
        ctx.inputs["tfconvert"] / "saved_model",
        lambda: iter_calibration(manifest, imgsz, "float32", "NHWC", order=order), total,
        num_bins=int(ctx.cfg.calibration.num_bins), input_shape=[1, imgsz, imgsz, 3], progress=ctx.progress)
    (ctx.out / "graph.tflite").write_bytes(graph)
    stats.save(ctx.out, total)
    ctx.log.info("calibstats: %d tensors over %d images", len(stats.order), total)
