"""Where a build's deployable artifact is among a step's upstream outputs: the `precision_search` step's
(precision=auto) when it ran, else the `tflite` or `qdq` step's, else the float ONNX of `export`."""
from __future__ import annotations

from pathlib import Path

PRODUCERS = ("precision_search", "tflite", "qdq")


def artifact_dir(inputs: dict[str, Path]) -> Path | None:
    return next((inputs[name] for name in PRODUCERS if name in inputs), None)


def artifact(inputs: dict[str, Path]) -> tuple[str, Path, Path]:
    """(kind, model file, meta.json)."""
    d = artifact_dir(inputs)
    if d is not None and (d / "model.tflite").is_file():
        return "tflite", d / "model.tflite", d / "meta.json"
    if d is not None:
        return "onnx-qdq", d / "model_qdq.onnx", d / "meta.json"
    return "onnx-float", inputs["export"] / "model.onnx", inputs["export"] / "meta.json"
