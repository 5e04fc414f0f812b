"""Activation ranges of a calibrate-only TFLite model: measure them (calibrators.py) and write them back.

The calibrate-only flatbuffer is a float model whose activation tensors carry `quantization.min/max`; those
are the tensors the quantizer needs ranges for. We run that same flatbuffer in the LiteRT interpreter with
all intermediate tensors preserved, feed each tensor of each image to a streaming calibrator, and replace the
min/max with the calibrator's ranges.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np


def _model(flatbuffer: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))


def _serialize(model) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def calibrated_tensors(model) -> dict[int, str]:
    """{tensor index: name} of subgraph 0 tensors that carry min/max statistics."""
    sg = model.subgraphs[0]
    out = {}
    for i, t in enumerate(sg.tensors):
        q = t.quantization
        if q is not None and q.min is not None and len(q.min) > 0:
            out[i] = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
    return out


def feed(calibrated: bytes, stream: Iterator[np.ndarray], cal):
    """Run the calibrate-only flatbuffer over `stream`, giving every calibrated tensor (but the input) to `cal`."""
    from ai_edge_litert.interpreter import Interpreter

    targets = calibrated_tensors(_model(calibrated))
    interp = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    for x in stream:
        interp.set_tensor(inp, x)
        interp.invoke()
        for idx, name in targets.items():
            if idx != inp:
                cal.collect(name, interp.get_tensor(idx))
    return cal


def write_ranges(calibrated: bytes, act: dict[str, tuple[float, float]] | None,
                 input_range: tuple[float, float] | None = (0.0, 1.0)) -> tuple[bytes, dict]:
    """Replace min/max of the calibrated tensors (by name) and pin the input range. Returns (flatbuffer,
    {name: [lo, hi]} of every range the quantizer will use)."""
    model = _model(calibrated)
    sg = model.subgraphs[0]
    targets = calibrated_tensors(model)
    used = {}
    for idx, name in targets.items():
        q = sg.tensors[idx].quantization
        if idx in sg.inputs and input_range is not None:
            lo, hi = input_range
        elif act is not None and name in act:
            lo, hi = act[name]
        else:
            lo, hi = float(q.min[0]), float(q.max[0])
        q.min, q.max = np.array([lo], np.float32), np.array([hi], np.float32)
        used[name] = [float(lo), float(hi)]
    return _serialize(model), used
