"""Train the demo detector shipped as edgebuild/demo/yolov8n-demo-det.pt (run by a maintainer, not at build time).

    YOLO_OFFLINE=1 python -m edgebuild.demo.train [--epochs 12 --n-train 600 --work /tmp/edgebuild-demo-train]

YOLOv8n from the architecture yaml (no pretrained weights, nothing downloaded), trained on CPU at imgsz 256
on a draw of edgebuild.demo.synth with TRAIN_SEED (different from the demo dataset's seed 0, so the demo
val split is never seen in training), then validated with Ultralytics on the demo val split (seed 0).
The optimizer-stripped checkpoint is copied next to this file; the metrics go to demo_metrics.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from edgebuild.demo import synth

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "yolov8n-demo-det.pt"
TRAIN_SEED = 1
DEMO_SEED = synth.DEMO_SEED
MAX_BYTES = 7 * 1024 * 1024


def _data_yaml(work: Path, n_train: int) -> Path:
    """Training images from TRAIN_SEED, val images = the demo val split (DEMO_SEED)."""
    train_dir = work / f"train-seed{TRAIN_SEED}-{n_train}"
    val_dir = work / f"demo-seed{DEMO_SEED}"
    if not (train_dir / "data.yaml").exists():
        synth.generate(train_dir, seed=TRAIN_SEED, n_train=n_train, n_val=0)
    if not (val_dir / "data.yaml").exists():
        synth.generate(val_dir, seed=DEMO_SEED, n_train=synth.DEMO_TRAIN, n_val=synth.DEMO_VAL,
                       imgsz=synth.DEMO_IMGSZ)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(synth.NAMES))
    y = work / "train.yaml"
    y.write_text(f"path: {work}\ntrain: {train_dir / 'images/train'}\nval: {val_dir / 'images/val'}\n"
                 f"names:\n{names}")
    return y


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="train the edgebuild demo detector")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgebuild-demo-train"))
    a = ap.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    a.work.mkdir(parents=True, exist_ok=True)
    data = _data_yaml(a.work, a.n_train)
    t0 = time.time()
    model = YOLO("yolov8n.yaml")
    model.train(data=str(data), epochs=a.epochs, imgsz=a.imgsz, batch=16, device="cpu", workers=0,
                plots=False, val=False, pretrained=False, amp=False, seed=0, deterministic=True,
                project=str(a.work / "runs"), name="det", exist_ok=True, verbose=False)
    train_s = time.time() - t0
    last = a.work / "runs" / "det" / "weights" / "last.pt"  # Ultralytics strips the optimizer at the end
    if last.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{last} is {last.stat().st_size} bytes, over the 7 MB budget")
    shutil.copyfile(last, WEIGHTS)
    m = YOLO(str(WEIGHTS)).val(data=str(data), imgsz=a.imgsz, conf=0.001, iou=0.7, device="cpu", workers=0,
                              plots=False, batch=16, project=str(a.work / "runs"), name="val", exist_ok=True)
    metrics = {"epochs": a.epochs, "n_train": a.n_train, "train_seed": TRAIN_SEED, "imgsz": a.imgsz,
               "val": f"demo val split (synth seed {DEMO_SEED}, {synth.DEMO_VAL} images)",
               "mAP50": round(float(m.box.map50), 4), "mAP50-95": round(float(m.box.map), 4),
               "train_seconds": round(train_s), "bytes": WEIGHTS.stat().st_size}
    (HERE / "demo_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
