"""onnxruntime runner for float and QDQ ONNX (CPU execution provider)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebuild.runtime import map_roles


class OnnxRunner:
    kind = "onnxruntime"

    def __init__(self, path: Path, meta: dict, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.meta, self.threads, self.where = meta, threads, str(path)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        self.output_names = [o.name for o in self.session.get_outputs()]

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=self.input_dtype)})
        named = {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, outs)}
        return map_roles(named, self.meta, self.where)
