"""Accept an existing YOLO ONNX (model.weights=*.onnx, model.onnx_layout declared): check it, describe it.

`inspect_onnx(path, task, layout, imgsz) -> (names, strides, nm)` raises a clear EdgebuildError when the graph is not
a YOLO graph of that layout, task and input size. The step then copies the file unchanged as model.onnx.
Class names come from edgebuild's own metadata (an earlier edgebuild export) or Ultralytics' `names` metadata;
without either they are class0..class{C-1}.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from edgebuild.errors import EdgebuildError
from edgebuild.export.meta import META_KEY, NM, output_specs

DEFAULT_STRIDES = [8, 16, 32]


def inspect_onnx(path: Path, task: str, layout: str, imgsz: int) -> tuple[list[str], list[int], int]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a non-ONNX file
        raise EdgebuildError("model.weights", f"{path} is not a readable ONNX model ({type(e).__name__}).",
                             "point model.weights at a .onnx written by `yolo export format=onnx` or by edgebuild."
                             ) from None
    props = {p.key: p.value for p in model.metadata_props}
    own = json.loads(props[META_KEY]) if META_KEY in props else None
    if own and own.get("layout") != layout:
        raise EdgebuildError("model.onnx_layout", f"is {layout} but {path.name} was exported by edgebuild with "
                             f"layout {own.get('layout')}.", f"set model.onnx_layout={own.get('layout')} and "
                             f"decoder.layout={own.get('layout')}.")
    init = {i.name for i in model.graph.initializer}
    inputs = [(i.name, _dims(i)) for i in model.graph.input if i.name not in init]
    outputs = [(o.name, _dims(o)) for o in model.graph.output]
    if len(inputs) != 1 or len(inputs[0][1]) != 4 or inputs[0][1][:2] != [1, 3]:
        raise _not_yolo(path, layout, inputs, outputs)
    h, w = inputs[0][1][2:]
    if h != w or h != imgsz:
        raise EdgebuildError("model.imgsz", f"is {imgsz} but {path.name} has a fixed input of {h}x{w}.",
                             f"set model.imgsz={h}" + ("" if h == w else " (only square inputs are supported)") +
                             ", or re-export the ONNX at the wanted size with a static shape.")
    strides = [int(s) for s in own["strides"]] if own else DEFAULT_STRIDES
    file_task = _task_of(outputs, layout)
    if file_task is None:
        raise _not_yolo(path, layout, inputs, outputs)
    if file_task != task:
        raise EdgebuildError("model.task", f"is {task} but {path.name} is a {file_task} graph "
                             f"({len(outputs)} outputs).", f"set model.task={file_task}, or use a {task} model.")
    nc = _nc(outputs, layout, task)
    names = _names(own, props, nc)
    expected = [(o["name"] if layout != "fused" else n, o["shape"])
                for o, (n, _) in zip(output_specs(task, layout, imgsz, nc, strides), outputs)]
    if [(n, s) for n, s in outputs] != expected:
        raise _not_yolo(path, layout, inputs, outputs, expected)
    return names, strides, NM


def _dims(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def _task_of(outputs, layout: str) -> str | None:
    if layout == "fused":
        return {1: "detect", 2: "segment"}.get(len(outputs))
    names = [n for n, _ in outputs]
    return {("boxes", "scores"): "detect",
            ("boxes", "scores", "mask_coefs", "protos"): "segment"}.get(tuple(names))


def _nc(outputs, layout: str, task: str) -> int:
    dims = outputs[0][1] if layout == "fused" else outputs[1][1]
    c = dims[1] if layout == "fused" and len(dims) == 3 else (dims[2] if len(dims) == 3 else 0)
    if not isinstance(c, int):
        return 0
    return c - 4 - (NM if task == "segment" else 0) if layout == "fused" else c


def _names(own: dict | None, props: dict, nc: int) -> list[str]:
    if own and len(own.get("names", [])) == nc:
        return [str(n) for n in own["names"]]
    try:
        raw = ast.literal_eval(props.get("names", "{}"))  # Ultralytics writes str(dict)
    except (ValueError, SyntaxError):
        raw = {}
    if isinstance(raw, list):
        raw = dict(enumerate(raw))
    return [str(raw.get(i, f"class{i}")) if isinstance(raw, dict) else f"class{i}" for i in range(nc)]


def _not_yolo(path: Path, layout: str, inputs, outputs, expected=None) -> EdgebuildError:
    want = (f" (expected outputs {expected})" if expected else "")
    how = ("one output [1,4+C(+32),N] (+ protos [1,32,H,W] for segment), as `yolo export format=onnx` writes"
           if layout == "fused" else "outputs named boxes [1,N,4], scores [1,N,C] (+ mask_coefs, protos)")
    return EdgebuildError("model.weights", f"{path.name} does not look like a static-shape YOLO graph with layout "
                          f"{layout}: inputs {inputs}, outputs {outputs}{want}.",
                          f"a {layout} graph has input images [1,3,S,S] and {how}; set model.onnx_layout to the "
                          "layout the file has, export it without dynamic axes, or give the .pt checkpoint instead.")
