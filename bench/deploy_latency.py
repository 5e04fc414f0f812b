"""Per-stage latency of the deploy runner (preprocess / invoke / decode+NMS / masks) for the cpu_det, imx93_det and
imx95_seg bundles on this machine's CPU (LiteRT, 1 thread, as validation).

    python bench/deploy_latency.py                      # builds the three bundles (cheap calibration), -> JSON
    python bench/deploy_latency.py --work /tmp/dl       # reuse builds from an earlier run

The bundles are built by tests/quick_build.py with calibration.count=8 and calibration.correction=none: the same
graph, ops and quantized tensor types as the shipped recipes (latency does not depend on the calibration values).
Two measurements per bundle, each in a fresh `python -m edgebuild.deploy` process run from the bundle directory:
`bench` (the CLI: one image, sample.jpg, N runs after a warm-up) and a sweep over 50 val images (each stage's
median and p90 across images, at conf 0.25), written to bench/deploy_latency.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("cpu_det", "imx93_det", "imx95_seg")
CHEAP = ("calibration.count=8", "calibration.correction=none", "validation.max_images=50",
         "validation.latency_runs=1", "validation.layer_error_images=1")
SWEEP = """
import json, sys, numpy as np
from edgebuild.deploy import load
m = load('.')
images = sys.argv[1:]
for im in images[:5]:
    m.predict(im)
stages = {}
for im in images:
    r = m.predict(im, conf=0.25)
    for k, v in {**r.ms, 'total': sum(r.ms.values())}.items():
        stages.setdefault(k, []).append(v)
print(json.dumps({k: {'median_ms': round(float(np.median(v)), 3), 'p90_ms': round(float(np.percentile(v, 90)), 3)}
                  for k, v in stages.items()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=None, help="build dir (default: a new temp dir)")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "bench" / "deploy_latency.json"))
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="edgebuild-deploy-"))
    env = {**os.environ, "YOLO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    missing = [r for r in RECIPES if not (work / r / "deploy" / "meta.json").is_file()]
    if missing:
        subprocess.run([sys.executable, "-m", "tests.quick_build", str(work), str(work / "cache"), "deploy,validate",
                        *missing, "--", *CHEAP], cwd=ROOT, env=env, check=True)
    clean = {k: v for k, v in env.items() if k != "PYTHONPATH"}   # each bundle runs its own edgebuild/ copy
    rows = []
    for recipe in RECIPES:
        bundle = work / recipe / "deploy"
        plan = json.loads((work / recipe / "plan.json").read_text())
        entry = Path(next(s["entry"] for s in plan["steps"] if s["name"] == "validate"))
        images = [im["image"] for im in json.loads((entry / "detections.json").read_text())["images"]]
        one = subprocess.run([sys.executable, "-m", "edgebuild.deploy", "bench", ".", "--runs", str(a.runs), "--json"],
                             cwd=bundle, env=clean, capture_output=True, text=True, check=True)
        blas = {v: clean.get(v, "1") for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        sweep = subprocess.run([sys.executable, "-c", SWEEP, *images], cwd=bundle, env={**clean, **blas},
                               capture_output=True, text=True, check=True)   # as `python -m edgebuild.deploy` sets
        b = json.loads(one.stdout.strip().splitlines()[-1])
        rows.append({"recipe": recipe, "model": b["model"], "runtime": b["runtime"], "threads": b["threads"],
                     "bench_sample": {"runs": b["runs"], "detections": b["detections"], "stages": b["stages"]},
                     "val_images": {"images": len(images), "stages": json.loads(sweep.stdout.strip().splitlines()[-1])}})
        print(json.dumps(rows[-1]), flush=True)
    Path(a.out).write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
                                       "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                                       "python": platform.python_version(), "conf": 0.25, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
