"""Step `tflite`: float SavedModel -> deployable TFLite (precision.mode int8 | fp16 | mixed) + meta.json.

INT8: uint8 input (scale 1/255, zero point 0), int8 outputs each with its own scale, per-channel weights unless
target.per_channel=false; activation ranges from calibration.method over the streamed calibration set.
"""
from __future__ import annotations

import json

from edgebuild.engine import StepContext, step


@step("tflite", version=1,
      config=("calibration.method", "calibration.percentile", "calibration.num_bins", "precision.mode",
              "precision.float_layers", "target.per_channel", "target.input_dtype", "model.imgsz"),
      upstream=("tfconvert", "calibset", "export"),
      applies=lambda cfg: cfg.target.backend == "tflite",
      artifacts=("model.tflite", "meta.json"), isolate=True)
def tflite(ctx: StepContext) -> None:
    from edgebuild.data.stream import iter_calibration, manifest_size
    from edgebuild.tflite import metadata, mixed, quantize

    cfg = ctx.cfg
    meta = json.loads((ctx.inputs["export"] / "meta.json").read_text())
    saved_model = ctx.inputs["tfconvert"] / "saved_model"
    manifest = ctx.inputs["calibset"] / "manifest.json"
    imgsz = int(cfg.model.imgsz)
    mode = cfg.precision.mode
    info: dict = {"mode": mode}
    if mode == "fp16":
        model = quantize.convert_fp16(saved_model)
    else:
        total = manifest_size(manifest)

        def samples():
            return iter_calibration(manifest, imgsz, dtype="float32", layout="NHWC")

        c = cfg.calibration
        model, built = quantize.build_int8(
            saved_model, samples, total, method=c.method, percentile=float(c.percentile), num_bins=int(c.num_bins),
            per_channel=bool(cfg.target.per_channel), input_dtype=cfg.target.input_dtype,
            float_layers=list(cfg.precision.float_layers) if mode == "mixed" else [],
            input_shape=[1, imgsz, imgsz, 3], progress=ctx.progress)
        info.update(method=c.method, images=total, per_channel=bool(cfg.target.per_channel),
                    percentile=float(c.percentile) if c.method == "percentile" else None,
                    float_layers=list(cfg.precision.float_layers) if mode == "mixed" else [],
                    float_ops=built["float_ops"])
    io = metadata.io_details(model, meta)
    meta.update(quantization=info, tflite=io, float_ops=mixed.float_ops(model) if mode != "fp16" else "all")
    meta["input"] = {**meta["input"], "layout": "NHWC", "shape": [1, imgsz, imgsz, 3], "tflite": io["input"]}
    model = metadata.embed(model, meta)
    (ctx.out / "model.tflite").write_bytes(model)
    (ctx.out / "meta.json").write_text(json.dumps(meta, indent=1))
    ctx.log.info("tflite: %s, %d bytes, %d float ops", mode, len(model),
                 len(meta["float_ops"]) if isinstance(meta["float_ops"], list) else -1)
