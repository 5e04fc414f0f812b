"""Lint a quantized TFLite model against a target: which ops fall back to the CPU, and does its quantization
match what the board needs (uint8 input with scale 1/255 and zero point 0, weight granularity, integer-only)."""
from __future__ import annotations

from edgebuild.targets.tflite_ops import TfliteModel

# Ops whose input 1 is the weight tensor whose granularity (per-channel / per-tensor) the target cares about.
# Value: the weight tensor's output-channel axis (the axis per-channel scales run along).
WEIGHTED_OPS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0, "TRANSPOSE_CONV": 0, "CONV_3D": 4}
# Expected input quantization for raw pixels fed by the board (value = pixel / 255).
PIXEL_QUANT = {"uint8": (1 / 255, 0), "int8": (1 / 255, -128)}
_FLOAT = {"FLOAT32", "FLOAT16", "FLOAT64"}


def fallback_ops(counts: dict[str, int], supported: list[str] | None) -> dict[str, int]:
    """Ops of `counts` that the target's op list does not name; supported=None means the target runs every op."""
    if supported is None:
        return {}
    allowed = set(supported)
    return {name: n for name, n in sorted(counts.items()) if name not in allowed}


def unknown_op_names(supported: list[str] | None, known: set[str]) -> list[str]:
    """Entries of a target op list that are neither TFLite builtins nor CUSTOM:<code> (typos)."""
    return sorted(n for n in (supported or []) if n not in known and not n.startswith("CUSTOM:"))


def quantization_checks(model: TfliteModel, *, per_channel: bool, input_dtype: str,
                        precision_mode: str = "int8") -> list[dict]:
    """One entry per check: {"name", "ok", "detail"}; ok is None when the check does not apply."""
    if precision_mode == "fp16":
        return [_check("quantized", None, "precision.mode=fp16: the model is not integer-quantized; checks skipped.")]
    return [*_input_checks(model, input_dtype), _weight_check(model, per_channel),
            _integer_only_check(model, precision_mode)]


def _check(name: str, ok: bool | None, detail: str) -> dict:
    return {"name": name, "ok": ok, "detail": detail}


def _input_checks(model: TfliteModel, input_dtype: str) -> list[dict]:
    out = []
    for idx in model.inputs:
        t = model.tensors[0][idx]
        want = input_dtype.upper()
        out.append(_check(f"input_dtype[{t.name}]", t.dtype == want, f"{t.dtype} (target.input_dtype={input_dtype})"))
        if input_dtype not in PIXEL_QUANT:
            continue
        scale, zp = PIXEL_QUANT[input_dtype]
        if not t.scale:
            out.append(_check(f"input_quant[{t.name}]", False, "input tensor carries no quantization parameters"))
            continue
        ok = len(t.scale) == 1 and abs(t.scale[0] - scale) <= 1e-3 * scale and t.zero_point[0] == zp
        out.append(_check(f"input_quant[{t.name}]", ok,
                          f"scale {t.scale[0]:.9g} zero point {t.zero_point[0]} (want {scale:.9g}, {zp}: raw pixels)"))
    return out


def _weight_check(model: TfliteModel, per_channel: bool) -> dict:
    per_ch, per_t = [], []
    for op in model.ops:
        if op.name not in WEIGHTED_OPS or len(op.inputs) < 2:
            continue
        w = model.tensor(op, op.inputs[1])
        if w is None or not w.scale:
            continue
        axis = WEIGHTED_OPS[op.name]
        if len(w.scale) == 1 and len(w.shape) > axis and w.shape[axis] == 1:
            continue  # one output channel: per-channel and per-tensor are the same thing
        (per_ch if len(w.scale) > 1 else per_t).append(w.name)
    want = "per-channel" if per_channel else "per-tensor"
    if not per_ch and not per_t:
        return _check("weight_granularity", None, "no quantized conv/fully-connected weights found")
    wrong = per_t if per_channel else per_ch
    detail = f"{len(per_ch)} per-channel, {len(per_t)} per-tensor weight tensors; target wants {want}"
    if wrong:
        detail += f" (e.g. {wrong[0]})"
    return _check("weight_granularity", not wrong, detail)


def _integer_only_check(model: TfliteModel, precision_mode: str) -> dict:
    """Ops computing in float inside a quantized graph (the converter wraps them in DEQUANTIZE/QUANTIZE)."""
    float_ops: dict[str, int] = {}
    for op in model.ops:
        if op.name in ("DEQUANTIZE", "QUANTIZE"):
            continue
        ts = [model.tensor(op, i) for i in op.outputs]
        if any(t is not None and not t.constant and t.dtype in _FLOAT for t in ts):
            float_ops[op.name] = float_ops.get(op.name, 0) + 1
    detail = ", ".join(f"{k} x{v}" for k, v in sorted(float_ops.items())) or "every op computes in integer"
    if precision_mode == "mixed":
        return _check("integer_only", None, f"precision.mode=mixed keeps float ops on purpose: {detail}")
    return _check("integer_only", not float_ops, detail if not float_ops else f"float ops: {detail}")
