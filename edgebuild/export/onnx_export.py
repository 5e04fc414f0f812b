"""Trace a prepared Ultralytics model to a deterministic, simplified, checked ONNX file.

`export_onnx(loaded, layout, imgsz, opset, meta, out)`: fixed input `images` [1,3,imgsz,imgsz] float [0,1] RGB,
TorchScript-based exporter (`dynamo=False`, as Ultralytics), onnxslim, onnx.checker, meta JSON in metadata_props.
Determinism: no timestamps, fixed producer fields, IR version pinned, so two exports give identical bytes.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

from edgebuild.errors import EdgebuildError
from edgebuild.export.heads import install_head
from edgebuild.export.load import LoadedModel
from edgebuild.export.meta import META_KEY, dumps, is_default_normalization

MAX_IR_VERSION = 10   # onnxruntime / onnx2tf / TensorRT 8-10 compatibility (Ultralytics pins the same)


def export_onnx(loaded: LoadedModel, layout: str, imgsz: int, opset: int, meta: dict, out: Path,
                normalization: dict | None = None) -> None:
    import onnx
    import onnxslim
    import torch

    if normalization is not None and not is_default_normalization(normalization):
        fold_normalization(loaded.model, normalization["mean"], normalization["std"])
    names = install_head(loaded, layout, imgsz)
    im = torch.zeros(1, 3, imgsz, imgsz)
    with torch.no_grad():
        y = loaded.model(im)  # dry run: shapes must match the meta we promise
        got = [list(t.shape) for t in (y if isinstance(y, (tuple, list)) else [y])]
    want = [o["shape"] for o in meta["outputs"]]
    if got != want:  # a head variant we do not know; better to stop than to write a wrong meta.json
        raise EdgebuildError("model.weights", f"the model's {layout} outputs have shapes {got}, expected {want}.",
                             "use a standard YOLOv8/YOLO11 detect or segment checkpoint.")
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deliberate (dynamo=False)
        torch.onnx.export(loaded.model, (im,), buf, opset_version=int(opset), input_names=["images"],
                          output_names=names, dynamic_axes=None, do_constant_folding=True, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    model = onnxslim.slim(model)
    model.producer_name, model.producer_version = "edgebuild", _version()
    model.doc_string = ""
    model.graph.doc_string = ""
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, dumps(meta)
    onnx.checker.check_model(model, full_check=True)
    _check_io(model, meta)
    out.write_bytes(model.SerializeToString(deterministic=True))


def fold_normalization(model, mean: list[float], std: list[float]) -> None:
    """The network expects (pixel - mean) / std; the graph input is pixel / 255 (raw bytes on the board). The scale
    255 / std goes into the first conv's weights (exact: zero padding stays zero) and the shift mean / 255 becomes
    one Sub in front of it (per channel, so the padding stays in the normalized space, as in training)."""
    import types

    import torch

    first = model.model[0]
    conv = getattr(first, "conv", None)
    if not isinstance(conv, torch.nn.Conv2d) or conv.in_channels != 3 or conv.groups != 1:
        raise EdgebuildError("model.input", f"the model's first layer is {type(first).__name__}, not a 3-channel "
                             "conv; edgebuild folds the input normalization into that conv.",
                             "keep the default normalization (mean [0,0,0], std [255,255,255]) for this model.")
    with torch.no_grad():
        conv.weight.mul_(torch.tensor([255.0 / s for s in std], dtype=conv.weight.dtype).view(1, 3, 1, 1))
    if any(mean):
        shift = torch.tensor([m / 255.0 for m in mean], dtype=torch.float32).view(1, 3, 1, 1)
        inner = first.forward

        def forward(self, x):
            return inner(x - shift)

        first.forward = types.MethodType(forward, first)


def _check_io(model, meta: dict) -> None:
    """The written graph has exactly the input and outputs meta.json declares."""
    def dims(vi):
        return [d.dim_value for d in vi.type.tensor_type.shape.dim]

    got = [(o.name, dims(o)) for o in model.graph.output]
    want = [(o["name"], o["shape"]) for o in meta["outputs"]]
    ins = [(i.name, dims(i)) for i in model.graph.input]
    if got != want or ins != [("images", meta["input"]["shape"])]:
        raise RuntimeError(f"exported graph I/O {ins} -> {got} does not match meta.json {want}")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgebuild")
    except PackageNotFoundError:
        return "0"
