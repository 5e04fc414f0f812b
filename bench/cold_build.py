"""Cost of a cold build (empty cache) through the real CLI: wall time, peak RSS of the largest process, step times.

    python bench/cold_build.py --recipe imx93_det --variants default calibration.correction=none

Each variant runs `edgebuild +recipe=R [override]` in a fresh cache and is written to bench/cold_build.json
(the calibset and the Python import caches are cold too). Peak RSS is the largest ru_maxrss of the CLI and its step
processes (getrusage of the children), i.e. the memory one build needs at its peak.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cold(recipe: str, override: str | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="edgebuild-cold-"))
    cmd = [str(Path(sys.executable).parent / "edgebuild"), f"+recipe={recipe}", f"hydra.run.dir={tmp / 'run'}",
           f"build.cache_dir={tmp / 'cache'}", *([override] if override else [])]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"})
    wall = time.monotonic() - t0
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    plan = json.loads((tmp / "run" / "plan.json").read_text())
    rep = json.loads((tmp / "run" / "report.json").read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    return {"recipe": recipe, "override": override or "default", "wall_s": round(wall, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
            "steps_s": {s["name"]: s["seconds"] for s in plan["steps"]},
            "drop_pt": rep["deltas"]["bbox"]["map50_95"], "gate": rep["gate"]["passed"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="imx93_det")
    ap.add_argument("--variants", nargs="+", default=["default", "calibration.correction=none"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "cold_build.json"))
    a = ap.parse_args()
    rows = []
    for v in a.variants:  # one process per variant, so ru_maxrss of the children is that build's own
        out = subprocess.run([sys.executable, __file__, "--one", a.recipe, v], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    Path(a.out).write_text(json.dumps({"machine": f"{os.cpu_count()} cores", "runs": rows}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(cold(sys.argv[2], None if sys.argv[3] == "default" else sys.argv[3])))
    else:
        main()
