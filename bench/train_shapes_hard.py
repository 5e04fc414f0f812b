"""Train a YOLO on shapes-hard from scratch on the CPU (seeded), as the shared weights were; validate with Ultralytics.

    YOLO_OFFLINE=1 nice -n 19 python -m bench.train_shapes_hard --arch yolo11n-seg --hours 0.55 \
        --out /tmp/shapes-hard-yolo11n-seg.pt

The architecture comes from Ultralytics' packaged yaml (no pretrained weights, nothing downloaded); `--hours` caps the
wall time (Ultralytics' `time`: the LR schedule is fitted to it), `--epochs` bounds it otherwise. `--init` starts
from a checkpoint's matching layers (the YOLO11n-seg is trained from the YOLO11n detector: backbone, neck and box/class
head carry over, the mask branch and protos learn from scratch). Training uses
shapes-hard/train (1000 images) only, so val stays unseen. Writes the optimizer-stripped last.pt to --out and
<out>.json with the wall time and Ultralytics' val metrics (imgsz 320, conf 0.001, iou 0.7, as reference_metrics.json).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "shapes-hard"


def _data_yaml(work: Path, data: Path) -> Path:
    """Ultralytics resolves a relative `path:` against its own datasets dir; write absolute paths."""
    import yaml

    d = yaml.safe_load((data / "data.yaml").read_text())
    y = work / "data.yaml"
    y.write_text(yaml.safe_dump({"path": str(data), "train": str(data / d["train"]), "val": str(data / d["val"]),
                                 "names": d["names"]}))
    return y


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="train a YOLO on shapes-hard (CPU, from scratch, seeded)")
    ap.add_argument("--arch", default="yolo11n-seg", help="Ultralytics model yaml stem, e.g. yolo11n-seg, yolo11n")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--hours", type=float, default=None, help="wall-time cap (overrides --epochs)")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgebuild-train-shapes-hard"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this checkpoint (layers matching by name and shape, e.g. a detector's backbone, "
                         "neck and box/class head for a -seg model); from scratch otherwise")
    a = ap.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    a.work.mkdir(parents=True, exist_ok=True)
    data = _data_yaml(a.work, a.data.resolve())
    t0 = time.time()
    model = YOLO(f"{a.arch}.yaml")
    extra = {"time": a.hours} if a.hours else {}
    model.train(data=str(data), epochs=a.epochs, imgsz=a.imgsz, batch=16, device="cpu", workers=0, plots=False,
                val=False, pretrained=str(a.init) if a.init else False, amp=False, seed=0, deterministic=True, project=str(a.work / "runs"),
                name=a.arch, exist_ok=True, verbose=False, **extra)
    train_s = time.time() - t0
    last = a.work / "runs" / a.arch / "weights" / "last.pt"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(last, a.out)
    m = YOLO(str(a.out)).val(data=str(data), imgsz=a.imgsz, conf=0.001, iou=0.7, device="cpu", workers=0,
                             plots=False, batch=16, project=str(a.work / "runs"), name="val", exist_ok=True)
    metrics = {"arch": a.arch, "epochs_cap": a.epochs, "hours_cap": a.hours, "imgsz": a.imgsz, "seed": 0,
               "init": a.init.name if a.init else None, "train": f"{a.data.name}/train", "train_seconds": round(train_s), "bytes": a.out.stat().st_size,
               "val": {"box_map50": round(float(m.box.map50), 4), "box_map50_95": round(float(m.box.map), 4)}}
    if hasattr(m, "seg"):
        metrics["val"].update(mask_map50=round(float(m.seg.map50), 4), mask_map50_95=round(float(m.seg.map), 4))
    a.out.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
