"""TensorRT engine builds: what this machine can do, the trtexec command for the device, the real build.

`probe()` never imports more than `tensorrt` itself and libcuda (through ctypes), so planning stays cheap.
`build_engine` uses the tensorrt Python API and is only called where `probe().can_build`.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from edgebuild.errors import EdgebuildError

ENGINE = "model.engine"
ONNX = "model_qdq.onnx"
TIMING_CACHE = "timing.cache"


@dataclass(frozen=True)
class TrtEnv:
    tensorrt: str | None   # version, None when not importable
    gpu: bool              # a CUDA device answers cuInit / cuDeviceGetCount

    @property
    def can_build(self) -> bool:
        return self.tensorrt is not None and self.gpu

    @property
    def reason(self) -> str:
        if self.tensorrt is None:
            return "engine not built here: tensorrt not importable"
        if not self.gpu:
            return "engine not built here: no CUDA GPU"
        return ""

    def as_dict(self) -> dict:
        return asdict(self)


def _gpu_present() -> bool:
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        count = ctypes.c_int(0)
        return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    return False


@functools.lru_cache(maxsize=1)
def probe() -> TrtEnv:
    version = None
    if importlib.util.find_spec("tensorrt") is not None:
        try:
            import tensorrt

            version = str(tensorrt.__version__)
        except Exception:  # a broken install (missing libnvinfer) counts as not importable
            version = None
    return TrtEnv(version, _gpu_present())


def environment(cfg=None) -> dict:
    """The engine step's environment key: a different TensorRT or GPU presence means a different engine."""
    return probe().as_dict()


def require_engine_precheck(cfg) -> None:
    """Plan-time: target.require_engine=true fails before anything runs when no engine can be built here."""
    if cfg.target.backend != "tensorrt" or not cfg.target.require_engine:
        return
    env = probe()
    if not env.can_build:
        what = "the tensorrt Python package is not importable" if env.tensorrt is None else "no CUDA GPU was found"
        raise EdgebuildError("target.require_engine", f"is true but {what} on this machine, so no TensorRT engine "
                             "can be built here.",
                             "run the build on the Jetson (JetPack ships tensorrt), or set target.require_engine=false "
                             "to get the portable QDQ ONNX + build_engine.sh to run there.")


def check_layer_names(names: list[str]) -> None:
    bad = [n for n in names if "," in n or ":" in n]
    if bad:
        raise EdgebuildError("precision.float_layers", f"node names {bad[:3]} contain ',' or ':', which trtexec's "
                             "--layerPrecisions cannot express.", "rename those nodes in the export or pick other layers.")


def trtexec_argv(mode: str, float_nodes: list[str], onnx: str = ONNX, engine: str = ENGINE,
                 timing_cache: str = TIMING_CACHE) -> list[str]:
    """trtexec arguments for the device. Weakly typed INT8+FP16 so it works on TensorRT 8.6 (JetPack 6.0) and 10.x."""
    argv = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}", f"--timingCacheFile={timing_cache}", "--fp16"]
    if mode in ("int8", "mixed"):
        argv.append("--int8")
    if mode == "mixed" and float_nodes:
        check_layer_names(float_nodes)
        argv += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(f"{n}:fp16" for n in float_nodes)]
    return argv


def build_script(argv: list[str]) -> str:
    """A bash script that runs `argv` from its own directory (next to model_qdq.onnx); extra args pass through."""
    return ("#!/usr/bin/env bash\n"
            "# Build the TensorRT engine on the Jetson (written by edgebuild's engine step).\n"
            "# Run it in the directory holding model_qdq.onnx; extra arguments go to trtexec.\n"
            "set -euo pipefail\n"
            'cd "$(dirname "$0")"\n'
            f'{shlex.join(argv)} "$@"\n')


def build_engine(onnx_path: Path, engine_path: Path, mode: str, float_nodes: list[str],
                 timing_cache: Path | None = None, calibrator=None) -> dict:
    """Build and serialize an engine with the tensorrt Python API; returns build facts for engine.json.

    int8: explicit quantization from the QDQ ONNX, STRONGLY_TYPED where this TensorRT has it (else INT8+FP16).
    mixed: weakly typed INT8+FP16 with FP16 precision constraints (obeyed) on the float_nodes' layers.
    fp16: FP16 flag only. `calibrator` (see `calibrator.py`) is only for implicit INT8 from a float ONNX + cache."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags_enum = trt.NetworkDefinitionCreationFlag
    flags = 0
    if hasattr(flags_enum, "EXPLICIT_BATCH"):  # required before TensorRT 10, deprecated (ignored) after
        flags |= 1 << int(flags_enum.EXPLICIT_BATCH)
    strongly = mode == "int8" and calibrator is None and hasattr(flags_enum, "STRONGLY_TYPED")
    if strongly:
        flags |= 1 << int(flags_enum.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgebuildError(str(onnx_path), f"TensorRT {trt.__version__} cannot parse the ONNX model: {errors}.",
                             "check model.opset and the QDQ model (onnx.checker); see docs/tensorrt.md.")
    config = builder.create_builder_config()
    if not strongly:
        config.set_flag(trt.BuilderFlag.FP16)
        if mode in ("int8", "mixed"):
            config.set_flag(trt.BuilderFlag.INT8)
    if calibrator is not None:
        config.int8_calibrator = calibrator
    constrained = _constrain_fp16(network, float_nodes, trt) if mode == "mixed" else []
    if constrained:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    _static_profile(builder, network, config)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgebuildError("engine", f"TensorRT {trt.__version__} failed to build the engine (see its log above).",
                             "try precision=fp16 to isolate a quantization problem, or report the log.")
    Path(engine_path).write_bytes(bytes(serialized))
    if timing_cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"built": True, "tensorrt": trt.__version__, "strongly_typed": strongly, "fp16_layers": constrained,
            "layers": network.num_layers}


def _constrain_fp16(network, float_nodes: list[str], trt) -> list[str]:
    """Pin the float_nodes' layers (TensorRT names parsed layers after their ONNX nodes) to FP16."""
    wanted, done = set(float_nodes), []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name not in wanted:
            continue
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not all(o.dtype in (trt.DataType.FLOAT, trt.DataType.HALF) for o in outs):
            continue  # shape / index layers keep their types
        layer.precision = trt.DataType.HALF
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.DataType.HALF)
        done.append(layer.name)
    return done


def _static_profile(builder, network, config) -> None:
    """Dynamic batch (-1) inputs get a batch-1 optimization profile; the export is static, so usually a no-op."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t for t in inputs if any(d < 0 for d in t.shape)]
    if not dynamic:
        return
    profile = builder.create_optimization_profile()
    for t in dynamic:
        shape = tuple(1 if d < 0 else d for d in t.shape)
        profile.set_shape(t.name, shape, shape, shape)
    config.add_optimization_profile(profile)
