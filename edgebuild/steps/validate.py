"""validate_float and validate: accuracy and host latency of the float ONNX and of the deployable artifact.

Outputs: metrics.json, predictions.json (the report's drawn images) and, for the deployable artifact,
detections.json (every image's detections in original pixels, masks as COCO RLE: what the deploy runner must
reproduce, tests/test_deploy.py).

Both run the same loop (edgebuild.metrics.evaluate) on the same val samples with the same preprocessing,
decode, NMS and COCO evaluator; only the model file and its runtime differ.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from edgebuild.digest import file_sha256
from edgebuild.artifact import artifact
from edgebuild.engine import StepContext, step

log = logging.getLogger("edgebuild")

CONFIG = ("validation.split", "validation.max_images", "validation.conf", "validation.iou", "validation.max_det",
          "validation.latency_runs", "validation.report_images", "model.imgsz",
          "dataset.path", "dataset.format", "dataset.images", "dataset.on_corrupt")
THREADS = 1  # inference threads for accuracy and latency (stated in metrics.json)


def _val_files(cfg) -> dict:
    from edgebuild.data.dataset import open_dataset

    ds, split, key = open_dataset(cfg), cfg.validation.split, "validation.split"
    return {"val": ds.definition_files(split) + ds.image_files(split, key) + ds.label_files(split, key)}


def run_validation(ctx: StepContext, kind: str, model: Path, meta_path: Path, detections: bool = False) -> None:
    from edgebuild.data.dataset import open_dataset
    from edgebuild.metrics.evaluate import Settings, evaluate_model, measure_latency
    from edgebuild.data.preprocess import channel_order, preprocess
    from edgebuild.runtime import load_runner

    v = ctx.cfg.validation
    meta = json.loads(meta_path.read_text())
    ds = open_dataset(ctx.cfg)
    samples = ds.samples(v.split, "validation.split")
    if v.max_images is not None:
        samples = samples[: v.max_images]
    s = Settings(imgsz=ctx.cfg.model.imgsz, conf=v.conf, iou=v.iou, max_det=v.max_det,
                 report_images=v.report_images, on_corrupt=ctx.cfg.dataset.on_corrupt, order=channel_order(meta))
    runner = load_runner(model, meta, threads=THREADS)
    record: list = []
    metrics, drawn = evaluate_model(runner, meta, samples, list(meta.get("names") or ds.names), s, ctx.progress,
                                    record if detections else None)
    metrics["skipped"] += len(ds.skipped.get(v.split, []))
    x, _ = preprocess(samples[0].image_path, s.imgsz, order=s.order)
    metrics = {
        "schema_version": 1,
        "task": meta.get("task", "detect"),
        "layout": meta.get("layout"),
        "split": v.split,
        "settings": {"conf": v.conf, "iou": v.iou, "max_det": v.max_det, "imgsz": s.imgsz, "nms": "class-aware, multi-label"},
        "artifact": {"kind": kind, "file": model.name, "size_bytes": model.stat().st_size, "sha256": file_sha256(model)},
        "runtime": {"name": runner.kind, "threads": runner.threads, **_input_info(runner)},
        **metrics,
        "latency": measure_latency(runner, x, v.latency_runs),
    }
    (ctx.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (ctx.out / "predictions.json").write_text(json.dumps({"names": meta.get("names"), "images": drawn}))
    if detections:
        (ctx.out / "detections.json").write_text(json.dumps({"names": meta.get("names"), "conf": v.conf, "iou": v.iou,
                                                             "max_det": v.max_det, "images": record}))
    b = metrics["bbox"]
    log.info("%s: %s on %d images: box mAP50 %.4f mAP50-95 %.4f", ctx.name, model.name, metrics["images"],
             b["map50"], b["map50_95"])


def _input_info(runner) -> dict:
    q = getattr(runner, "input_quantization", None)
    if q is None:
        return {"input": {"dtype": "float32"}}
    dtype, scale, zp = q
    return {"input": {"dtype": dtype, "scale": scale, "zero_point": zp}}


@step("validate_float", version=2, config=CONFIG, upstream=("export",), files=_val_files,
      artifacts=())
def validate_float(ctx: StepContext) -> None:
    """The float ONNX from export, on onnxruntime: the reference every quantized build is compared with."""
    run_validation(ctx, "onnx-float", ctx.inputs["export"] / "model.onnx", ctx.inputs["export"] / "meta.json")


@step("validate", version=2, config=CONFIG, upstream=("export", "?tflite", "?qdq", "?precision_search"),
      files=_val_files,
      artifacts=())
def validate(ctx: StepContext) -> None:
    """The deployable artifact on the runtime that will run it (LiteRT for TFLite, onnxruntime for QDQ ONNX)."""
    kind, model, meta = artifact(ctx.inputs)
    run_validation(ctx, kind, model, meta, detections=True)
