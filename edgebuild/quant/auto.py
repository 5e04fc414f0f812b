"""precision=auto, backend-neutral: the fewest layers kept float (TFLite) / FP16 (TensorRT) whose search-set drop
meets the budget.

The backend supplies `candidates()` (layers ranked by per-layer error of the all-int8, corrected artifact, most
sensitive first; only called when the all-int8 model misses the budget) and `drop(layers)`: the mAP50-95 drop in points, float vs the artifact built with those layers
kept float, on the search images (held back from calibration, never the val split). The search:

1. the all-int8 model (no layer float): within budget -> done, zero layers;
2. each candidate alone: its own drop (one artifact each, same calibration ranges and corrections: no
   re-calibration per candidate);
3. greedy: layers in order of their measured single-layer drop are added one at a time until the drop is
   within budget or max_layers is reached.

The result is the first point within budget; when none is, the point with the lowest drop (budget_met false).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    layer: str        # what precision.float_layers takes for this layer
    label: str        # short description for the report (op type, tensor)
    score: float      # sensitivity from the per-layer error (higher = more sensitive)


def search(candidates: Callable[[], list[Candidate]], drop: Callable[[list[str]], float], budget: float, max_layers: int,
           progress: Callable[[int, int, str], None] | None = None) -> dict:
    """-> {"float_layers", "drop", "budget", "budget_met", "curve": [{"layers", "drop"}], "singles": [...]}."""
    total, done = 1, 0

    def evaluate(layers: list[str]) -> float:
        nonlocal done
        value = round(float(drop(layers)), 3)
        done += 1
        if progress:
            progress(done, total, "candidates evaluated")
        return value

    curve = [{"layers": [], "drop": evaluate([])}]
    singles: list[dict] = []
    ranked = candidates() if curve[0]["drop"] > budget and max_layers > 0 else []
    total += len(ranked) + max(0, max_layers - 1) if ranked else 0
    if ranked:
        for c in ranked:
            singles.append({"layer": c.layer, "label": c.label, "score": c.score, "drop": evaluate([c.layer])})
        order = sorted(singles, key=lambda r: (r["drop"], -r["score"]))
        curve.append({"layers": [order[0]["layer"]], "drop": order[0]["drop"]})
        for r in order[1:max_layers]:
            if curve[-1]["drop"] <= budget:
                break
            layers = curve[-1]["layers"] + [r["layer"]]
            curve.append({"layers": layers, "drop": evaluate(layers)})
    within = [p for p in curve if p["drop"] <= budget]
    best = within[0] if within else min(curve, key=lambda p: (p["drop"], len(p["layers"])))
    return {"float_layers": best["layers"], "drop": best["drop"], "budget": budget, "budget_met": bool(within),
            "evaluations": done, "curve": curve, "singles": singles}
