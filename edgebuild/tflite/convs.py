"""The convolutions of a TFLite flatbuffer, tied to the ONNX Conv nodes they came from.

onnx2tf copies each ONNX Conv's float weights unchanged, only transposed (OIHW -> OHWI for CONV_2D, -> 1HWO for
DEPTHWISE_CONV_2D), so a conv is identified by the bytes of its weights: no reliance on how onnx2tf names tensors.

- `match(flatbuffer, onnx_model)`: {ONNX conv name: its TFLite op (index, output tensor name)} for the float
  (calibrate-only) flatbuffer.
- `input_params(int8_flatbuffer, matched)`: the scale and int8 zero point of each conv's input in the finished model,
  i.e. what the board computes with (the correction simulates exactly these).
- `write_weights(flatbuffer, matched, {conv: (weights OIHW, bias)})`: corrected float weights into the float
  flatbuffer, so the converter's own quantizer makes the int8 weights from them.
"""
from __future__ import annotations

import hashlib

import numpy as np

from edgebuild.errors import EdgebuildError

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def _to_tflite(w: np.ndarray, op: str) -> np.ndarray:
    return w.transpose(1, 2, 3, 0) if op == "DEPTHWISE_CONV_2D" else w.transpose(0, 2, 3, 1)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, np.float32).tobytes()).hexdigest()


def _buffer(model, tensor) -> np.ndarray | None:
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return None if data is None or len(data) == 0 else np.asarray(data, np.uint8)


def match(flatbuffer: bytes, onnx_model) -> dict[str, dict]:
    """{ONNX Conv node name: {"index", "op", "output"}} for every Conv whose weights appear in the float flatbuffer."""
    from onnx import numpy_helper

    from edgebuild.tflite.mixed import _ops
    from edgebuild.tflite.ranges import _model

    model = _model(flatbuffer)
    sg = model.subgraphs[0]
    by_digest = {}
    for op in _ops(model):
        if op["op"] in CONV_OPS and len(op["inputs"]) > 1:
            data = _buffer(model, sg.tensors[op["inputs"][1]])
            if data is not None and sg.tensors[op["inputs"][1]].type == 0:  # FLOAT32 weights
                by_digest[hashlib.sha256(data.tobytes()).hexdigest()] = op
    inits = {i.name: i for i in onnx_model.graph.initializer}
    out = {}
    for n in onnx_model.graph.node:
        if n.op_type != "Conv" or n.input[1] not in inits:
            continue
        if not n.name:
            raise EdgebuildError("model.onnx", "the ONNX model has unnamed Conv nodes; the correction and the "
                                 "per-layer report name convs by node name.",
                                 "re-export the model (export step) or name the nodes.")
        w = numpy_helper.to_array(inits[n.input[1]])
        for kind in CONV_OPS:
            op = by_digest.get(_digest(_to_tflite(w, kind)))
            if op is not None and op["op"] == kind:
                out[n.name] = {"index": op["index"], "op": kind, "output": op["node"]}
                break
    return out


def input_params(flatbuffer: bytes, matched: dict[str, dict]) -> dict[str, tuple[float, int]]:
    """{ONNX conv name: (input scale, zero point)} of the convs that run in int8 in the finished model."""
    from edgebuild.tflite.mixed import _ops
    from edgebuild.tflite.ranges import _model

    model = _model(flatbuffer)
    sg = model.subgraphs[0]
    ops = {op["node"]: op for op in _ops(model) if op["op"] in CONV_OPS}
    out = {}
    for name, m in matched.items():
        op = ops.get(m["output"])
        if op is None:
            continue
        t = sg.tensors[op["inputs"][0]]
        q = t.quantization
        if t.type != 9 or q is None or q.scale is None or len(q.scale) != 1:  # 9: INT8
            continue  # kept float (precision.float_layers)
        out[name] = (float(q.scale[0]), int(q.zeroPoint[0]))
    return out


def write_weights(flatbuffer: bytes, matched: dict[str, dict], weights: dict[str, tuple[np.ndarray, np.ndarray]]) \
        -> bytes:
    """The float flatbuffer with each listed conv's weights (ONNX OIHW) and bias replaced; each gets a buffer of its
    own (the converter may share identical buffers between tensors)."""
    from tensorflow.lite.python import schema_py_generated as schema

    from edgebuild.tflite.ranges import _model, _serialize

    model = _model(flatbuffer)
    sg = model.subgraphs[0]
    for name, (w, b) in weights.items():
        m = matched[name]
        op = sg.operators[m["index"]]
        for tensor_index, value in ((op.inputs[1], _to_tflite(np.asarray(w, np.float32), m["op"])),
                                    (op.inputs[2], np.asarray(b, np.float32))):
            tensor = sg.tensors[tensor_index]
            if list(tensor.shape) != list(value.shape):
                raise ValueError(f"{name}: tensor shape {list(tensor.shape)} != corrected {list(value.shape)}")
            buf = schema.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(value, np.float32).tobytes(), np.uint8)
            model.buffers.append(buf)
            tensor.buffer = len(model.buffers) - 1
    return _serialize(model)
