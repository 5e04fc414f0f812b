"""report: float vs quantized metrics -> report.json + report.html, with the accuracy gate.

The step never raises on a failed gate; the CLI reads report.json's gate and exits 3.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgebuild.artifact import artifact_dir
from edgebuild.engine import StepContext, step
from edgebuild.resolve import config_slice

SUMMARY_KEYS = ("recipe", "model.name", "model.task", "model.imgsz", "dataset.name", "target.name",
                "target.backend", "target.compiler", "calibration.method", "calibration.count",
                "calibration.fraction", "calibration.seed", "calibration.split", "decoder.layout",
                "precision.mode", "precision.float_layers", "validation.split", "validation.max_images",
                "validation.conf", "validation.iou")


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def artifact_meta(inputs: dict[str, Path]) -> dict | None:
    d = artifact_dir(inputs)
    return _json(d / "meta.json") if d is not None else None


@step("report", version=3, config=("validation.max_map_drop",) + SUMMARY_KEYS,
      upstream=("validate_float", "validate", "export", "?tflite", "?qdq", "?compile", "?engine",
                "?layer_error", "?precision_search"),
      artifacts=("report.json", "report.html"))
def report(ctx: StepContext) -> None:
    from edgebuild.report.build import build_report
    from edgebuild.report.html import render

    inp = ctx.inputs
    rep = build_report(
        config=config_slice(ctx.cfg, SUMMARY_KEYS + ("validation.max_map_drop",)),
        float_metrics=_json(inp["validate_float"] / "metrics.json"),
        quant_metrics=_json(inp["validate"] / "metrics.json"),
        max_map_drop=ctx.cfg.validation.max_map_drop,
        export_meta=_json(inp["export"] / "meta.json"),
        artifact_meta=artifact_meta(inp),
        compile_result=_json(inp["compile"] / "compile.json") if "compile" in inp else None,
        engine_status=_json(inp["engine"] / "engine.json") if "engine" in inp else None,
        layer_error=_json(inp["layer_error"] / "layer_error.json") if "layer_error" in inp else None,
        precision_search=_json(inp["precision_search"] / "search.json") if "precision_search" in inp else None,
    )
    (ctx.out / "report.json").write_text(json.dumps(rep, indent=1))
    page = render(rep, _json(inp["validate_float"] / "predictions.json"), _json(inp["validate"] / "predictions.json"))
    (ctx.out / "report.html").write_text(page, encoding="utf-8")
    g = rep["gate"]
    ctx.log.info("report: gate %s: %s", "passed" if g["passed"] else "FAILED", g["message"])
