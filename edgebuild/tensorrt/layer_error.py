"""Per-layer INT8 error of the TensorRT QDQ model, measured in onnxruntime (edgebuild.quant.layer_error has the table).

The quantized activations are the inputs X of the QuantizeLinear nodes that feed a DequantizeLinear (weights are
initializers and are skipped). With the DequantizeLinear outputs exposed in the QDQ model and the X tensors in the
float ONNX (qdq.with_outputs), both run on the same images and each DQ output is compared with float X. Upstream
int8 convs (and their correction) are part of what the DQ output carries, so the error is the artifact's own. The
`op` column names the nodes that read the quantized tensor: the names precision.float_layers takes.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from edgebuild.quant.layer_error import SQNR


def activation_pairs(model: onnx.ModelProto) -> dict[str, tuple[str, list[str]]]:
    """{float tensor X: (DequantizeLinear output, names of the nodes reading it)} for activation Q/DQ pairs."""
    inits = {i.name for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pairs = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits or n.input[0] in pairs:
            continue
        for dq in consumers.get(n.output[0], []):
            if dq.op_type == "DequantizeLinear":
                pairs[n.input[0]] = (dq.output[0], [c.name or c.op_type for c in consumers.get(dq.output[0], [])])
                break
    return pairs


def session_with_outputs(model: onnx.ModelProto, names: list[str]):
    from edgebuild.quant.correction import session
    from edgebuild.tensorrt.qdq import with_outputs

    sess = session(with_outputs(model, names))
    return sess, sess.get_inputs()[0].name, {o.name for o in sess.get_outputs()}


def collect(float_onnx: Path, qdq_onnx: Path, images: Iterable[np.ndarray]) -> list[dict]:
    """SQNR rows (worst first) of every quantized activation of `qdq_onnx` vs `float_onnx`, on NCHW float32 images."""
    pairs = activation_pairs(onnx.load(str(qdq_onnx)))
    q, q_in, q_out = session_with_outputs(onnx.load(str(qdq_onnx)), [dq for dq, _ in pairs.values()])
    f, f_in, f_out = session_with_outputs(onnx.load(str(float_onnx)), list(pairs))
    pairs = {x: v for x, v in pairs.items() if v[0] in q_out and (x in f_out or x == f_in)}
    acc = SQNR({x: ", ".join(names) for x, (_, names) in pairs.items()})
    xs, dqs = [x for x in pairs if x != f_in], [dq for dq, _ in pairs.values()]
    for image in images:
        fv = dict(zip(xs, f.run(xs, {f_in: image})))
        fv[f_in] = image
        qv = dict(zip(dqs, q.run(dqs, {q_in: image})))
        for x, (dq, _) in pairs.items():
            acc.add(x, fv[x], qv[dq])
    return acc.rows()
