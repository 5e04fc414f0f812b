"""precision=auto: what the search chooses, what it costs, and the val result (issue 17).

    python bench/precision_auto.py                                  # imx93_det and orin_nano_det (YOLOv8n)
    python bench/precision_auto.py --cases imx93_det:model=yolo11n_det

Per case, in a fresh cache through the real CLI: the recipe as shipped (all int8, cold, timed), then the same
recipe with precision=auto (reusing everything the int8 build made). Search cost = the precision_search step's
seconds; ratio = (cold int8 build + search) / cold int8 build (the issue's "build with it vs without it").
The val split is only read by validation, after the search. Written to bench/precision_auto.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGEBUILD = str(Path(sys.executable).parent / "edgebuild")


def build(recipe: str, overrides: list[str], cache: Path, run: Path) -> tuple[float, dict, dict]:
    cmd = [EDGEBUILD, f"+recipe={recipe}", f"hydra.run.dir={run}", f"build.cache_dir={cache}", *overrides]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "YOLO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall = time.monotonic() - t0
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return wall, json.loads((run / "plan.json").read_text()), json.loads((run / "report.json").read_text())


def case(spec: str) -> dict:
    recipe, _, extra = spec.partition(":")
    overrides = [o for o in extra.split(",") if o]
    tmp = Path(tempfile.mkdtemp(prefix="edgebuild-auto-"))
    try:
        t_int8, _, rep8 = build(recipe, overrides, tmp / "cache", tmp / "int8")
        t_auto, plan, rep = build(recipe, overrides + ["precision=auto"], tmp / "cache", tmp / "auto")
        search = json.loads((tmp / "auto" / "artifacts" / "search.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    secs = {s["name"]: s["seconds"] for s in plan["steps"]}
    comp = rep.get("compile") or {}
    summary = (comp.get("compiler") or {}).get("summary") or {}
    return {
        "case": spec, "int8_cold_s": round(t_int8, 1), "auto_after_int8_s": round(t_auto, 1),
        "search_s": secs.get("precision_search"), "ratio": round((t_int8 + secs["precision_search"]) / t_int8, 3),
        "evaluations": search["evaluations"], "search_images": search["images"], "budget_pt": search["budget"],
        "chosen": search["float_layers"], "search_drop_pt": search["drop"], "budget_met": search["budget_met"],
        "val_drop_int8_pt": rep8["gate"]["drop"], "val_drop_auto_pt": rep["gate"]["drop"],
        "gate": rep["gate"]["passed"], "metric": rep["gate"]["metric"],
        "vela_cpu_ops": summary.get("cpu_ops"), "vela_npu_ops": summary.get("npu_ops"), "vela_est_ms": summary.get("est_ms"),
        "cost": search["cost"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="+", default=["imx93_det", "orin_nano_det"],
                    help="RECIPE[:override,override...]")
    ap.add_argument("--out", default=str(ROOT / "bench" / "precision_auto.json"))
    a = ap.parse_args()
    out = Path(a.out)
    rows = json.loads(out.read_text())["runs"] if out.is_file() else []
    for spec in a.cases:
        row = case(spec)
        rows = [r for r in rows if r["case"] != spec] + [row]
        print(json.dumps(row), flush=True)
        out.write_text(json.dumps({"machine": f"{os.cpu_count()} cores", "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
