"""report.json: one document with the config, float vs quantized accuracy, deltas, cost, per-layer error, and the
gate."""
from __future__ import annotations

from edgebuild.report import SCHEMA_VERSION
from edgebuild.report.gate import gate

METRIC_KEYS = ("map50", "map50_95", "recall")
WORST_LAYERS = 15  # rows of the per-layer error table kept in report.json


def _pts(q, f):
    return None if q is None or f is None else round((q - f) * 100.0, 3)


def deltas(float_metrics: dict, quant_metrics: dict) -> dict:
    """Quantized minus float, in points (negative = accuracy lost), overall and per class."""
    out = {}
    for t in ("bbox", "segm"):
        if t not in float_metrics or t not in quant_metrics:
            continue
        f, q = float_metrics[t], quant_metrics[t]
        d = {k: _pts(q.get(k), f.get(k)) for k in METRIC_KEYS}
        d["per_class"] = {}
        for name, fc in f.get("per_class", {}).items():
            qc = q.get("per_class", {}).get(name)
            d["per_class"][name] = None if not fc or not qc else {
                k: _pts(qc[k], fc[k]) for k in ("ap50", "ap50_95")}
        out[t] = d
    return out


def _summary(m: dict) -> dict:
    keep = ("task", "layout", "images", "skipped", "split", "settings", "artifact", "runtime", "latency", "bbox", "segm")
    return {k: m[k] for k in keep if k in m}


def mixed_precision(meta: dict | None, float_layers=()) -> dict:
    """The ops/tensors the artifact keeps in float, as the tflite/qdq step recorded them in meta.json."""
    meta = meta or {}
    q = meta.get("quantization") or {}
    ops = meta.get("float_ops", q.get("float_nodes"))  # tflite: meta["float_ops"]; qdq: quantization.float_nodes
    return {"mode": q.get("mode"), "float_layers": list(float_layers or []),
            "float_ops": ops if ops is not None else [],   # a list of ops, or "all" (fp16)
            "correction": q.get("correction")}   # qdq: {kind, images, convs, ...} or None


def layer_error_summary(layer_error: dict | None) -> dict | None:
    """The layer_error step's table cut to its worst rows."""
    if not layer_error:
        return None
    return {k: layer_error.get(k) for k in ("images", "tensors")} | {"worst": layer_error["rows"][:WORST_LAYERS]}


def build_report(config: dict, float_metrics: dict, quant_metrics: dict, max_map_drop: float,
                 export_meta: dict | None = None, artifact_meta: dict | None = None,
                 compile_result: dict | None = None, engine_status: dict | None = None,
                 layer_error: dict | None = None, precision_search: dict | None = None) -> dict:
    export_meta = export_meta or {}
    fa, qa = float_metrics.get("artifact", {}), quant_metrics.get("artifact", {})
    fl, ql = float_metrics.get("latency", {}), quant_metrics.get("latency", {})
    size = {"float_bytes": fa.get("size_bytes"), "quantized_bytes": qa.get("size_bytes")}
    if size["float_bytes"] and size["quantized_bytes"]:
        size["ratio"] = round(size["quantized_bytes"] / size["float_bytes"], 4)
    latency = {"float": fl, "quantized": ql}
    if fl.get("median_ms") and ql.get("median_ms"):
        latency["speedup"] = round(fl["median_ms"] / ql["median_ms"], 3)
    return {
        "schema_version": SCHEMA_VERSION,
        "recipe": config.get("recipe", ""),
        "config": config,
        "model": {k: export_meta.get(k) for k in ("task", "layout", "imgsz", "nc", "names", "normalized", "source")},
        "float": _summary(float_metrics),
        "quantized": _summary(quant_metrics),
        "deltas": deltas(float_metrics, quant_metrics),
        "latency": latency,
        "size": size,
        "digests": {"float": fa.get("sha256"), "quantized": qa.get("sha256")},
        "mixed_precision": mixed_precision(artifact_meta, config.get("precision.float_layers")),
        "compile": compile_result,
        "engine": engine_status,
        "layer_error": layer_error_summary(layer_error),
        "precision_search": precision_search,
        "gate": gate(float_metrics, quant_metrics, max_map_drop),
    }
