"""TensorRT engine runner (TensorRT 10 tensor API). Only usable where `tensorrt` and a CUDA device exist (Jetson).

Device memory and the stream come from NVIDIA's cuda-python (`pip install cuda-python`, the runtime API TensorRT's
own samples use) or, when that is absent, from torch (JetPack's PyTorch wheel): the deploy runner needs neither
torch nor anything else heavy. Every import happens inside this module's functions, so importing edgebuild.runtime
never touches TensorRT or CUDA. Outputs are copied back as float32, keyed by binding name -> meta role.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebuild.errors import EdgebuildError
from edgebuild.runtime import map_roles

FIX = ("run the engine on the Jetson (JetPack provides tensorrt; add `pip install cuda-python`), or run the bundle's "
       "model_qdq.onnx with onnxruntime (--model model_qdq.onnx), which needs no GPU.")


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise EdgebuildError("target.backend", "cannot run a TensorRT engine here (tensorrt is not importable).",
                             FIX) from None
    return trt


class _CudaRuntime:
    """Device buffers and a stream through cuda-python's runtime API (cudaMalloc / cudaMemcpyAsync / streams)."""

    def __init__(self, cudart):
        self.rt = cudart
        self.stream = self._ok(cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _ok(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != int(self.rt.cudaError_t.cudaSuccess):
            raise EdgebuildError("CUDA", f"{what} failed ({err}).", "check that the GPU is visible (nvidia-smi / "
                                 "tegrastats) and that cuda-python matches the JetPack CUDA version.")
        return rest[0] if rest else None

    def alloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(max(1, nbytes)), "cudaMalloc"))

    def upload(self, ptr: int, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self.stream), "cudaMemcpyAsync")

    def download(self, host: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self.stream), "cudaMemcpyAsync")

    @property
    def handle(self) -> int:
        return int(self.stream)

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")


class _TorchCuda:
    """The same four operations on torch CUDA tensors (for machines with JetPack's torch but no cuda-python)."""

    def __init__(self, torch):
        self.torch, self.s, self.keep = torch, torch.cuda.Stream(), []

    def alloc(self, nbytes: int) -> int:
        t = self.torch.empty(max(1, nbytes), dtype=self.torch.uint8, device="cuda")
        self.keep.append(t)
        return t.data_ptr()

    def _view(self, ptr: int) -> "object":
        return next(t for t in self.keep if t.data_ptr() == ptr)

    def upload(self, ptr: int, host: np.ndarray) -> None:
        with self.torch.cuda.stream(self.s):
            self._view(ptr)[: host.nbytes].copy_(self.torch.from_numpy(host.view(np.uint8).reshape(-1)))

    def download(self, host: np.ndarray, ptr: int) -> None:
        self.s.synchronize()
        host.view(np.uint8).reshape(-1)[:] = self._view(ptr)[: host.nbytes].cpu().numpy()

    @property
    def handle(self) -> int:
        return self.s.cuda_stream

    def sync(self) -> None:
        self.s.synchronize()


def _cuda():
    try:
        from cuda.bindings import runtime as cudart     # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart                     # older cuda-python
        except ImportError:
            cudart = None
    if cudart is not None:
        return _CudaRuntime(cudart)
    try:
        import torch
    except ImportError:
        raise EdgebuildError("target.backend", "cannot run a TensorRT engine here (neither cuda-python nor torch is "
                             "importable for device memory).", FIX) from None
    if not torch.cuda.is_available():
        raise EdgebuildError("target.backend", "TensorRT needs a CUDA device and none is visible.",
                             "run on the target device.")
    return _TorchCuda(torch)


class TensorRTRunner:
    kind = "tensorrt"
    threads = 1

    def __init__(self, path: Path, meta: dict):
        trt = _tensorrt()
        self.cuda, self.meta, self.where = _cuda(), meta, str(path)
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise EdgebuildError(str(path), "TensorRT could not deserialize the engine (built by another TensorRT "
                                 "version or GPU?).", "rebuild the engine on this device (./build_engine.sh).")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.host, self.device = {}, {}
        for n in names:
            shape = tuple(self.engine.get_tensor_shape(n))
            self.host[n] = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(n)))
            self.device[n] = self.cuda.alloc(self.host[n].nbytes)
            self.context.set_tensor_address(n, self.device[n])

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        inp = self.host[self.input_name]
        inp[...] = np.asarray(x, dtype=inp.dtype).reshape(inp.shape)
        self.cuda.upload(self.device[self.input_name], inp)
        self.context.execute_async_v3(self.cuda.handle)
        for n in self.output_names:
            self.cuda.download(self.host[n], self.device[n])
        self.cuda.sync()
        named = {n: self.host[n].astype(np.float32) for n in self.output_names}
        return map_roles(named, self.meta, self.where)
