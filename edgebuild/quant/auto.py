"""precision=auto, backend-neutral: the fewest layers kept float (TFLite) / FP16 (TensorRT) whose search-set drop
meets the budget.

The backend supplies `candidates()` (only called when the all-int8 model misses the budget; `rank_by_output` makes
them: a pool of layers with the largest per-layer error of the all-int8, corrected artifact, re-ranked by how much
keeping each one float lowers the error of the model's outputs vs float on a few images) and `drop(layers)`: the mAP50-95 drop in points, float vs the artifact built with those layers
kept float, on the search images (held back from calibration, never the val split). The search:

1. the all-int8 model (no layer float): within budget -> done, zero layers;
2. each candidate alone: its own drop (one artifact each, same calibration ranges and corrections: no
   re-calibration per candidate);
3. greedy: layers in order of their measured single-layer drop are added one at a time until the drop is
   within budget or max_layers is reached.

The result is the first point within budget; when none is, the point with the lowest drop (budget_met false).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Candidate:
    layer: str        # what precision.float_layers takes for this layer
    label: str        # short description for the report (op type, tensor)
    score: float      # sensitivity from the per-layer error (higher = more sensitive)


def output_noise(outputs: Iterable[dict], reference: list[dict]) -> float:
    """Relative noise energy of a model's outputs vs the float model's on the same images: sum over outputs of
    sum((f - q)^2) / sum(f^2) (images pooled; each output counts alike whatever its scale)."""
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    for out, ref in zip(outputs, reference, strict=True):
        for name, f in ref.items():
            f = np.asarray(f, np.float64)
            e = f - np.asarray(out[name], np.float64)
            signal[name] = signal.get(name, 0.0) + float(np.vdot(f, f))
            noise[name] = noise.get(name, 0.0) + float(np.vdot(e, e))
    return sum(noise[k] / signal[k] for k in signal if signal[k] > 0)


def rank_by_output(pool: list[Candidate], noise: Callable[[list[str]], float], count: int,
                   progress: Callable[[int, int, str], None] | None = None) -> list[Candidate]:
    """The `count` layers of `pool` whose float version lowers the output noise most; score = dB of output SQNR
    gained vs all-int8 (noise(layers) as from output_noise)."""
    base = noise([])
    scored = []
    for i, c in enumerate(pool, 1):
        n = noise([c.layer])
        gain = 10 * math.log10(base / n) if n > 0 and base > 0 else (99.0 if base > 0 else 0.0)
        scored.append(Candidate(c.layer, c.label, round(gain, 3)))
        if progress:
            progress(i, len(pool), "candidates ranked")
    return sorted(scored, key=lambda c: (-c.score, c.layer))[:count]


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
