"""qdq step: export's float ONNX -> TensorRT explicit-quantization QDQ ONNX + TensorRT calibration cache.

Calibration streams the calibset manifest one image at a time (edgebuild.data.stream) through the float model
and estimates every activation's range with edgebuild.quant.calibrators; placement and the QDQ writer are in
edgebuild.tensorrt.qdq; the int8 convs are then corrected on the first calibration.correction_images images
(calibration.correction: bias or weights in edgebuild.quant.correction, finetune in edgebuild.quant.finetune).
precision.mode=fp16 skips calibration: model_qdq.onnx is then the float model.
"""
from __future__ import annotations

import json
import shutil

from edgebuild.engine import StepContext, step
from edgebuild.quant import require_torch


def _applies(cfg) -> bool:
    return cfg.target.backend == "tensorrt"


@step("qdq", version=6,
      config=("calibration.method", "calibration.percentile", "calibration.num_bins",
              "calibration.correction", "calibration.correction_images", "calibration.correction_steps",
              "precision.mode", "precision.float_layers", "model.imgsz"),
      upstream=("export", "calibset"), applies=_applies,
      artifacts=("model_qdq.onnx", "calibration.cache", "meta.json"), isolate=True,
      precheck=require_torch)
def qdq(ctx: StepContext) -> None:
    import onnx

    from edgebuild.quant.calibrators import make_calibrator
    from edgebuild.data.preprocess import channel_order
    from edgebuild.data.stream import iter_calibration, manifest_size
    from edgebuild.tensorrt import calib_cache
    from edgebuild.tensorrt import qdq as q
    from edgebuild.quant.correction import correct, take_images
    from edgebuild.quant.finetune import finetune

    cfg = ctx.cfg
    float_onnx = ctx.inputs["export"] / "model.onnx"
    meta = json.loads((ctx.inputs["export"] / "meta.json").read_text())
    mode = cfg.precision.mode
    if mode == "fp16":
        shutil.copyfile(float_onnx, ctx.out / "model_qdq.onnx")
        meta["quantization"] = {"backend": "tensorrt", "mode": "fp16", "explicit": False}
        (ctx.out / "meta.json").write_text(json.dumps(meta, indent=1))
        return

    model = onnx.load(str(float_onnx))
    plan = q.plan_quantization(model, list(cfg.precision.float_layers) if mode == "mixed" else [])
    tensors = q.calibration_tensors(model)
    del model
    manifest = ctx.inputs["calibset"] / "manifest.json"
    total = manifest_size(manifest)
    calibrator = make_calibrator(cfg.calibration.method, percentile=cfg.calibration.percentile,
                                 num_bins=cfg.calibration.num_bins)
    images = iter_calibration(manifest, cfg.model.imgsz, "float32", "NCHW", channel_order(meta))
    ranges, seen = q.collect_ranges(float_onnx, tensors, images, calibrator,
                                    progress=lambda done: ctx.progress(done, total, "calibration images"))
    ctx.log.info("qdq: %d tensors calibrated (%s) on %d images; %d convs quantized, DFL %s float",
                 len(ranges), cfg.calibration.method, seen, len(plan.quantized), plan.dfl)
    written = q.write_qdq(float_onnx, ctx.out / "model_qdq.onnx", ranges, plan)
    corrected = None
    kind = cfg.calibration.correction
    if kind != "none":
        qdq_model = onnx.load(str(ctx.out / "model_qdq.onnx"))
        images = take_images(iter_calibration(manifest, cfg.model.imgsz, "float32", "NCHW", channel_order(meta)),
                             cfg.calibration.correction_images)
        if kind == "finetune":
            corrected = finetune(onnx.load(str(float_onnx)), qdq_model, plan.quantized, images,
                                 cfg.calibration.correction_steps,
                                 progress=lambda done, n: ctx.progress(done, n, "fine-tuning steps"))
        else:
            corrected = correct(onnx.load(str(float_onnx)), qdq_model, plan.quantized, images, kind,
                                progress=lambda done, n: ctx.progress(done, n, f"convs corrected ({kind})"))
        onnx.save(qdq_model, str(ctx.out / "model_qdq.onnx"))
        del qdq_model, images
        ctx.log.info("qdq: %s correction of %d int8 convs on %d images",
                     kind, corrected["convs"], corrected["images"])
    calib_cache.write_cache(ctx.out / "calibration.cache", ranges, cfg.calibration.method)
    meta["quantization"] = {
        "backend": "tensorrt", "mode": mode, "explicit": True, "method": cfg.calibration.method,
        "images": seen, "activations": "int8 symmetric per-tensor", "weights": "int8 symmetric per-channel",
        "calibration_cache": {"file": "calibration.cache", "tensors": len(ranges),
                              "header_version": calib_cache.DEFAULT_TRT_VERSION},
        "correction": corrected, **plan.summary(), **written,
        "activation_amax": {t: max(abs(ranges[t][0]), abs(ranges[t][1])) for t in plan.activations},
    }
    (ctx.out / "meta.json").write_text(json.dumps(meta, indent=1))
