"""Post-calibration correction of a QDQ model's int8 convs (`calibration.correction`), for every backend.

The QDQ model is the simulation of the target's arithmetic (edgebuild.quant.scheme): TensorRT's own QDQ artifact
(symmetric activations), or for TFLite a QDQ copy of the float ONNX whose conv inputs carry the exact scale and
zero point the .tflite gives them (edgebuild.quant.simulate). Weights are re-quantized with the scheme's rule
(per channel or per tensor).

Int8 rounding and clipping of a conv's input (and rounding of its weights) change what the conv computes; the
error propagates and adds up downstream. For each int8 conv, on the first `calibration.correction_images`
calibration images, the conv's quantized input X~ (from the QDQ model, every upstream conv already corrected) is
compared with the float model's conv output Y:

- `bias`: the per-channel mean of the QDQ conv output is made equal to float's by shifting the float bias
  (Nagel et al. 2019, "Data-Free Quantization", section 4.2, the empirical variant; OpenVINO and AIMET ship it).
- `weights`: weights and bias are re-fitted by least squares, W' = argmin |Y - W' X~|^2 + lam |W' - W|^2
  (ridge toward the float weights, lam = 1 % of X~'s mean energy), then re-quantized per channel (symmetric
  int8, scale = max|W'| / 127): the closed-form, linear relative of AdaQuant (Hubara et al. 2021). It undoes the
  correlated part of the input error, not only its mean.

Corrections must be sequential: correcting all convs from one pass double-counts the upstream share and *lost*
2.7 pt on shapes-hard det (bias, 0.739 -> 0.712). Convs are processed by depth (the longest chain of int8 convs
above them), so one partial forward pass per depth and image serves every conv of that depth, and that pass runs
only the nodes between the previous depth's convs and this one's (_QdqInputs).

Only weights, weight scales and float biases change; the graph and the activation scales stay as calibrated, so
the engine runs the same kernels. The implicit-INT8 path (float ONNX + calibration.cache) cannot carry this.
The network-level `finetune` kind is edgebuild.quant.finetune (it shares `store_int8` and `require_images`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnx.utils
from numpy.lib.stride_tricks import sliding_window_view

from edgebuild.errors import EdgebuildError
from edgebuild.quant.scheme import TENSORRT, Scheme

KINDS = ("none", "bias", "weights")
TARGET_CACHE_BYTES = 192 << 20  # float conv outputs held at once (YOLOv8n 320: 13.6 MiB per image for all convs)
RIDGE = 0.01  # lam relative to the mean diagonal of X~ X~^T (0.001 / 0.01 / 0.1 measured: docs/tensorrt.md)


def session(model: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle ORT threads would starve numpy
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _im2col(x: np.ndarray, kernel: tuple[int, int], attrs: dict) -> np.ndarray:
    """(1, C, H, W) conv input -> (C*kh*kw, Ho*Wo) columns, in the order of weight.reshape(Cout, -1)."""
    pads, strides = attrs.get("pads", [0, 0, 0, 0]), attrs.get("strides", [1, 1])
    xp = np.pad(x[0], ((0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    win = sliding_window_view(xp, kernel, axis=(1, 2))[:, ::strides[0], ::strides[1]]
    c, ho, wo = win.shape[:3]
    return win.transpose(0, 3, 4, 1, 2).reshape(c * kernel[0] * kernel[1], ho * wo)


class _Conv:
    """One int8 conv of the QDQ model: its float weights, int8 weight/scale/bias initializers and statistics."""

    def __init__(self, node: onnx.NodeProto, weights: np.ndarray, inits: dict, producers: dict):
        self.node, self.shape = node, weights.shape
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        dq = producers[node.input[1]]
        self.w_q, self.w_scale, self.bias = inits[dq.input[0]], inits[dq.input[1]], inits[node.input[2]]
        w = weights.reshape(self.shape[0], -1).astype(np.float64)
        self.float_w = np.hstack([w, onnx.numpy_helper.to_array(self.bias)[:, None].astype(np.float64)])
        self.xx = self.yx = None  # sum X~a X~a^T and sum Y X~a^T (X~a = X~ with a row of ones), while measured

    def supported(self) -> bool:
        a = self.attrs
        return (len(self.shape) == 4 and a.get("group", 1) == 1 and list(a.get("dilations", [1, 1])) == [1, 1]
                and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))  # explicit pads, as torch exports

    def add(self, xq: np.ndarray, y: np.ndarray, full: bool) -> None:
        cols = _im2col(xq, self.shape[2:], self.attrs)
        cols = np.vstack([cols, np.ones((1, cols.shape[1]), np.float32)])
        y = y.reshape(self.shape[0], -1)
        if self.xx is None:
            d = self.float_w.shape[1]
            self.xx, self.yx = np.zeros((d, d)), np.zeros((self.shape[0], d))
        if full:  # float32 products for one image (sgemm), float64 sums across images
            self.xx += cols @ cols.T
            self.yx += y @ cols.T
        else:  # bias only needs the sums: the last column of each
            self.xx[:, -1] += cols.sum(axis=1, dtype=np.float64)
            self.yx[:, -1] += y.sum(axis=1, dtype=np.float64)

    def current(self) -> np.ndarray:
        """[dequantized int8 weights | float bias] as the QDQ model holds them now."""
        w = onnx.numpy_helper.to_array(self.w_q).astype(np.float64)
        scale = onnx.numpy_helper.to_array(self.w_scale).astype(np.float64)
        w = w.reshape(self.shape[0], -1) * scale.reshape(-1, 1)  # [Cout, 1] per channel, [1, 1] per tensor
        return np.hstack([w, onnx.numpy_helper.to_array(self.bias)[:, None].astype(np.float64)])

    def solve(self, kind: str, scheme: Scheme) -> float:
        """Apply the correction to the initializers; returns the largest bias change."""
        old = self.current()
        if kind == "bias":  # mean of the QDQ output = W_q mean(X~) + b; match float's
            new = old.copy()
            new[:, -1] += (self.yx[:, -1] - old @ self.xx[:, -1]) / self.xx[-1, -1]
        else:
            d = self.xx.shape[0] - 1
            lam = RIDGE * np.trace(self.xx[:d, :d]) / d
            reg = lam * np.eye(d + 1)
            new = np.linalg.solve(self.xx + reg, (self.yx + self.float_w @ reg).T).T
        store_int8(self.w_q, self.w_scale, self.bias, new[:, :-1].reshape(self.shape) if kind == "weights" else None,
                   new[:, -1], scheme)
        self.xx = self.yx = None
        return float(np.abs(new[:, -1] - old[:, -1]).max())


def take_images(stream, wanted: int) -> list[np.ndarray]:
    """The first `wanted` calibration images (held in memory: the corrections revisit them)."""
    from itertools import islice

    images = list(islice(stream, wanted))
    if len(images) < wanted:
        raise EdgebuildError("calibration.correction_images", f"is {wanted} but the calibration set has only "
                             f"{len(images)} images.", f"use calibration.correction_images={len(images)} or fewer, "
                             "or calibrate on more images.")
    return images


def require_images(images: Sequence[np.ndarray]) -> None:
    if not images:
        raise EdgebuildError("calibration.correction_images", "no calibration image is left for the correction.",
                             "set calibration.correction=none, or calibrate on more images.")


def store_int8(w_q: onnx.TensorProto, w_scale: onnx.TensorProto, bias: onnx.TensorProto, weights, b,
               scheme: Scheme = TENSORRT) -> None:
    """Write float `weights` (None: keep the int8 ones) re-quantized with the scheme's weight rule (symmetric int8,
    scale = max|w| / 127 per output channel or per tensor) and the float bias `b` into a QDQ conv's initializers."""
    if weights is not None:
        q, scale = scheme.quantize_weights(weights)
        shape = onnx.numpy_helper.to_array(w_scale).shape  # () for a per-tensor scale
        w_q.CopyFrom(onnx.numpy_helper.from_array(q, w_q.name))
        w_scale.CopyFrom(onnx.numpy_helper.from_array(scale.astype(np.float32).reshape(shape), w_scale.name))
    bias.CopyFrom(onnx.numpy_helper.from_array(np.asarray(b, np.float32), bias.name))


def _depths(model: onnx.ModelProto, convs: set[str]) -> tuple[dict[str, int], list[int]]:
    """(conv name -> 1 + the longest chain of `convs` above it, per node in graph order: the deepest such conv at or
    above it). Nodes are told apart by position: exported graphs may leave names empty."""
    producer = {o: k for k, n in enumerate(model.graph.node) for o in n.output}
    above: list[int] = []
    depth = {}
    for n in model.graph.node:  # topological order
        up = max((above[producer[i]] for i in n.input if i in producer), default=0)
        if n.name in convs:
            depth[n.name] = up + 1
        above.append(depth.get(n.name, up))
    return depth, above


class _QdqInputs:
    """The QDQ model's conv inputs, level by level, without re-running the graph from the image each time.

    A tensor's value is final once every conv at or above it is corrected (`above` <= the levels done). Level k's
    conv inputs are computed by the nodes with `above` == k alone, fed from the final tensors kept per image (those
    a later level still reads): the whole model runs about once per image instead of once per level."""

    def __init__(self, model: onnx.ModelProto, graph_input: str, above: list[int], images: Sequence[np.ndarray]):
        self.model, self.producer, self.last_read = model, {}, {}
        self.level_of = {graph_input: -1}  # every tensor that depends on the image (the only ones kept per image)
        for n, lv in zip(model.graph.node, above):  # topological order
            if any(i in self.level_of for i in n.input):
                for i in n.input:
                    if i in self.level_of:
                        self.last_read[i] = max(self.last_read.get(i, -1), lv)
                self.level_of.update({o: lv for o in n.output if o})
                self.producer.update({o: n for o in n.output if o})
        self.values = [{graph_input: x} for x in images]

    def level(self, k: int, wanted: list[str]) -> list[dict[str, np.ndarray]]:
        """Per image, {tensor: value} of `wanted` (tensors at `above` <= k), once levels < k are corrected."""
        outs = list(dict.fromkeys([t for t in wanted if t not in self.values[0]] + [
            t for t, lv in self.level_of.items() if lv == k and self.last_read.get(t, -1) > k]))
        feeds, stack, seen = set(), list(outs), set()
        while stack:  # back from outs through this level's nodes to the kept tensors that feed them
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if self.level_of.get(t) == k and t in self.producer:
                stack.extend(i for i in self.producer[t].input if i in self.level_of)
            elif t in self.level_of:
                feeds.add(t)
        if outs:
            sess = session(onnx.utils.Extractor(self.model).extract_model(sorted(feeds), outs))
            for v in self.values:
                v.update(zip(outs, sess.run(outs, {f: v[f] for f in feeds})))
        got = [{t: v[t] for t in wanted} for v in self.values]
        for v in self.values:  # nothing after level k reads these
            for t in [t for t in v if self.last_read.get(t, -1) <= k and t not in wanted]:
                del v[t]
        return got


class _FloatTargets:
    """The corrected convs' float outputs, level by level. The float model does not change, so one float pass per
    image serves a whole chunk of consecutive depth levels; chunks hold at most TARGET_CACHE_BYTES (a level larger
    than that is a chunk of its own)."""

    def __init__(self, float_model: onnx.ModelProto, inputs: list[str], levels: list[list[str]],
                 images: Sequence[np.ndarray]):
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in float_model.graph.value_info}
        self.model, self.input, self.images, self.levels = float_model, inputs, images, levels
        self.chunk_of, self.chunks, size = {}, [[]], 0
        for k, outs in enumerate(levels):
            level_bytes = len(images) * sum(4 * int(np.prod(shapes.get(o, [1 << 20]))) for o in outs)
            if self.chunks[-1] and size + level_bytes > TARGET_CACHE_BYTES:
                self.chunks.append([])
                size = 0
            self.chunks[-1].append(k)
            self.chunk_of[k] = len(self.chunks) - 1
            size += level_bytes
        self.loaded, self.values = -1, []

    def level(self, k: int) -> list[list[np.ndarray]]:
        """Per image, the float outputs of level k's convs (in the order given)."""
        if self.chunk_of[k] != self.loaded:
            self.values = []  # drop the previous chunk first
            self.loaded = self.chunk_of[k]
            outs = [o for j in self.chunks[self.loaded] for o in self.levels[j]]
            sess = session(onnx.utils.Extractor(self.model).extract_model(self.input, outs))
            self.values = [dict(zip(outs, sess.run(outs, {self.input[0]: x}))) for x in self.images]
        return [[v[o] for o in self.levels[k]] for v in self.values]


def correct(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, convs: list[str], images: Sequence[np.ndarray],
            kind: str, progress: Callable[[int, int], None] | None = None, scheme: Scheme = TENSORRT) -> dict:
    """Correct, in place, the int8 `convs` (node names) of `qdq_model`; returns a summary for meta.json."""
    if kind not in KINDS[1:]:
        raise EdgebuildError("calibration.correction", f"{kind!r} is not a correction.", "use bias or weights.")
    require_images(images)
    qdq_model.CopyFrom(onnx.shape_inference.infer_shapes(qdq_model))  # the extractor needs the tensors' types
    float_model = onnx.shape_inference.infer_shapes(float_model)
    inits = {i.name: i for i in qdq_model.graph.initializer}
    producers = {o: n for n in qdq_model.graph.node for o in n.output}
    float_nodes = {n.name: n for n in float_model.graph.node}
    float_inits = {i.name: i for i in float_model.graph.initializer}
    todo, skipped, wanted = {}, [], set(convs)
    for n in qdq_model.graph.node:
        if n.name not in wanted:
            continue
        f = float_nodes.get(n.name)
        if f is None or len(n.input) < 3 or not n.input[2] or n.input[1] not in producers:
            skipped.append(n.name)
            continue
        c = _Conv(n, onnx.numpy_helper.to_array(float_inits[f.input[1]]), inits, producers)
        if c.supported():
            todo[n.name] = (c, f.output[0])
        else:
            skipped.append(n.name)
    depth, above = _depths(qdq_model, set(todo))
    inputs = [i.name for i in qdq_model.graph.input if i.name not in inits]
    groups = [[todo[name] for name in todo if depth[name] == level] for level in sorted(set(depth.values()))]
    targets = _FloatTargets(float_model, inputs, [[f for _, f in group] for group in groups], images)
    q_inputs = _QdqInputs(qdq_model, inputs[0], above, images)
    shifts, done = {}, 0
    for k, group in enumerate(groups):
        q_out = list(dict.fromkeys(c.node.input[0] for c, _ in group))
        for xq, ys in zip(q_inputs.level(k, q_out), targets.level(k)):
            for (c, _), y in zip(group, ys):
                c.add(xq[c.node.input[0]], y, kind == "weights")
        for c, _ in group:
            shifts[c.node.name] = c.solve(kind, scheme)
            done += 1
            if progress:
                progress(done, len(todo))
    worst = sorted(shifts, key=shifts.get, reverse=True)[:5]
    return {"kind": kind, "images": len(images), "convs": len(shifts), "skipped": skipped,
            "largest_bias_change": {name: round(shifts[name], 5) for name in worst}}
