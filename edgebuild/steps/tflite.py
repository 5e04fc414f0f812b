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
    from edgebuild.tflite import metadata, mixed, quantize

    cfg = ctx.cfg
    meta = json.loads((ctx.inputs["export"] / "meta.json").read_text())
    imgsz = int(cfg.model.imgsz)
    mode = cfg.precision.mode
    info: dict = {"mode": mode}
    if mode == "fp16":
        model = quantize.convert_fp16(ctx.inputs["tfconvert"] / "saved_model")
    else:
        calibrated = (ctx.inputs["calibrate"] / "calibrated.tflite").read_bytes()
        calibration = json.loads((ctx.inputs["calibrate"] / "ranges.json").read_text())
        correction = None
        if "correct" in ctx.inputs:
            calibrated, correction = _apply_correction(calibrated, ctx.inputs["correct"])
        float_layers = list(cfg.precision.float_layers) if mode == "mixed" else []
        model, keep = quantize.quantize_int8(calibrated, per_channel=bool(cfg.target.per_channel),
                                             input_dtype=cfg.target.input_dtype, float_layers=float_layers)
        if correction is not None:
            _check_same_scales(model, correction)
        info.update(method=calibration["method"], images=calibration["images"],
                    per_channel=bool(cfg.target.per_channel), float_layers=float_layers, float_ops=keep,
                    correction={k: v for k, v in (correction or {}).items() if k not in ("input_params", "matched")}
                    or None)
    io = metadata.io_details(model, meta)
    meta.update(quantization=info, tflite=io, float_ops=mixed.float_ops(model) if mode != "fp16" else "all")
    meta["input"] = {**meta["input"], "layout": "NHWC", "shape": [1, imgsz, imgsz, 3], "tflite": io["input"]}
    model = metadata.embed(model, meta)
    (ctx.out / "model.tflite").write_bytes(model)
    (ctx.out / "meta.json").write_text(json.dumps(meta, indent=1))
    ctx.log.info("tflite: %s, %d bytes, %d float ops", mode, len(model),
                 len(meta["float_ops"]) if isinstance(meta["float_ops"], list) else -1)


def _apply_correction(calibrated: bytes, correct_dir) -> tuple[bytes, dict]:
    """(calibrated flatbuffer with the corrected conv weights, the correct step's summary)."""
    import numpy as np

    from edgebuild.tflite import convs

    data = np.load(correct_dir / "corrections.npz")
    names = sorted({k.rsplit("|", 1)[0] for k in data.files})
    summary = json.loads((correct_dir / "correction.json").read_text())
    weights = {n: (data[f"{n}|w"], data[f"{n}|b"]) for n in names}
    return convs.write_weights(calibrated, summary["matched"], weights), summary


def _check_same_scales(model: bytes, correction: dict) -> None:
    """The corrected weights must not have moved any conv input's quantization (no silent re-calibration)."""
    from edgebuild.errors import EdgebuildError
    from edgebuild.tflite import convs

    got = convs.input_params(model, correction["matched"])
    for name, (scale, zp) in correction["input_params"].items():
        if name not in got or got[name] != (scale, zp):
            raise EdgebuildError("calibration.correction", f"conv {name!r} was corrected for input scale/zero point "
                                 f"{scale:.6g}/{zp} but the .tflite quantized it with {got.get(name)}.",
                                 "report this model; the quantizer changed a range the correction relied on.")
