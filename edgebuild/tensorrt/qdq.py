"""Float ONNX -> explicit-quantization QDQ ONNX, the way TensorRT wants it.

Placement (`plan_quantization`): Q/DQ on the activation input and the weights of every Conv, nothing else:
- activations: symmetric int8 (zero point 0, scale = amax / 127), one scale per tensor;
- weights: symmetric int8 per output channel; biases stay float (TensorRT folds them, it has no int32 DQ);
- Conv outputs get no Q/DQ of their own: the next Conv's input Q/DQ closes the int8 region and TensorRT
  fuses Conv + SiLU + the following Q into one int8 kernel;
- the DFL decode conv (weights exactly 0, 1, ..., n-1) stays float: it turns a softmax over 16 bins into
  a distance, int8 there costs box accuracy for no speed;
- precision.mode=mixed: nodes matched by precision.float_layers stay float (FP16 in the engine).

Calibration (`collect_ranges`) runs the float model in onnxruntime with every float activation exposed as an
output, one image at a time, and feeds each tensor to an `edgebuild.quant.calibrators` calibrator, so memory does not
grow with the number of images. The same ranges make the QDQ model and the TensorRT calibration cache.

The QDQ writer (edgebuild.quant.qdq, shared with the TFLite correction's simulation) is onnxruntime's
`quantize_static` fed with precomputed ranges; docs/tensorrt.md says why it was chosen over nvidia-modelopt.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgebuild.errors import EdgebuildError

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


@dataclass
class QuantPlan:
    """Which Conv nodes get Q/DQ and which stay float, and why."""

    quantized: list[str] = field(default_factory=list)      # Conv node names with Q/DQ
    activations: list[str] = field(default_factory=list)    # their activation inputs (one scale each)
    dfl: list[str] = field(default_factory=list)             # DFL decode convs kept float
    float_nodes: list[str] = field(default_factory=list)     # every node matched by precision.float_layers
    matches: dict[str, list[str]] = field(default_factory=dict)  # pattern -> nodes it matched

    def summary(self) -> dict:
        return {"quantized_convs": len(self.quantized), "quantized_activations": len(self.activations),
                "dfl_float": self.dfl, "float_nodes": self.float_nodes,
                "float_layer_matches": {p: len(n) for p, n in self.matches.items()}}


def is_dfl_conv(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> bool:
    """The DFL expectation conv: 1 output channel, 1x1 kernel, weights 0..n-1, no bias."""
    if node.op_type != "Conv" or len(node.input) > 2 and node.input[2]:
        return False
    w = inits.get(node.input[1])
    if w is None or w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1) or w.shape[1] < 2:
        return False
    return bool(np.array_equal(w.reshape(-1), np.arange(w.shape[1], dtype=w.dtype)))


def match_float_layers(model: onnx.ModelProto, patterns: Iterable[str]) -> dict[str, list[str]]:
    """pattern -> node names it keeps float.

    `PATTERN` matches a node whose name matches the glob (`/model.22/cv2*`) or whose op type equals it
    (case-insensitive, `Softmax`); `>PATTERN` matches those nodes and everything downstream of them.
    A pattern that matches nothing is an error (a typo would silently quantize everything)."""
    nodes = list(model.graph.node)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = {}
    for pattern in patterns:
        downstream = pattern.startswith(">")
        pat = pattern[1:] if downstream else pattern
        hits = [n for n in nodes if fnmatch.fnmatchcase(n.name, pat) or n.op_type.lower() == pat.lower()]
        if downstream:
            seen, todo = {n.name for n in hits}, list(hits)
            while todo:
                for t in todo.pop().output:
                    for c in consumers.get(t, []):
                        if c.name not in seen:
                            seen.add(c.name)
                            hits.append(c)
                            todo.append(c)
        if not hits:
            some = ", ".join(n.name for n in nodes if n.op_type == "Conv")[:300]
            raise EdgebuildError("precision.float_layers", f"pattern {pattern!r} matches no node of the ONNX model.",
                                 f"use an ONNX node-name glob or op type (prefix '>' for 'and everything after'), "
                                 f"e.g. '/model.22/cv2*'; Conv nodes are: {some} ...")
        out[pattern] = [n.name for n in hits]
    return out


def plan_quantization(model: onnx.ModelProto, float_layers: Iterable[str] = ()) -> QuantPlan:
    """Decide Q/DQ placement (see the module docstring)."""
    for n in model.graph.node:
        if not n.name:
            raise EdgebuildError("model.onnx", "the ONNX model has unnamed nodes; placement and TensorRT layer "
                                 "precisions are by node name.", "re-export the model (export step) or name the nodes.")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    plan = QuantPlan(matches=match_float_layers(model, float_layers))
    keep_float = {name for names in plan.matches.values() for name in names}
    plan.float_nodes = [n.name for n in model.graph.node if n.name in keep_float]
    for n in model.graph.node:
        if n.op_type != "Conv" or n.input[1] not in inits:
            continue
        if is_dfl_conv(n, inits):
            plan.dfl.append(n.name)
        elif n.name not in keep_float:
            plan.quantized.append(n.name)
            if n.input[0] not in plan.activations:
                plan.activations.append(n.input[0])
    if not plan.quantized:
        raise EdgebuildError("precision.float_layers", "no Conv is left to quantize.",
                             "narrow the patterns, or use precision=fp16 for a float engine.")
    return plan


def calibration_tensors(model: onnx.ModelProto) -> list[str]:
    """Every float activation: graph inputs and outputs of non-Constant nodes (the calibration cache covers all)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits and types.get(i.name) in FLOAT_TYPES]
    for n in model.graph.node:
        if n.op_type == "Constant":
            continue
        names += [o for o in n.output if o and types.get(o) in FLOAT_TYPES and o not in names]
    return names


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """The model (modified in place) with every named intermediate tensor also exposed as a graph output
    (types from shape inference; graph inputs and names already output are left as they are)."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    infos = {v.name: v for v in inferred.value_info}
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present and name in infos:
            model.graph.output.append(infos[name])
            present.add(name)
    return model


def collect_ranges(model_path: Path, tensors: list[str], images: Iterable[np.ndarray], calibrator,
                   progress: Callable[[int], None] | None = None, threads: int = 0) -> tuple[dict, int]:
    """Stream images through the float model; returns (calibrator ranges {name: (lo, hi)}, images seen)."""
    import onnxruntime as ort

    model = with_outputs(onnx.load(str(model_path)), tensors)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    del model
    wanted = [t for t in tensors if t in {o.name for o in sess.get_outputs()} or t in {i.name for i in sess.get_inputs()}]
    outputs = [o.name for o in sess.get_outputs() if o.name in wanted]
    input_name = sess.get_inputs()[0].name
    count = 0
    for image in images:
        values = sess.run(outputs, {input_name: image})
        if input_name in wanted:
            calibrator.collect(input_name, image)
        for name, value in zip(outputs, values):
            calibrator.collect(name, value)
        del values
        count += 1
        if progress:
            progress(count)
    if count == 0:
        raise EdgebuildError("calibset", "the calibration manifest has no images.",
                             "raise calibration.count / calibration.fraction or check the dataset's calibration split.")
    return calibrator.compute_ranges(), count


def write_qdq(model_path: Path, out_path: Path, ranges: dict[str, tuple[float, float]], plan: QuantPlan) -> dict:
    """Write TensorRT's QDQ model (symmetric activations) from precomputed ranges; returns a summary for meta.json."""
    from edgebuild.quant.qdq import write_qdq as write
    from edgebuild.quant.scheme import TENSORRT

    write(model_path, out_path, ranges, plan.quantized, plan.activations, TENSORRT)
    return check_qdq(onnx.load(str(out_path)))


def check_qdq(model: onnx.ModelProto) -> dict:
    """What TensorRT requires of explicit quantization: int8, zero point 0 everywhere; count the Q/DQ nodes."""
    inits = {i.name: i for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    for n in q + dq:
        zp = inits.get(n.input[2]) if len(n.input) > 2 else None
        if zp is None or zp.data_type != onnx.TensorProto.INT8 or np.any(onnx.numpy_helper.to_array(zp)):
            raise EdgebuildError("qdq", f"{n.op_type} {n.name!r} is not symmetric int8 (zero point must be int8 0).",
                                 "this is a bug in edgebuild's QDQ writer; please report it.")
    return {"quantize_nodes": len(q), "dequantize_nodes": len(dq)}
