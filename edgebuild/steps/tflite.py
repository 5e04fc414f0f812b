"""Step `tflite`: calibrated flatbuffer (+ corrected conv weights) -> deployable TFLite + meta.json.

INT8: uint8 input (scale 1/255, zero point 0), int8 outputs each with its own scale, per-channel weights unless
target.per_channel=false, activation ranges from the `calibrate` step. With calibration.correction the `correct`
step's float weights are written into the calibrated flatbuffer first, then the converter's quantizer makes the int8
weights from them with the same ranges; the conv input scales and zero points are checked to be exactly the ones the
correction simulated. fp16: float16 weights straight from the SavedModel.
"""
from __future__ import annotations

import json

from edgebuild.engine import StepContext, step


@step("tflite", version=2,
      config=("precision.mode", "precision.float_layers", "target.per_channel", "target.input_dtype", "model.imgsz"),
      upstream=("tfconvert", "?calibrate", "?correct", "export"),
      applies=lambda cfg: cfg.target.backend == "tflite",
      artifacts=("model.tflite", "meta.json"), isolate=True)
def tflite(ctx: StepContext) -> None:
    from edgebuild.tflite import artifact, quantize

    cfg = ctx.cfg
    meta = json.loads((ctx.inputs["export"] / "meta.json").read_text())
    mode = cfg.precision.mode
    if mode == "fp16":
        model, info = quantize.convert_fp16(ctx.inputs["tfconvert"] / "saved_model"), {}
    else:  # precision=auto: this is the all-int8 model the precision_search step starts from
        model, info = artifact.build(ctx.inputs["calibrate"], ctx.inputs.get("correct"),
                                     per_channel=bool(cfg.target.per_channel), input_dtype=cfg.target.input_dtype,
                                     float_layers=list(cfg.precision.float_layers) if mode == "mixed" else [])
    model, meta = artifact.finish(model, meta, {"mode": mode, **info}, int(cfg.model.imgsz))
    (ctx.out / "model.tflite").write_bytes(model)
    (ctx.out / "meta.json").write_text(json.dumps(meta, indent=1))
    ctx.log.info("tflite: %s, %d bytes, %d float ops", mode, len(model),
                 len(meta["float_ops"]) if isinstance(meta["float_ops"], list) else -1)
