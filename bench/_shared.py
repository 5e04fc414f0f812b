"""Pieces the accuracy benches share, all delegating to edgebuild itself: the export step's ONNX + meta.json
from a checkpoint, and box metrics of a model file through edgebuild's runtime + evaluator (one evaluator for
float and quantized)."""
from __future__ import annotations

from pathlib import Path


def export_checkpoint(weights: Path, layout: str, imgsz: int, out_dir: Path) -> Path:
    """What the export step writes (model.onnx + meta.json, opset 17, detect) into out_dir; returns out_dir."""
    from edgebuild.digest import file_sha256
    from edgebuild.export.load import load_checkpoint
    from edgebuild.export.meta import build_meta, dumps
    from edgebuild.export.onnx_export import export_onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_checkpoint(weights, "detect", imgsz)
    meta = build_meta(task="detect", layout=layout, imgsz=imgsz, names=loaded.names, strides=loaded.strides,
                      source_name=weights.name, source_sha256=file_sha256(weights))
    export_onnx(loaded, layout, imgsz, 17, meta, out_dir / "model.onnx")
    (out_dir / "meta.json").write_text(dumps(meta))
    return out_dir


def box_metrics(model: Path, meta: dict, data_yaml: Path, imgsz: int, max_images: int | None = None) -> dict:
    """COCO box metrics ({"map50", "map50_95", ...}) of a .onnx/.tflite model on the dataset's val split."""
    from edgebuild.data.yolo import YoloDataset
    from edgebuild.metrics.evaluate import Settings, evaluate_model
    from edgebuild.runtime import load_runner

    ds = YoloDataset(data_yaml, "error")
    m, _ = evaluate_model(load_runner(model, meta), meta, ds.samples("val")[:max_images], ds.names,
                          Settings(imgsz=imgsz))
    return m["bbox"]
