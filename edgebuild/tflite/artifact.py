"""The deployable .tflite of an int8 / mixed build: calibrated flatbuffer (+ the `correct` step's weights) ->
quantized model with meta.json embedded. One function for the `tflite` step and the `precision_search` step's
candidates, so a searched model is built exactly as a hand-written float_layers list would be.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgebuild.errors import EdgebuildError


def build(calibrate_dir: Path, correct_dir: Path | None, *, per_channel: bool, input_dtype: str,
          float_layers: list[str]) -> tuple[bytes, dict]:
    """(int8 flatbuffer, quantization info for meta.json). Ops matched by float_layers stay float."""
    from edgebuild.tflite import quantize

    calibrated = (calibrate_dir / "calibrated.tflite").read_bytes()
    calibration = json.loads((calibrate_dir / "ranges.json").read_text())
    correction = None
    if correct_dir is not None:
        calibrated, correction = _apply_correction(calibrated, correct_dir, float_layers)
    model, keep = quantize.quantize_int8(calibrated, per_channel=per_channel, input_dtype=input_dtype,
                                         float_layers=float_layers)
    if correction is not None:
        _check_same_scales(model, correction)
    info = {"method": calibration["method"], "images": calibration["images"], "per_channel": per_channel,
            "float_layers": float_layers, "float_ops": keep,
            "correction": {k: v for k, v in (correction or {}).items() if k not in ("input_params", "matched")}
            or None}
    return model, info


def finish(model: bytes, meta: dict, info: dict, imgsz: int) -> tuple[bytes, dict]:
    """meta.json for the finished flatbuffer (io details, float ops) and the flatbuffer with it embedded."""
    from edgebuild.tflite import metadata, mixed

    io = metadata.io_details(model, meta)
    meta = {**meta, "quantization": info, "tflite": io,
            "float_ops": mixed.float_ops(model) if info["mode"] != "fp16" else "all"}
    meta["input"] = {**meta["input"], "layout": "NHWC", "shape": [1, imgsz, imgsz, 3], "tflite": io["input"]}
    return metadata.embed(model, meta), meta


def _apply_correction(calibrated: bytes, correct_dir: Path, float_layers: list[str]) -> tuple[bytes, dict]:
    """(calibrated flatbuffer with the corrected conv weights, the correct step's summary). A conv that
    float_layers keeps float keeps its float weights: the correction was fitted to its int8 arithmetic."""
    import numpy as np

    from edgebuild.tflite import convs, mixed

    data = np.load(correct_dir / "corrections.npz")
    summary = json.loads((correct_dir / "correction.json").read_text())
    kept = {op["node"] for op in mixed.resolve(calibrated, float_layers)} if float_layers else set()
    names = sorted({k.rsplit("|", 1)[0] for k in data.files} - {n for n, m in summary["matched"].items()
                                                                 if m["output"] in kept})
    summary["input_params"] = {n: v for n, v in summary["input_params"].items() if n in names}
    weights = {n: (data[f"{n}|w"], data[f"{n}|b"]) for n in names}
    return convs.write_weights(calibrated, summary["matched"], weights), summary


def _check_same_scales(model: bytes, correction: dict) -> None:
    """The corrected weights must not have moved any conv input's quantization (no silent re-calibration)."""
    from edgebuild.tflite import convs

    got = convs.input_params(model, correction["matched"])
    for name, (scale, zp) in correction["input_params"].items():
        if name not in got or got[name] != (scale, zp):
            raise EdgebuildError("calibration.correction", f"conv {name!r} was corrected for input scale/zero point "
                                 f"{scale:.6g}/{zp} but the .tflite quantized it with {got.get(name)}.",
                                 "report this model; the quantizer changed a range the correction relied on.")
