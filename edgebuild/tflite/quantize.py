"""SavedModel -> TFLite: full-integer INT8 (uint8 input, int8 outputs), fp16, or mixed.

One route for every calibration method:
  1. calibrate-only conversion (`converter._experimental_calibrate_only`) on one image: the float flatbuffer
     whose tensors get ranges; then one pass over the calibration stream records every tensor's min/max and |x|
     histogram (collect_stats: the `calibstats` step), from which each method's ranges follow (apply_method).
  2. ranges.write_ranges(): those ranges (and the input's exact [0, 1]) go into the flatbuffer's min/max.
  3. `mlir_quantize` (the converter's own quantizer) turns it into the integer model, with the
     mixed-precision denylist when precision.mode=mixed.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgebuild.errors import EdgebuildError
from edgebuild.tflite import mixed, ranges
from edgebuild.tflite.convert import SIGNATURE

Samples = Callable[[], Iterator[np.ndarray]]  # a fresh stream of NHWC float32 [0, 1] batches of 1
Progress = Callable[[int, int, str], None]


def checked(samples: Samples, shape: list[int], total: int, progress: Progress | None = None,
            limit: int | None = None) -> Iterator[np.ndarray]:
    """The calibration stream, checked image by image (size, range), with progress; never materialized."""
    n = 0
    for n, x in enumerate(itertools.islice(samples(), limit), 1):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if list(x.shape) != list(shape):
            raise EdgebuildError("calibration", f"calibration image {n} has shape {list(x.shape)}, the model input "
                                 f"is {list(shape)} (NHWC).", "calibrate at model.imgsz with the model's own "
                                 "preprocessing (edgebuild.data.stream.iter_calibration); rebuild the calibset.")
        if x.min() < -1e-6 or x.max() > 1 + 1e-6:
            raise EdgebuildError("calibration", f"calibration image {n} has values in [{x.min():.3g}, {x.max():.3g}]"
                                 ", expected [0, 1].", "feed float32 images scaled by 1/255.")
        if progress:
            progress(n, limit or total, "calibration images")
        yield x
    if n == 0:
        raise EdgebuildError("calibration", "the calibration set is empty.",
                             "check calibration.count / calibration.fraction and the dataset's calibration split.")


def _converter(saved_model: Path):
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE])
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    return c


def calibrate_only(saved_model: Path, stream: Iterator[np.ndarray]) -> bytes:
    """Float flatbuffer with the converter's min/max statistics attached."""
    import tensorflow as tf

    c = _converter(saved_model)
    c.representative_dataset = lambda: ([x] for x in stream)
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c._experimental_calibrate_only = True  # noqa: SLF001 - documented route for custom calibration
    return c.convert()


def quantize_calibrated(calibrated: bytes, *, per_channel: bool, input_dtype: str,
                        denylisted_nodes: list[str] | None = None) -> bytes:
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert

    from tensorflow.lite.python.util import modify_model_io_type

    in_type = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[input_dtype]
    try:
        # float IO + QUANTIZE/DEQUANTIZE glue, then the converter's own IO rewrite (drops the glue; a uint8 input
        # keeps scale 1/255 and gets zero point 0)
        model = tfl_convert.mlir_quantize(calibrated, disable_per_channel=not per_channel, fully_quantize=False,
                                          input_data_type=tf.float32, output_data_type=tf.float32,
                                          denylisted_nodes=denylisted_nodes or None)
        return bytes(modify_model_io_type(model, in_type, tf.int8))
    except Exception as e:  # the quantizer reports unsupported ops as ConverterError
        raise EdgebuildError("precision.mode", f"the TFLite quantizer failed: {str(e).strip().splitlines()[0]}",
                             "keep the named op in float: precision.mode=mixed precision.float_layers=['<op>'].") \
            from None


def convert_fp16(saved_model: Path) -> bytes:
    import tensorflow as tf

    c = _converter(saved_model)
    c.target_spec.supported_types = [tf.float16]
    return c.convert()


def convert_float(saved_model: Path) -> bytes:
    """Float32 TFLite of the same graph (the reference for the quantization drop)."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE]).convert()


def collect_stats(saved_model: Path, samples: Samples, total: int, *, num_bins: int = 2048,
                  input_shape: list[int], progress: Progress | None = None):
    """One pass for every method: (the calibrate-only float flatbuffer, calibrators.ActivationStats of its tensors)."""
    from edgebuild.quant.calibrators import ActivationStats

    if total < 1:
        raise EdgebuildError("calibration", "the calibration set is empty.",
                             "check calibration.count / calibration.fraction and the dataset's calibration split.")
    graph = calibrate_only(saved_model, checked(samples, input_shape, total, limit=1))
    stats = ranges.feed(graph, checked(samples, input_shape, total, progress), ActivationStats(num_bins))
    return graph, stats


def apply_method(graph: bytes, stats, method: str, percentile: float = 99.99) -> tuple[bytes, dict]:
    """The calibrated flatbuffer for `method` from collected statistics (no model run), and the ranges used."""
    from edgebuild.quant.calibrators import ranges_from_stats

    return ranges.write_ranges(graph, ranges_from_stats(stats, method, percentile), input_range=(0.0, 1.0))


def calibrate(saved_model: Path, samples: Samples, total: int, *, method: str = "minmax",
              percentile: float = 99.99, num_bins: int = 2048, input_shape: list[int],
              progress: Progress | None = None) -> tuple[bytes, dict]:
    """The calibrate-only float flatbuffer with `method`'s ranges written in (steps 1 and 2 above), and the ranges."""
    graph, stats = collect_stats(saved_model, samples, total, num_bins=num_bins, input_shape=input_shape,
                                 progress=progress)
    return apply_method(graph, stats, method, percentile)


def quantize_int8(calibrated: bytes, *, per_channel: bool = True, input_dtype: str = "uint8",
                  float_layers: list[str] = ()) -> tuple[bytes, list[dict]]:
    """Full-integer model from a calibrated flatbuffer (step 3), and the ops kept float."""
    keep = mixed.resolve(calibrated, float_layers) if float_layers else []
    model = quantize_calibrated(calibrated, per_channel=per_channel, input_dtype=input_dtype,
                                denylisted_nodes=[op["node"] for op in keep])
    mixed.check_quantized(model, keep)
    return model, keep


def build_int8(saved_model: Path, samples: Samples, total: int, *, method: str = "minmax",
               percentile: float = 99.99, num_bins: int = 2048, per_channel: bool = True,
               input_dtype: str = "uint8", float_layers: list[str] = (), input_shape: list[int],
               progress: Progress | None = None) -> tuple[bytes, dict]:
    """Full-integer model and a description of what was done (ranges, ops kept float)."""
    calibrated, used = calibrate(saved_model, samples, total, method=method, percentile=percentile,
                                 num_bins=num_bins, input_shape=input_shape, progress=progress)
    model, keep = quantize_int8(calibrated, per_channel=per_channel, input_dtype=input_dtype,
                                float_layers=float_layers)
    return model, {"ranges": used, "float_ops": keep}
