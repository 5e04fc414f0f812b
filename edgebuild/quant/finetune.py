"""`calibration.correction: finetune`: the int8 convs' weights trained so the QDQ model reproduces the float model.

The per-conv corrections (edgebuild.quant.correction) fit each conv to its own float output; they cannot give
back what an activation quantizer clipped, which is where entropy calibration loses its accuracy (docs/tensorrt.md).
Here the objective is the whole network's output: the float ONNX runs in torch (onnx2torch) with every int8 conv's
input fake-quantized at the scale and zero point the QDQ model holds (frozen: calibration's ranges are kept; zero
point 0 for TensorRT, the .tflite's own for TFLite) and its weights fake-quantized with the scheme's rule (per output
channel or per tensor, scale = max|W| / 127, re-derived every step; the rounding passes gradients straight through).
Adam trains those convs' weights and biases for `calibration.correction_steps` steps (batches of BATCH of the first
`calibration.correction_images` calibration images, cosine-decayed learning rate) to minimise the mean squared error
of every model output against the float model's, each divided by that output's variance.
No labels: the float model is the teacher (post-training distillation with frozen activation scales, the
network-level relative of AdaQuant / BRECQ). Weights and biases are then written back, re-quantized as in the
`weights` correction; the graph and the activation scales are untouched, so the target runs the same kernels.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx

from edgebuild.errors import EdgebuildError
from edgebuild.quant.scheme import TENSORRT, Scheme

BATCH = 8
# Adam on weights of ~0.01-0.1: a step moves a weight far less than one int8 step. On the worst calibration draw
# 1e-5 / 2e-5 / 4e-5 gave -1.05 / -0.90 / -0.88 pt (docs/tensorrt.md).
LEARNING_RATE = 2e-5


def _batchable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose Reshapes take any batch: the export fixes batch 1 in their shape constants, so each becomes
    [-1, <the statically inferred rest>]."""
    model = onnx.shape_inference.infer_shapes(model)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(model.graph.value_info) + list(model.graph.output)}
    for i, n in enumerate(model.graph.node):
        if n.op_type != "Reshape":
            continue
        shape = dims.get(n.output[0])
        if not shape or 0 in shape or shape[0] != 1:
            raise EdgebuildError("calibration.correction", f"Reshape {n.name!r} has no static batch-1 output shape, "
                                 "so the model cannot be fine-tuned in batches.",
                                 "use calibration.correction=weights for this model.")
        name = f"{n.name}/edgebuild_batch_shape_{i}"  # indexed: unnamed nodes must not share one initializer
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1, *shape[1:]], np.int64), name))
        n.input[1] = name
    return model


def _torch_model(float_model: onnx.ModelProto, convs: Sequence[str]):
    """(torch GraphModule of the float model, {conv node name: its torch Conv2d})."""
    import onnx2torch

    model = _batchable(float_model)
    wanted, alias = set(convs), {}
    for i, n in enumerate(model.graph.node):  # onnx2torch derives module names from node names: make them plain
        if n.name in wanted:
            alias[n.name] = n.name = f"edgebuild_conv_{i}"
    module = onnx2torch.convert(model)
    return module, {name: module.get_submodule(a) for name, a in alias.items()}


def _quantize_conv(conv, act_scale: float, act_zero_point: int, per_channel: bool) -> None:
    """Fake-quantize the conv's input (int8, frozen scale and zero point) and weights (int8 per channel or per
    tensor, STE) on every call."""
    import torch

    weight = torch.nn.Parameter(conv.weight.detach().clone())
    del conv._parameters["weight"]
    conv.edgebuild_weight = weight

    def hook(mod, args):
        w = mod.edgebuild_weight
        amax = w.detach().abs().amax(dim=tuple(range(1, w.dim()))) if per_channel else \
            w.detach().abs().amax().expand(w.shape[0])
        scale = (amax / 127).clamp_min(1e-12)
        mod.weight = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32),
                                                            0, -127, 127)
        return (torch.fake_quantize_per_tensor_affine(args[0], act_scale, act_zero_point, -128, 127),)

    conv.register_forward_pre_hook(hook)


def _targets(float_model: onnx.ModelProto, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The float model's outputs in onnxruntime (the reference the validate step scores), stacked per output."""
    from edgebuild.quant.correction import session

    sess = session(float_model)
    name = sess.get_inputs()[0].name
    runs = [sess.run(None, {name: x}) for x in images]
    return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))]


def finetune(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, convs: list[str],
             images: Sequence[np.ndarray], steps: int, progress: Callable[[int, int], None] | None = None,
             scheme: Scheme = TENSORRT) -> dict:
    """Train, in place, the int8 `convs` (node names) of `qdq_model`; returns a summary for meta.json."""
    import torch

    from edgebuild.quant.correction import require_images, store_int8

    require_images(images)
    inits = {i.name: i for i in qdq_model.graph.initializer}
    producers = {o: n for n in qdq_model.graph.node for o in n.output}
    wanted = set(convs)
    nodes = {n.name: n for n in qdq_model.graph.node if n.name in wanted and len(n.input) > 2 and n.input[2]
             and n.input[0] in producers and n.input[1] in producers}  # int8 input and weights, float bias
    skipped = [c for c in convs if c not in nodes]
    module, torch_convs = _torch_model(float_model, list(nodes))
    x = torch.from_numpy(np.concatenate(images))
    targets = [torch.from_numpy(t) for t in _targets(float_model, images)]
    with torch.no_grad():  # onnx2torch must reproduce the ONNX model before anything is trained on it
        got = module(x[:2])
        got = got if isinstance(got, (tuple, list)) else [got]
        worst = max(float((g - t[:2]).abs().max() / t.abs().max().clamp_min(1e-6)) for g, t in zip(got, targets))
    if worst > 1e-3:
        raise EdgebuildError("calibration.correction", f"the torch copy of the model differs from onnxruntime "
                             f"(relative error {worst:.2g}), so it cannot be fine-tuned.",
                             "use calibration.correction=weights for this model.")
    for name, conv in torch_convs.items():
        dq = producers[nodes[name].input[0]]  # the activation's DequantizeLinear: (x, scale, zero point)
        zero_point = int(onnx.numpy_helper.to_array(inits[dq.input[2]])) if len(dq.input) > 2 and dq.input[2] else 0
        _quantize_conv(conv, float(onnx.numpy_helper.to_array(inits[dq.input[1]])), zero_point, scheme.per_channel)
    for p in module.parameters():
        p.requires_grad_(False)
    params = [c.edgebuild_weight for c in torch_convs.values()] + [c.bias for c in torch_convs.values()]
    for p in params:
        p.requires_grad_(True)
    order = torch.Generator().manual_seed(0)  # the batches, so a build is reproducible
    opt = torch.optim.Adam(params, lr=LEARNING_RATE)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    variance = [t.var().clamp_min(1e-12) for t in targets]
    losses = []
    for i in range(steps):
        idx = torch.randint(0, len(x), (min(BATCH, len(x)),), generator=order)
        out = module(x[idx])
        out = out if isinstance(out, (tuple, list)) else [out]
        loss = sum(((o - t[idx]) ** 2).mean() / v for o, t, v in zip(out, targets, variance))
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
        losses.append(loss.item())
        if progress:
            progress(i + 1, steps)
    for name, conv in torch_convs.items():
        node = nodes[name]
        dq = producers[node.input[1]]
        store_int8(inits[dq.input[0]], inits[dq.input[1]], inits[node.input[2]],
                   conv.edgebuild_weight.detach().numpy(), conv.bias.detach().numpy(), scheme)
    window = max(1, min(50, steps // 4))
    return {"kind": "finetune", "images": len(images), "convs": len(torch_convs), "skipped": skipped, "steps": steps,
            "loss_first": round(float(np.mean(losses[:window])), 5),
            "loss_last": round(float(np.mean(losses[-window:])), 5)}
