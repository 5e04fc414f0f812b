"""The export meta.json (docs/CONTRACTS.md), built from what the export knows; no heavy imports."""
from __future__ import annotations

import json
from typing import Any

from edgebuild.layout import REG_MAX, num_anchors

META_KEY = "edgebuild"      # ONNX metadata_props key holding the same JSON
# model.input: the graph input is raw bytes / 255 in `order`; the graph itself applies (pixel - mean) / std
DEFAULT_NORMALIZATION = {"order": "rgb", "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}


def is_default_normalization(norm: dict) -> bool:
    return [float(v) for v in norm["mean"]] == DEFAULT_NORMALIZATION["mean"] and \
        [float(v) for v in norm["std"]] == DEFAULT_NORMALIZATION["std"]
NM = 32                     # mask coefficients / prototypes of Ultralytics' Segment head


def output_specs(task: str, layout: str, imgsz: int, nc: int, strides: list[int], nm: int = NM) -> list[dict]:
    """[{name, role, shape}] in graph output order."""
    n, p = num_anchors(imgsz, strides), imgsz // 4
    if layout == "fused":
        specs = [{"name": "output0", "role": "fused", "shape": [1, 4 + nc + (nm if task == "segment" else 0), n]}]
        if task == "segment":
            specs.append({"name": "output1", "role": "protos", "shape": [1, nm, p, p]})
        return specs
    specs = [{"name": "boxes", "role": "boxes", "shape": [1, n, 4 * REG_MAX if layout == "split_dfl" else 4]},
             {"name": "scores", "role": "scores", "shape": [1, n, nc]}]
    if task == "segment":
        specs += [{"name": "mask_coefs", "role": "mask_coefs", "shape": [1, n, nm]},
                  {"name": "protos", "role": "protos", "shape": [1, p, p, nm]}]
    return specs


def build_meta(*, task: str, layout: str, imgsz: int, names: list[str], strides: list[int],
               source_name: str, source_sha256: str, nm: int = NM,
               normalization: dict | None = None) -> dict[str, Any]:
    norm = normalization or DEFAULT_NORMALIZATION
    return {
        "task": task,
        "layout": layout,
        "imgsz": int(imgsz),
        "nc": len(names),
        "names": list(names),
        "strides": [int(s) for s in strides],
        **({"reg_max": REG_MAX} if layout == "split_dfl" else {}),
        "normalized": layout == "split",
        "input": {"name": "images", "shape": [1, 3, int(imgsz), int(imgsz)], "layout": "NCHW",
                  "dtype": "float32", "range": [0, 1], "order": norm["order"],
                  "mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]]},
        "outputs": output_specs(task, layout, int(imgsz), len(names), list(strides), nm),
        "source": {"weights": source_name, "sha256": source_sha256},
    }


def dumps(meta: dict) -> str:
    """The one serialization, used for meta.json and the ONNX metadata_props (byte-identical)."""
    return json.dumps(meta, indent=2, sort_keys=False) + "\n"
