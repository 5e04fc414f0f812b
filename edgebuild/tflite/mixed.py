"""Mixed precision: which ops stay float (precision.float_layers), and a check that they did.

Patterns (matched against the calibrate-only float model):
  SOFTMAX        an op type (TFLite builtin name, case-insensitive): every op of that type
  *dfl*          otherwise an fnmatch pattern on the op's output tensor names
  >PATTERN       the matched ops and every op after them on their branch (all downstream consumers)
The quantizer's `denylisted_nodes` names ops by their first output tensor name.
"""
from __future__ import annotations

import fnmatch

from edgebuild.errors import EdgebuildError


def _ops(model) -> list[dict]:
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sg = model.subgraphs[0]

    def tname(i):
        n = sg.tensors[i].name
        return n.decode() if isinstance(n, bytes) else str(n)

    ops = []
    for k, op in enumerate(sg.operators):
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        outs = [tname(i) for i in op.outputs if i >= 0]
        ops.append({"index": k, "op": kind, "node": outs[0] if outs else "", "outputs": outs,
                    "inputs": [int(i) for i in op.inputs if i >= 0], "output_ids": [int(i) for i in op.outputs]})
    return ops


def _match(op: dict, pattern: str) -> bool:
    if pattern.upper() == op["op"]:
        return True
    return any(fnmatch.fnmatchcase(n, pattern) for n in op["outputs"])


def resolve(flatbuffer: bytes, patterns) -> list[dict]:
    """Ops kept float: [{"op": type, "node": name}] in graph order. Unmatched patterns are an error."""
    from edgebuild.tflite.ranges import _model

    ops = _ops(_model(flatbuffer))
    consumers: dict[int, list[int]] = {}
    for op in ops:
        for t in op["inputs"]:
            consumers.setdefault(t, []).append(op["index"])
    keep: set[int] = set()
    for raw in patterns:
        downstream = raw.startswith(">")
        pat = raw[1:] if downstream else raw
        hit = [op["index"] for op in ops if _match(op, pat)]
        if not hit:
            kinds = sorted({op["op"] for op in ops})
            raise EdgebuildError("precision.float_layers", f"pattern {raw!r} matches no op of the model.",
                                 f"use an op type ({', '.join(kinds)}), a tensor-name pattern, or '>' + either.")
        todo = list(hit)
        while todo:
            k = todo.pop()
            if k in keep:
                continue
            keep.add(k)
            if downstream:
                for t in ops[k]["output_ids"]:
                    todo.extend(consumers.get(t, []))
    return [{"op": ops[k]["op"], "node": ops[k]["node"]} for k in sorted(keep)]


def check_quantized(flatbuffer: bytes, keep: list[dict]) -> None:
    """Every op outside `keep` (and the quantize/dequantize glue) must compute in integers; name any that do not."""
    from tensorflow.lite.python import schema_py_generated as schema

    from edgebuild.tflite.ranges import _model

    model = _model(flatbuffer)
    sg = model.subgraphs[0]
    def constant(t):
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        return data is not None and len(data) > 0

    float_ids = {i for i, t in enumerate(sg.tensors)
                 if t.type in (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16) and not constant(t)}
    kept = {k["node"] for k in keep}
    for op in _ops(model):
        if op["op"] in ("QUANTIZE", "DEQUANTIZE") or _renamed(op["node"], kept):
            continue
        if any(t in float_ids for t in op["output_ids"]):
            raise EdgebuildError("precision.mode", f"op {op['op']} producing {op['node']!r} could not be quantized "
                                 "and stayed float.", f"keep it float on purpose: precision.mode=mixed "
                                 f"precision.float_layers=['{op['node']}'] (or its op type {op['op']}).")


def _renamed(name: str, kept: set[str]) -> bool:
    """The quantizer may suffix a digit to a kept op's tensor name when it inserts a QUANTIZE after it."""
    return name in kept or any(name.startswith(k) and name[len(k):].isdigit() for k in kept)


def float_ops(flatbuffer: bytes) -> list[dict]:
    """Ops of a finished model that compute in float (for meta.json and reports)."""
    from tensorflow.lite.python import schema_py_generated as schema

    from edgebuild.tflite.ranges import _model

    model = _model(flatbuffer)
    sg = model.subgraphs[0]
    f = {i for i, t in enumerate(sg.tensors) if t.type in (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16)}
    return [{"op": op["op"], "node": op["node"]} for op in _ops(model)
            if op["op"] not in ("QUANTIZE", "DEQUANTIZE") and any(t in f for t in op["output_ids"])]
