"""Per-layer INT8 error of a .tflite, measured in LiteRT itself (edgebuild.quant.layer_error has the table).

The `calibrate` step's calibrated.tflite is the float model with the same tensor names the quantizer keeps in the
int8 model. Both run in the LiteRT interpreter with every intermediate tensor preserved, on the same images (the
int8 model gets its own input encoding, e.g. uint8 round(x * 255)). Every int8/uint8 activation of the int8 model
(quantized, produced by an op) that exists by name and shape in the float model is dequantized, (q - zp) * scale,
and compared with the float tensor. A tensor the quantizer renamed (mixed._renamed) is skipped.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgebuild.quant.layer_error import SQNR


def _interpreter(flatbuffer: bytes):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True, num_threads=1)
    it.allocate_tensors()
    return it


def _encode(x: np.ndarray, detail: dict) -> np.ndarray:
    """The float [0, 1] image in the input's own dtype and quantization."""
    scale, zp = detail["quantization"]
    if detail["dtype"] not in (np.uint8, np.int8) or not scale:
        return x.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zp), info.min, info.max).astype(detail["dtype"])


def targets(model: bytes, q_details: list[dict], f_details: list[dict]) -> tuple[dict[int, tuple], SQNR]:
    """{int8 tensor index: (name, float tensor index, scale, zero point)} and an empty SQNR knowing ops/inputs.
    Produced by an op: the model input and constants are not targets."""
    from edgebuild.tflite import mixed
    from edgebuild.tflite.ranges import _model

    producer = {t: op for op in mixed._ops(_model(model)) for t in op["output_ids"]}  # noqa: SLF001
    floats = {d["name"]: d for d in f_details}
    out = {}
    for d in q_details:
        scale, zp = d["quantization"]
        f = floats.get(d["name"])
        if (d["dtype"] in (np.int8, np.uint8) and scale and d["index"] in producer and d["name"]
                and f is not None and list(f["shape"]) == list(d["shape"])):
            out[d["index"]] = (d["name"], f["index"], float(scale), int(zp))
    ops = {v[0]: producer[i]["op"] for i, v in out.items()}
    inputs = {v[0]: [out[t][0] for t in producer[i]["inputs"] if t in out] for i, v in out.items()}
    return out, SQNR(ops, inputs)


def collect(calibrated: bytes, model: bytes, images: Iterable[np.ndarray]) -> list[dict]:
    """SQNR rows (worst first) of the int8 `model` vs the float `calibrated` flatbuffer on NHWC float32 [0, 1]
    images of batch 1."""
    fl, q = _interpreter(calibrated), _interpreter(model)
    tensors, acc = targets(model, q.get_tensor_details(), fl.get_tensor_details())
    f_in, q_in = fl.get_input_details()[0], q.get_input_details()[0]
    for x in images:
        fl.set_tensor(f_in["index"], x.astype(np.float32))
        q.set_tensor(q_in["index"], _encode(x, q_in))
        fl.invoke()
        q.invoke()
        for idx, (name, f_idx, scale, zp) in tensors.items():
            acc.add(name, fl.get_tensor(f_idx), (q.get_tensor(idx).astype(np.float32) - zp) * scale)
    return acc.rows()
