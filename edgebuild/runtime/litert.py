"""LiteRT interpreter runner for INT8, fp16 and float TFLite models (ai_edge_litert, or tflite_runtime on boards
whose BSP ships that instead), optionally through an external delegate (NPU) loaded by path.

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


def interpreter_module():
    """The TFLite interpreter module the machine has: ai_edge_litert.interpreter, else tflite_runtime.interpreter."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError:
            raise EdgebuildError("target.backend", "no TFLite interpreter is installed (neither ai_edge_litert nor "
                                 "tflite_runtime), so TFLite models cannot be run.",
                                 "pip install ai-edge-litert (or use the tflite-runtime of the board's BSP).") from None
    return interpreter


def check_delegate_path(library: str | Path) -> None:
    if not Path(library).is_file():
        raise EdgebuildError(str(library), "the delegate library does not exist.",
                             "pass the path of the board's delegate .so (the bundle's README.md names it), or leave "
                             "--delegate out to run on the CPU.")


def load_delegate(library: str | Path, options: dict | None = None):
    """An external delegate (e.g. /usr/lib/libvx_delegate.so) with its options; one error paragraph if it fails."""
    check_delegate_path(library)
    opts = {str(k): str(v) for k, v in (options or {}).items()}
    try:
        return interpreter_module().load_delegate(str(library), opts)
    except (ValueError, RuntimeError, OSError) as e:
        raise EdgebuildError(str(library), f"the delegate could not be loaded ({str(e).strip() or type(e).__name__}).",
                             "use the delegate built for this board's BSP and check its options.") from None


class LiteRTRunner:
    kind = "litert"

    def __init__(self, path: Path, meta: dict, threads: int = 1, delegate: str | Path | None = None,
                 delegate_options: dict | None = None):
        module = interpreter_module()
        kwargs = {}
        if delegate:  # the NPU delegate, not XNNPACK, gets the graph (NXP: XNNPACK can claim Neutron's custom ops)
            kwargs["experimental_delegates"] = [load_delegate(delegate, delegate_options)]
            resolver = getattr(module, "OpResolverType", None)
            if resolver is not None:
                kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = module.Interpreter(model_path=str(path), num_threads=threads, **kwargs)
        self.meta, self.threads, self.where = meta, threads, str(path)
        self.delegate = str(delegate) if delegate else None
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
