"""Thin runners with one contract: `load_runner(path, meta).predict(x) -> {role: float32 array}`.

`x` is the preprocessed float batch [1, 3, H, W] in [0, 1] (edgebuild.data.preprocess, NCHW); a runner
converts it to what its model takes (NHWC, quantized uint8/int8) and returns every output dequantized
with its own scale/zero point, keyed by the role meta.json gives it ("boxes", "scores", "fused", ...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from edgebuild.errors import EdgebuildError


class Runner(Protocol):
    kind: str      # "onnxruntime" | "litert" | "tensorrt"
    threads: int

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]: ...


def load_runner(path: Path | str, meta: dict, threads: int = 1, delegate: str | Path | None = None,
                delegate_options: dict | None = None) -> Runner:
    """The runner for a model file, chosen by its suffix (.onnx, .tflite, .engine/.plan).
    `delegate`: an external TFLite delegate library (NPU) with its options; TFLite models only."""
    path = Path(path)
    if not path.is_file():
        raise EdgebuildError(str(path), "model file not found.", "rebuild the step that produces it.")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from edgebuild.runtime.onnx import OnnxRunner

        return OnnxRunner(path, meta, threads)
    if suffix == ".tflite":
        from edgebuild.runtime.litert import LiteRTRunner

        return LiteRTRunner(path, meta, threads, delegate, delegate_options)
    if delegate:
        raise EdgebuildError("--delegate", f"delegates apply to .tflite models, not {suffix!r}.",
                             "leave --delegate out for this model.")
    if suffix in (".engine", ".plan"):
        from edgebuild.runtime.tensorrt import TensorRTRunner

        return TensorRTRunner(path, meta)
    raise EdgebuildError(str(path), f"no runtime for {suffix!r} models.", "use a .onnx, .tflite or .engine file.")


def output_roles(meta: dict) -> dict[str, str]:
    """{output tensor/signature name: role} from meta.json (export's outputs, plus the tflite step's
    signature names under meta["tflite"]["outputs"] when present)."""
    roles = {o["name"]: o.get("role", o["name"]) for o in meta.get("outputs", [])}
    for o in (meta.get("tflite") or {}).get("outputs", []):
        roles.setdefault(o["name"], o.get("role", o["name"]))
    return roles


def map_roles(named: dict[str, np.ndarray], meta: dict, where: str) -> dict[str, np.ndarray]:
    """Key runtime outputs (by tensor/signature name) by their meta role; never by position.

    Names are matched exactly, then without a ':0'-style suffix. An output whose name is not in meta
    is matched by shape only when exactly one meta output has that shape (NCHW/NHWC-agnostic)."""
    roles = output_roles(meta)
    out: dict[str, np.ndarray] = {}
    unmatched = {}
    for name, arr in named.items():
        base = name.split(":")[0]
        role = roles.get(name) or roles.get(base)
        if role is None:
            unmatched[name] = arr
        else:
            out[role] = arr
    for name, arr in unmatched.items():
        cands = [o for o in meta.get("outputs", []) if o.get("role", o["name"]) not in out and "shape" in o
                 and sorted(o["shape"]) == sorted(arr.shape)]
        if len(cands) != 1:
            raise EdgebuildError(where, f"output {name!r} {list(arr.shape)} matches no single output in meta.json "
                                 f"({sorted(roles)}).",
                                 "rebuild the model so its output names match meta.json (export writes both).")
        out[cands[0].get("role", cands[0]["name"])] = arr
    missing = set(roles.values()) - set(out)
    if missing:
        raise EdgebuildError(where, f"the model has no output for role(s) {sorted(missing)}.",
                             "rebuild the model from the same export (meta.json and model out of sync).")
    return out
