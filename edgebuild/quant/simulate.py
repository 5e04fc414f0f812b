"""Correct the int8 convs of a target that is not ONNX (TFLite): simulate it as a QDQ ONNX, correct, read back.

    corrected, summary = correct_for_target(float_onnx, params, scheme, images, kind, steps)

`params` is {conv node name: (input scale, int8 zero point)} exactly as the target's artifact holds them. The
simulation is the float ONNX with Q/DQ at those conv inputs and the scheme's weight quantization (edgebuild.quant.qdq);
the corrections (edgebuild.quant.correction, edgebuild.quant.finetune) run on it unchanged, and the result is each
corrected conv's dequantized int8 weights and float bias, for the backend's writer to hand to its converter.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx

from edgebuild.errors import EdgebuildError
from edgebuild.quant.scheme import Scheme


def simulation_model(float_onnx: Path, params: dict[str, tuple[float, int]], scheme: Scheme) -> onnx.ModelProto:
    """The QDQ simulation of `params`' convs (see the module docstring)."""
    from edgebuild.quant.qdq import simulation_ranges, write_qdq

    model = onnx.load(str(float_onnx))
    inputs: dict[str, tuple[float, int]] = {}
    for n in model.graph.node:
        if n.name in params:
            seen = inputs.setdefault(n.input[0], params[n.name])
            if seen != params[n.name]:  # one tensor, one quantizer: a target cannot feed it two ways
                raise EdgebuildError("calibration.correction", f"conv {n.name!r} reads {n.input[0]!r} with "
                                     f"{params[n.name]}, another conv with {seen}.",
                                     "report this model; the artifact quantizes one tensor twice.")
    with tempfile.TemporaryDirectory(prefix="edgebuild-sim-") as tmp:
        out = Path(tmp) / "sim.onnx"
        write_qdq(float_onnx, out, simulation_ranges(inputs), [n for n in params], list(inputs), scheme)
        return onnx.load(str(out))


def corrected_weights(qdq: onnx.ModelProto, convs: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{conv: (dequantized int8 weights, float bias)} as the QDQ model holds them."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}
    producers = {o: n for n in qdq.graph.node for o in n.output}
    out = {}
    for n in qdq.graph.node:
        if n.name in convs and n.input[1] in producers and len(n.input) > 2 and n.input[2]:
            dq = producers[n.input[1]]
            w = inits[dq.input[0]].astype(np.float32)
            scale = inits[dq.input[1]].astype(np.float32).reshape(-1, *([1] * (w.ndim - 1)))
            out[n.name] = (w * scale, inits[n.input[2]].astype(np.float32))
    return out


def correct_for_target(float_onnx: Path, params: dict[str, tuple[float, int]], scheme: Scheme,
                       images: Sequence[np.ndarray], kind: str, steps: int,
                       progress: Callable[[int, int], None] | None = None) -> tuple[dict, dict]:
    from edgebuild.quant.correction import correct
    from edgebuild.quant.finetune import finetune

    sim = simulation_model(float_onnx, params, scheme)
    convs = list(params)
    if kind == "finetune":
        summary = finetune(onnx.load(str(float_onnx)), sim, convs, images, steps, progress, scheme)
    else:
        summary = correct(onnx.load(str(float_onnx)), sim, convs, images, kind, progress, scheme)
    return corrected_weights(sim, convs), summary
