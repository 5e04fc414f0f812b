"""The accuracy gate: a pure function of the float and quantized metrics and the allowed drop."""
from __future__ import annotations


def gate(float_metrics: dict, quant_metrics: dict, max_map_drop: float) -> dict:
    """mAP50-95 drop in points, the worse of bbox and (when both have it) segm, against max_map_drop points.

    -> {"passed", "max_map_drop", "drop", "metric", "message"}; a missing quantized metric fails the gate."""
    types = [t for t in ("bbox", "segm") if t in float_metrics]
    drops = {}
    for t in types:
        q = (quant_metrics.get(t) or {}).get("map50_95")
        if q is None:
            return {"passed": False, "max_map_drop": max_map_drop, "drop": None, "metric": f"{t}.map50_95",
                    "message": f"the quantized model has no {t} mAP50-95 to compare."}
        drops[t] = (float_metrics[t]["map50_95"] - q) * 100.0
    if not drops:
        return {"passed": False, "max_map_drop": max_map_drop, "drop": None, "metric": None,
                "message": "the float model has no metrics to compare against."}
    worst = max(drops, key=drops.get)
    drop = round(drops[worst], 3)
    passed = drop <= max_map_drop
    verdict = "within" if passed else "exceeds"
    return {"passed": passed, "max_map_drop": max_map_drop, "drop": drop, "metric": f"{worst}.map50_95",
            "message": f"{worst} mAP50-95 drop {drop:.2f} pt {verdict} the allowed {max_map_drop:g} pt "
                       f"(float {float_metrics[worst]['map50_95']:.4f}, quantized {quant_metrics[worst]['map50_95']:.4f})."}
