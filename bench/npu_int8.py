"""All-int8 recipes (TFLite for the NPUs, QDQ for TensorRT) over calibration draws, on shapes-hard/val and on the independent shapes-hard-val2 draw.

For each recipe and calibration.seed: `edgebuild +recipe=R calibration.seed=S [overrides]` (val numbers from its
report.json), then the same run's float ONNX (export step) and .tflite scored on val2 by the same evaluator
(bench/_shared.box_metrics). Writes bench/npu_int8.json. Usage:

    python bench/npu_int8.py --recipes imx93_det imx8mp_det --seeds 0 1 2 [-- extra overrides]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
VAL2 = ROOT.parent / "shared" / "data" / "shapes-hard-val2" / "data.yaml"


def build(recipe: str, seed: int, overrides: list[str], run_dir: Path) -> dict:
    cmd = [str(Path(sys.executable).parent / "edgebuild"), f"+recipe={recipe}", f"calibration.seed={seed}",
           f"hydra.run.dir={run_dir}", *overrides]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"})
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return {"seconds": round(time.monotonic() - t0, 1), "report": json.loads((run_dir / "report.json").read_text()),
            "plan": json.loads((run_dir / "plan.json").read_text())}


def val2(run: dict, run_dir: Path) -> dict:
    from _shared import box_metrics

    export = Path(next(s["entry"] for s in run["plan"]["steps"] if s["name"] == "export"))
    meta = json.loads((run_dir / "artifacts" / "meta.json").read_text())
    imgsz = meta["imgsz"]
    f = box_metrics(export / "model.onnx", json.loads((export / "meta.json").read_text()), VAL2, imgsz)
    artifact = next(run_dir / "artifacts" / n for n in ("model.tflite", "model_qdq.onnx")
                    if (run_dir / "artifacts" / n).is_file())
    q = box_metrics(artifact, meta, VAL2, imgsz)
    return {"float": round(f["map50_95"], 4), "int8": round(q["map50_95"], 4),
            "drop": round((q["map50_95"] - f["map50_95"]) * 100, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", nargs="+", default=["imx93_det", "imx8mp_det"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "bench" / "npu_int8.json"))
    ap.add_argument("--runs", default="/tmp/edgebuild-npu-int8")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    out = Path(a.out)
    rows = json.loads(out.read_text()) if out.is_file() else []
    for recipe in a.recipes:
        for seed in a.seeds:
            run_dir = Path(a.runs) / f"{recipe}-{seed}-{'_'.join(a.overrides) or 'default'}".replace("/", "_")
            run = build(recipe, seed, a.overrides, run_dir)
            rep = run["report"]
            d = rep["deltas"]
            row = {"recipe": recipe, "seed": seed, "overrides": a.overrides, "seconds": run["seconds"],
                   "val": {"float": rep["float"]["bbox"]["map50_95"], "int8": rep["quantized"]["bbox"]["map50_95"],
                           "drop": d["bbox"]["map50_95"], **({"mask_drop": d["segm"]["map50_95"]} if "segm" in d else {})},
                   "integer_only": next((c["ok"] for c in (rep.get("compile") or {}).get("quantization_checks", [])
                                         if c["name"] == "integer_only"), None),
                   "vela_cpu_ops": (((rep.get("compile") or {}).get("compiler") or {}).get("summary") or {}).get("cpu_ops"),
                   "correction": (rep.get("mixed_precision") or {}).get("correction")}
            if rep["model"]["task"] == "detect":
                row["val2"] = val2(run, run_dir)
            print(json.dumps({k: row[k] for k in ("recipe", "seed", "overrides", "val", "seconds")}
                             | {"val2": row.get("val2")}), flush=True)
            rows = [r for r in rows if (r["recipe"], r["seed"], r["overrides"]) != (recipe, seed, a.overrides)]
            rows.append(row)
            out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
