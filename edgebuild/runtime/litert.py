"""LiteRT (ai_edge_litert) interpreter runner for INT8, fp16 and float TFLite models.

The float NCHW batch is transposed to the model's layout and quantized with the input tensor's own
scale/zero point (uint8 with scale 1/255, zero point 0 means the board feeds raw pixels). Each output is
dequantized with its own scale/zero point and keyed by its signature output name -> meta role.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebuild.errors import EdgebuildError
from edgebuild.runtime import map_roles


def quantize(x: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if not scale:  # float tensor
        return np.asarray(q, dtype=np.float32)
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


class LiteRTRunner:
    kind = "litert"

    def __init__(self, path: Path, meta: dict, threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise EdgebuildError("target.backend", "ai_edge_litert is not installed, so TFLite models cannot be run.",
                                 "pip install 'edgebuild[tflite]'.") from None
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.meta, self.threads, self.where = meta, threads, str(path)
        sigs = self.interpreter.get_signature_list()
        if sigs:
            key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
            self.runner = self.interpreter.get_signature_runner(key)
            ins = self.runner.get_input_details()
            self.input_name, self.input = next(iter(ins.items()))
            self.outputs = self.runner.get_output_details()      # {signature name: detail}
        else:  # a model without signatures: tensor names
            self.runner = None
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.input_name = self.input["name"]
            self.outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        shape = list(self.input["shape"])
        self.nhwc = len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)

    @property
    def input_quantization(self) -> tuple[str, float, int]:
        scale, zp = self.input["quantization"]
        return np.dtype(self.input["dtype"]).name, float(scale), int(zp)

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.nhwc and x.ndim == 4 and x.shape[1] in (1, 3):
            x = x.transpose(0, 2, 3, 1)
        dtype = np.dtype(self.input["dtype"])
        if np.issubdtype(dtype, np.integer):
            scale, zp = self.input["quantization"]
            return quantize(x, dtype, scale, zp)
        return np.ascontiguousarray(x.astype(dtype))

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        q = self._prepare(x)
        if self.runner is not None:
            raw = self.runner(**{self.input_name: q})
        else:
            self.interpreter.set_tensor(self.input["index"], q)
            self.interpreter.invoke()
            raw = {n: self.interpreter.get_tensor(d["index"]) for n, d in self.outputs.items()}
        named = {}
        for name, arr in raw.items():
            scale, zp = self.outputs[name]["quantization"]
            named[name] = dequantize(arr, scale, zp)
        return map_roles(named, self.meta, self.where)
