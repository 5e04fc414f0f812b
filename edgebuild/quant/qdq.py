"""Write a QDQ ONNX of the float model for a quantization scheme: Q/DQ on each listed conv's activation input and
its weights, nothing else, biases float.

TensorRT ships this model (symmetric activations, per-channel weights). For TFLite it is the simulation the
corrections run on: `simulation_ranges` turns the scale and zero point that the .tflite gives each conv input back
into the range onnxruntime derives exactly those from, so the simulated conv sees the integers the board computes.

The writer is onnxruntime's `quantize_static` fed with precomputed ranges through its calibration-cache path
(no CalibrationDataReader).
"""
from __future__ import annotations

import inspect
import tempfile
from pathlib import Path

import numpy as np

from edgebuild.errors import EdgebuildError
from edgebuild.quant.scheme import Scheme


def simulation_ranges(params: dict[str, tuple[float, int]]) -> dict[str, tuple[float, float]]:
    """{tensor: (scale, int8 zero point)} -> {tensor: (lo, hi)} with exactly that scale and zero point."""
    return {t: ((-128 - zp) * scale, (127 - zp) * scale) for t, (scale, zp) in params.items()}


def write_qdq(model_path: Path, out_path: Path, ranges: dict[str, tuple[float, float]], convs: list[str],
              activations: list[str], scheme: Scheme) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise EdgebuildError("onnxruntime", f"onnxruntime {onnxruntime.__version__} cannot take precomputed ranges.",
                             "install a newer onnxruntime (pip install -U onnxruntime), see pyproject's [tensorrt] extra.")
    missing = [t for t in activations if t not in ranges]
    if missing:
        raise EdgebuildError("calibration", f"no range was collected for {missing[:3]}.",
                             "this is a bug in edgebuild's calibration tensor list; please report it.")
    data = TensorsData(CalibrationMethod.MinMax, {t: (np.float32(ranges[t][0]), np.float32(ranges[t][1]))
                                                  for t in activations})
    with tempfile.TemporaryDirectory(prefix="edgebuild-qdq-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(data, cache)
        quantize_static(
            str(model_path), str(out_path), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"], nodes_to_quantize=list(convs), per_channel=scheme.per_channel,
            reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
            extra_options={"ActivationSymmetric": scheme.symmetric_activations, "WeightSymmetric": True,
                           "QuantizeBias": False, "OpTypesToExcludeOutputQuantization": ["Conv"]})
