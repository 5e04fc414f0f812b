"""TensorRT INT8 calibrators for implicit quantization (a float ONNX + a calibration cache).

Imports tensorrt at module level: import this module only where tensorrt exists (engine_build.probe()).

The usual case needs no GPU buffers at all: the cache written by the qdq step is served by
`read_calibration_cache` (its header retargeted to this TensorRT's version), TensorRT takes every scale
from it and never asks for a batch. Only when `batches` is given (TensorRT's own calibration, e.g. to compare
with ours) are images copied to the device through pycuda, one batch at a time.

    cal = make_trt_calibrator("entropy", cache_path, batches=iter_calibration(manifest, 320, "float32", "NCHW"))
    build_engine(float_onnx, engine_path, "int8", [], calibrator=cal)
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorrt as trt

from edgebuild.tensorrt.calib_cache import parse_cache, retarget


class _CacheAndBatches:
    """Shared behaviour: serve/write the cache file, stream batches (batch size = leading dim of each array)."""

    def _setup(self, cache_path: Path, batches: Iterator[np.ndarray] | None, batch_size: int) -> None:
        self.cache_path = Path(cache_path)
        self.batches = batches
        self.batch_size = batch_size
        self._device = None
        self._nbytes = 0

    def get_batch_size(self) -> int:
        return self.batch_size

    def get_batch(self, names, *args):
        if self.batches is None:
            return None
        batch = next(self.batches, None)
        if batch is None:
            return None
        import pycuda.autoinit  # noqa: F401  (creates the CUDA context on first use)
        import pycuda.driver as cuda

        host = np.ascontiguousarray(batch, dtype=np.float32)
        if self._device is None or host.nbytes > self._nbytes:
            self._device = cuda.mem_alloc(host.nbytes)
            self._nbytes = host.nbytes
        cuda.memcpy_htod(self._device, host)
        return [int(self._device)] * len(names)

    def read_calibration_cache(self):
        if not self.cache_path.is_file():
            return None
        return retarget(self.cache_path.read_bytes(), trt.__version__)

    def write_calibration_cache(self, cache) -> None:
        self.cache_path.write_bytes(bytes(cache))


class EntropyCalibrator2(_CacheAndBatches, trt.IInt8EntropyCalibrator2):
    def __init__(self, cache_path: Path, batches: Iterator[np.ndarray] | None = None, batch_size: int = 1):
        trt.IInt8EntropyCalibrator2.__init__(self)  # TensorRT requires the base constructor to run explicitly
        self._setup(cache_path, batches, batch_size)


class MinMaxCalibrator(_CacheAndBatches, trt.IInt8MinMaxCalibrator):
    def __init__(self, cache_path: Path, batches: Iterator[np.ndarray] | None = None, batch_size: int = 1):
        trt.IInt8MinMaxCalibrator.__init__(self)
        self._setup(cache_path, batches, batch_size)


CLASSES = {"EntropyCalibration2": EntropyCalibrator2, "MinMaxCalibration": MinMaxCalibrator}


def make_trt_calibrator(method: str | None, cache_path: Path, batches: Iterator[np.ndarray] | None = None,
                        batch_size: int = 1):
    """The calibrator class TensorRT expects for the cache's algorithm (it rejects a mismatched header).

    method: calibration.method (minmax -> MinMax, entropy/percentile -> EntropyCalibrator2); None = from the cache."""
    if method is None:
        algorithm = parse_cache(Path(cache_path).read_bytes(), str(cache_path)).algorithm
    else:
        algorithm = "MinMaxCalibration" if method == "minmax" else "EntropyCalibration2"
    return CLASSES[algorithm](cache_path, batches, batch_size)
