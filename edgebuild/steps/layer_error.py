"""Step `layer_error`: where accuracy goes, the SQNR of every quantized tensor vs the float model -> layer_error.json.

Runs the artifact in its own runtime next to the float model on the first validation.layer_error_images calibration
images: TFLite (int8 model.tflite vs the calibrate step's float flatbuffer, edgebuild.tflite.layer_error) or
TensorRT QDQ (model_qdq.onnx vs export's model.onnx, edgebuild.tensorrt.layer_error). The report shows the worst
rows; a tensor or op listed in precision.float_layers stays float.
"""
from __future__ import annotations

import itertools
import json

from edgebuild.artifact import artifact_dir
from edgebuild.engine import StepContext, step


@step("layer_error", version=1, config=("model.imgsz", "validation.layer_error_images"),
      upstream=("export", "calibset", "?calibrate", "?tflite", "?qdq", "?precision_search"),
      applies=lambda cfg: cfg.precision.mode != "fp16",
      artifacts=("layer_error.json",), isolate=True)
def layer_error(ctx: StepContext) -> None:
    from edgebuild.data.preprocess import channel_order
    from edgebuild.data.stream import iter_calibration, manifest_size

    inp, imgsz = ctx.inputs, int(ctx.cfg.model.imgsz)
    manifest = inp["calibset"] / "manifest.json"
    total = min(int(ctx.cfg.validation.layer_error_images), manifest_size(manifest))
    backend = "tflite" if "tflite" in inp else "tensorrt"
    order = channel_order(json.loads((inp["export"] / "meta.json").read_text()))

    def images():
        stream = iter_calibration(manifest, imgsz, "float32", "NHWC" if backend == "tflite" else "NCHW", order)
        for i, x in enumerate(itertools.islice(stream, total), 1):
            yield x
            ctx.progress(i, total, "images")

    if backend == "tflite":
        from edgebuild.tflite.layer_error import collect

        rows = collect((inp["calibrate"] / "calibrated.tflite").read_bytes(),
                       (artifact_dir(inp) / "model.tflite").read_bytes(), images())
    else:
        from edgebuild.tensorrt.layer_error import collect

        rows = collect(inp["export"] / "model.onnx", artifact_dir(inp) / "model_qdq.onnx", images())
    (ctx.out / "layer_error.json").write_text(json.dumps(
        {"backend": backend, "images": total, "tensors": len(rows), "rows": rows}, indent=1))
    if rows:
        ctx.log.info("layer_error: %d tensors on %d images; worst %s (%s) at %.1f dB",
                     len(rows), total, rows[0]["tensor"], rows[0]["op"], rows[0]["sqnr_db"])
