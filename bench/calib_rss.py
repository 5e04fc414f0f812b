"""Peak RSS of streaming 100 vs 1000 calibration images (shapes-hard train), each in a fresh subprocess.

    python bench/calib_rss.py [--data ../shared/data/shapes-hard/data.yaml] [--imgsz 320]

Writes bench/calib_rss.json. Streaming must keep peak RSS flat in N: the two peaks must differ by < 10%.
(Holding 1000 float32 320x320x3 tensors instead would need 1000 * 1.2 MB = 1.2 GB.)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from edgebuild.data.stream import iter_calibration
t = time.perf_counter(); n = 0; s = 0.0
for x in iter_calibration({manifest!r}, {imgsz}, "float32", "NCHW"):
    n += 1; s += float(x[0, 0, 0, 0])
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t)
"""


def measure(manifest: Path, imgsz: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), manifest=str(manifest), imgsz=imgsz)],
                         check=True, capture_output=True, text=True).stdout.split()
    n, rss_kib, secs = int(out[0]), int(out[1]), float(out[2])
    return {"images": n, "peak_rss_mib": round(rss_kib / 1024, 1), "seconds": round(secs, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "shapes-hard" / "data.yaml")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "calib_rss.json")
    a = ap.parse_args(argv)
    from omegaconf import OmegaConf

    from edgebuild import schema
    from edgebuild.steps.calibset import build_manifest

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (100, 1000):
            cfg = schema.validate(OmegaConf.create({"dataset": {"path": str(a.data)}, "calibration": {"count": n}}))
            mp = Path(tmp) / f"manifest_{n}.json"
            mp.write_text(json.dumps(build_manifest(cfg)))
            results[n] = measure(mp, a.imgsz)
    lo, hi = results[100]["peak_rss_mib"], results[1000]["peak_rss_mib"]
    growth = (hi - lo) / lo
    report = {"dataset": str(a.data), "imgsz": a.imgsz, "n100": results[100], "n1000": results[1000],
              "rss_growth": round(growth, 4), "passed": abs(growth) < 0.10, "python": sys.version.split()[0],
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
