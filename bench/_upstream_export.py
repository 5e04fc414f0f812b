"""Child process of bench/run_all.py: Ultralytics' own INT8 TFLite export of the shapes-hard detector.

    python bench/_upstream_export.py --work DIR --n N [--format saved_model|tflite] [--imgsz 320]

Runs in DIR (its cwd): copies the checkpoint there (Ultralytics writes exports next to the weights), writes the onnx2tf
sample-calibration file (so onnx2tf downloads nothing), a dataset view whose `val` entry is a list of N train images
(Ultralytics' exporter calibrates on `args.split or "val"`; the N images are edgebuild's own seeded calibset draw, so both
tools calibrate on the same pixels), then calls YOLO(...).export(...). Prints one JSON line: {"files": [...]}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
WEIGHTS = SHARED / "weights" / "shapes-hard-yolov8n-det.pt"
DATA = SHARED / "shapes-hard"
SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def calib_images(n: int) -> list[str]:
    """edgebuild's seeded calibset draw of n train images (same images as `edgebuild ... calibration.count=n`)."""
    from omegaconf import OmegaConf

    from edgebuild import schema
    from edgebuild.steps.calibset import build_manifest

    cfg = schema.validate(OmegaConf.create({"dataset": {"path": str(DATA / "data.yaml")}, "calibration": {"count": n}}))
    return [it["path"] for it in build_manifest(cfg)["items"]]


def dataset_view(work: Path, n: int) -> Path:
    """A data.yaml whose val split is n train images; labels reached through symlinks so Ultralytics' label cache is
    written into `work`, never into the read-only shared dataset."""
    import yaml

    ds = work / "ds"
    (ds / "images").mkdir(parents=True, exist_ok=True)
    (ds / "labels").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            link = ds / kind / split
            if not link.exists():
                link.symlink_to(DATA / kind / split)
    paths = [str(ds / "images" / "train" / Path(p).name) for p in calib_images(n)]
    (work / f"calib_{n}.txt").write_text("\n".join(paths) + "\n")
    names = yaml.safe_load((DATA / "data.yaml").read_text())["names"]
    y = work / f"calib_{n}.yaml"
    y.write_text(yaml.safe_dump({"path": str(ds), "train": "images/train", "val": str(work / f"calib_{n}.txt"),
                                 "names": names}))
    return y


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--format", default="saved_model")
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    a = ap.parse_args()
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    import numpy as np

    if not Path(SAMPLE).is_file():
        np.save(SAMPLE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    w = work / a.weights.name
    if not w.is_file():
        shutil.copy2(a.weights, w)
    data = dataset_view(work, a.n)
    from ultralytics import YOLO

    out = YOLO(str(w)).export(format=a.format, int8=True, imgsz=a.imgsz, data=str(data), batch=1)
    files = sorted(str(p) for p in work.rglob("*.tflite"))
    print(json.dumps({"export_returned": str(out), "files": files}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
