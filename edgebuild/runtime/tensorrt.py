"""TensorRT engine runner (TensorRT 10 tensor API). Only usable where `tensorrt` and a CUDA device exist.

Device buffers come from torch (present on JetPack images); outputs are copied back as float32 and keyed
by their binding names -> meta roles.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebuild.errors import EdgebuildError
from edgebuild.runtime import map_roles


def _require():
    try:
        import tensorrt as trt
        import torch
    except ImportError as e:
        raise EdgebuildError("target.backend", f"cannot run a TensorRT engine here ({e.name} is not importable).",
                             "validate on the Jetson (JetPack provides tensorrt and torch), or validate the "
                             "QDQ ONNX with onnxruntime, which edgebuild does when no engine runner is available.") from None
    if not torch.cuda.is_available():
        raise EdgebuildError("target.backend", "TensorRT needs a CUDA device and none is visible.",
                             "run on the target device.")
    return trt, torch


class TensorRTRunner:
    kind = "tensorrt"
    threads = 1

    def __init__(self, path: Path, meta: dict):
        trt, torch = _require()
        self.torch, self.meta, self.where = torch, meta, str(path)
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise EdgebuildError(str(path), "TensorRT could not deserialize the engine (built by another TensorRT "
                                 "version or GPU?).", "rebuild the engine on this device.")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.buffers = {}
        for n in names:
            shape = tuple(self.engine.get_tensor_shape(n))
            dtype = torch.from_numpy(np.zeros(0, trt.nptype(self.engine.get_tensor_dtype(n)))).dtype
            self.buffers[n] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(n, self.buffers[n].data_ptr())

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        inp = self.buffers[self.input_name]
        inp.copy_(torch.from_numpy(np.ascontiguousarray(x)).to(inp.dtype))
        with torch.cuda.stream(self.stream):
            self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        named = {n: self.buffers[n].float().cpu().numpy() for n in self.output_names}
        return map_roles(named, self.meta, self.where)
