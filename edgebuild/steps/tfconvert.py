"""Step `tfconvert`: export's model.onnx -> float SavedModel (onnx2tf), checked against onnxruntime.

Cached apart from `tflite`, so changing calibration or precision re-runs only the quantization.
"""
from __future__ import annotations

import json

from edgebuild.engine import StepContext, step


@step("tfconvert", version=1, upstream=("export",), applies=lambda cfg: cfg.target.backend == "tflite",
      isolate=True)
def tfconvert(ctx: StepContext) -> None:
    import numpy as np

    from edgebuild.tflite.convert import check_against_onnx, onnx_to_saved_model, sample_images

    onnx_path = ctx.inputs["export"] / "model.onnx"
    meta = json.loads((ctx.inputs["export"] / "meta.json").read_text())
    info = onnx_to_saved_model(onnx_path, ctx.out / "saved_model")
    roles = {o["name"] for o in meta["outputs"]}
    missing = roles - set(info["outputs"])
    if missing:  # the SavedModel signature must expose every role under its export name
        from edgebuild.errors import EdgebuildError

        raise EdgebuildError(str(onnx_path), f"outputs {sorted(missing)} of meta.json are not in the converted "
                             f"SavedModel signature ({info['outputs']}).", "re-export the model (export step).")
    size = meta["imgsz"]
    image = np.ascontiguousarray(sample_images(1, size=size, seed=1))
    errors = check_against_onnx(onnx_path, ctx.out / "saved_model", image, info)
    ctx.log.info("tfconvert: SavedModel outputs %s, max |tf - onnxruntime| %s", info["outputs"], errors)
    meta["tfconvert"] = {"signature": "serving_default", "input": info["input"], "input_shape": info["input_shape"],
                         "check_max_abs_error": errors}
    (ctx.out / "meta.json").write_text(json.dumps(meta, indent=1))
