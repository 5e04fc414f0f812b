"""precision=auto for TensorRT (edgebuild.quant.auto has the search): candidates are all int8 convs of the
corrected QDQ model (the step ranks them by what each does to the outputs; ranking by the quantization noise at a
conv's own input picked convs whose float version changed nothing); a layer is kept FP16 by removing its Q/DQ:
the conv reads the float tensor and the float model's weights and bias (`keep_float`), as precision.float_layers
would have placed it."""
from __future__ import annotations

import onnx

from edgebuild.quant.auto import Candidate


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def conv_inputs(qdq: onnx.ModelProto) -> dict[str, tuple[str, float, int]]:
    """{int8 conv name: (float activation it reads, scale, zero point)} from the QDQ model."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}
    prod = _producers(qdq)
    out = {}
    for n in qdq.graph.node:
        dq = prod.get(n.input[0]) if n.op_type == "Conv" else None
        q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            zp = int(inits[q.input[2]]) if len(q.input) > 2 and q.input[2] else 0
            out[n.name] = (q.input[0], float(inits[q.input[1]]), zp)
    return out


def candidates(qdq: onnx.ModelProto) -> list[Candidate]:
    """Every int8 conv of the QDQ model (Q/DQ removal is cheap: the step ranks them all by their output effect)."""
    return [Candidate(c, f"Conv {c} (input {x})", 0.0) for c, (x, _, _) in sorted(conv_inputs(qdq).items())]


def keep_float(qdq: onnx.ModelProto, float_model: onnx.ModelProto, convs: list[str]) -> onnx.ModelProto:
    """A copy of the QDQ model whose listed convs compute in float: their inputs are the float model's (activation
    before its Q/DQ, original weights and bias), and Q/DQ nodes or initializers nobody reads any more are dropped."""
    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    want = set(convs)
    floats = {n.name: n for n in float_model.graph.node if n.name in want}
    finits = {i.name: i for i in float_model.graph.initializer}
    present = {i.name for i in m.graph.initializer}
    for n in m.graph.node:
        if n.name not in want:
            continue
        src = floats[n.name]
        for k, name in enumerate(src.input):
            if name in finits:
                new = f"{name}__float"
                if new not in present:
                    t = onnx.TensorProto()
                    t.CopyFrom(finits[name])
                    t.name = new
                    m.graph.initializer.append(t)
                    present.add(new)
                name = new
            n.input[k] = name
    _prune(m)
    return m


def _prune(m: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads (graph outputs count as read) and unread initializers."""
    while True:
        read = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
        dead = [n for n in m.graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            m.graph.node.remove(n)
    read = {i for n in m.graph.node for i in n.input}
    for init in [i for i in m.graph.initializer if i.name not in read]:
        m.graph.initializer.remove(init)
