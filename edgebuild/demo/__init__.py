"""The project's own demo assets: a synthetic dataset generator (synth) and small trained weights.

`dataset.path=builtin:demo` -> edgebuild.data.dataset.demo_dataset (generated on first use);
`model.weights=builtin:demo-det` -> resolve_weights(cfg). See README.md for provenance.
"""
from __future__ import annotations

from pathlib import Path

from edgebuild.errors import EdgebuildError

HERE = Path(__file__).resolve().parent
BUILTIN_WEIGHTS = {"builtin:demo-det": HERE / "yolov8n-demo-det.pt"}


def resolve_weights(cfg) -> Path:
    """cfg.model.weights as a file: builtin:* names map to files shipped in this package, others to paths."""
    w = str(cfg.model.weights)
    if w.startswith("builtin:"):
        if w not in BUILTIN_WEIGHTS:
            raise EdgebuildError("model.weights", f"{w!r} is not a built-in model.",
                                 f"use one of {', '.join(BUILTIN_WEIGHTS)} or the path of a .pt/.onnx file.")
        p = BUILTIN_WEIGHTS[w]
        if not p.is_file():
            raise EdgebuildError("model.weights", f"the built-in weights file {p} is missing from the installation.",
                                 "reinstall edgebuild (the .pt is package data), or run "
                                 "`python -m edgebuild.demo.train` to recreate it.")
        if w == "builtin:demo-det" and cfg.model.task != "detect":
            raise EdgebuildError("model.task", f"{w} is a detection model but model.task={cfg.model.task}.",
                                 "set model.task=detect, or point model.weights at segmentation weights.")
        return p
    p = Path(w).expanduser()
    if not p.is_file():
        raise EdgebuildError("model.weights", f"the weights file {p.resolve()} does not exist.",
                             "point model.weights at an Ultralytics .pt or YOLO .onnx file, or use builtin:demo-det.")
    return p.resolve()
