"""Step `correct` (TFLite): calibration.correction = bias | weights | finetune for the convs of the .tflite.

1. The calibrated flatbuffer is quantized exactly as the `tflite` step will (per-channel or per-tensor weights,
   precision.float_layers) to read the scale and zero point each int8 conv's input gets (edgebuild.tflite.convs).
2. edgebuild.quant.simulate corrects the convs in a QDQ simulation of those integers (asymmetric activations,
   the target's weight rule) on the first calibration.correction_images calibration images.
3. `corrections.npz` holds each corrected conv's float weights (ONNX layout) and bias (correction.json: where each conv
   is in the flatbuffer and the input scale/zero point simulated); the `tflite` step writes them
   into the calibrated flatbuffer and quantizes it with the same ranges (and checks it got the same input scales).

Its own step: a killed correction leaves no entry, and validation or a second target with the same weight scheme
reuses it.
"""
from __future__ import annotations

import json

from edgebuild.engine import StepContext, step
from edgebuild.quant import require_torch


def applies(cfg) -> bool:
    return (cfg.target.backend == "tflite" and cfg.precision.mode != "fp16"
            and cfg.calibration.correction != "none")


@step("correct", version=2,
      config=("calibration.correction", "calibration.correction_images", "calibration.correction_steps",
              "precision.mode", "precision.float_layers", "target.per_channel", "model.imgsz"),
      upstream=("calibrate", "export", "calibset"), applies=applies,
      artifacts=("corrections.npz", "correction.json"), isolate=True,
      precheck=require_torch)
def correct(ctx: StepContext) -> None:
    if ctx.cfg.calibration.correction == "finetune":  # torch's stack must load before TensorFlow's: the other
        import onnx2torch  # noqa: F401                  order segfaults in torch._dynamo's triton import
    import numpy as np
    import onnx

    from edgebuild.data.preprocess import channel_order
    from edgebuild.data.stream import iter_calibration
    from edgebuild.quant.correction import take_images
    from edgebuild.quant.scheme import tflite
    from edgebuild.quant.simulate import correct_for_target
    from edgebuild.tensorrt.qdq import is_dfl_conv
    from edgebuild.tflite import convs, quantize

    cfg, c = ctx.cfg, ctx.cfg.calibration
    float_onnx = ctx.inputs["export"] / "model.onnx"
    calibrated = (ctx.inputs["calibrate"] / "calibrated.tflite").read_bytes()
    mode = cfg.precision.mode
    model = onnx.load(str(float_onnx))
    matched = convs.match(calibrated, model)
    int8, _ = quantize.quantize_int8(calibrated, per_channel=bool(cfg.target.per_channel), input_dtype="float32",
                                     float_layers=list(cfg.precision.float_layers) if mode == "mixed" else [])
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    dfl = {n.name for n in model.graph.node if is_dfl_conv(n, inits)}  # weights 0..n-1 are exact in int8
    params = {k: v for k, v in convs.input_params(int8, matched).items() if k not in dfl}
    del model, inits, int8
    order = channel_order(json.loads((ctx.inputs["export"] / "meta.json").read_text()))
    images = take_images(iter_calibration(ctx.inputs["calibset"] / "manifest.json", int(cfg.model.imgsz),
                                          "float32", "NCHW", order), c.correction_images)
    scheme = tflite(cfg.target.per_channel)
    what = "fine-tuning steps" if c.correction == "finetune" else f"convs corrected ({c.correction})"
    weights, summary = correct_for_target(float_onnx, params, scheme, images, c.correction, c.correction_steps,
                                          progress=lambda done, n: ctx.progress(done, n, what))
    np.savez(ctx.out / "corrections.npz", **{f"{k}|w": w for k, (w, _) in weights.items()},
             **{f"{k}|b": b for k, (_, b) in weights.items()})
    summary.update(scheme=scheme.name, per_channel=scheme.per_channel, matched_convs=len(matched),
                   input_params={k: [s, z] for k, (s, z) in params.items()}, matched=matched)
    (ctx.out / "correction.json").write_text(json.dumps(summary, indent=1))
    ctx.log.info("correct: %s correction of %d int8 convs on %d images (%s)", c.correction, summary["convs"],
                 summary["images"], "per-channel" if scheme.per_channel else "per-tensor")
