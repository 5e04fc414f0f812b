"""Layout x calibration-method matrix for the TFLite backend (docs/tflite.md has the measured table).

    python bench/tflite_matrix.py export --layout split_ltrb --work /tmp/tflm      # torch process
    python bench/tflite_matrix.py run --layout split_ltrb --work /tmp/tflm \
        --variants minmax percentile entropy percentile+>SOFTMAX                    # TensorFlow process

shapes-hard det weights, imgsz 320, calibration = 300 train images (seeded draw), box mAP50-95 on the 400 val
images, float TFLite of the same SavedModel and each INT8 model scored by the same evaluator
(edgebuild.metrics.evaluate + edgebuild.runtime). Results append to <work>/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _shared import box_metrics, export_checkpoint  # noqa: E402  (bench/ is on sys.path as the script's dir)

DATA = ROOT.parent / "shared" / "data"
WEIGHTS = DATA / "weights" / "shapes-hard-yolov8n-det.pt"
IMGSZ = 320


def do_export(layout: str, work: Path) -> None:
    export_checkpoint(WEIGHTS, layout, IMGSZ, work / layout)


def calibration_files(n: int, seed: int = 0) -> list[Path]:
    import numpy as np

    files = sorted((DATA / "shapes-hard" / "images" / "train").iterdir())
    idx = np.random.default_rng(seed).choice(len(files), n, replace=False)
    return [files[i] for i in sorted(idx)]


def evaluate(path: Path, meta: dict) -> float:
    return box_metrics(path, meta, DATA / "shapes-hard" / "data.yaml", IMGSZ)["map50_95"]


def do_run(layout: str, work: Path, variants: list[str], n_calib: int) -> None:
    from edgebuild.data.preprocess import preprocess
    from edgebuild.tflite import quantize
    from edgebuild.tflite.convert import check_against_onnx, onnx_to_saved_model, sample_images

    d = work / layout
    meta = json.loads((d / "meta.json").read_text())
    sm = d / "saved_model"
    if not sm.exists():
        info = onnx_to_saved_model(d / "model.onnx", sm)
        check_against_onnx(d / "model.onnx", sm, sample_images(1, size=IMGSZ, seed=1), info)
    files = calibration_files(n_calib)

    def samples():
        for f in files:
            yield preprocess(str(f), IMGSZ, dtype="float32", layout="NHWC")[0]

    results = work / "results.jsonl"
    for v in variants:
        t0 = time.time()
        if v == "float":
            model, extra = quantize.convert_float(sm), {}
        else:
            method, _, fl = v.partition("+")
            model, built = quantize.build_int8(sm, samples, len(files), method=method, input_shape=[1, IMGSZ, IMGSZ, 3],
                                               float_layers=[fl] if fl else [])
            extra = {"float_ops": len(built["float_ops"])}
        build_s = time.time() - t0
        out = d / f"{v.replace('>', 'gt').replace('+', '_')}.tflite"
        out.write_bytes(model)
        m = evaluate(out, meta)
        row = {"layout": layout, "variant": v, "map50_95": round(m, 4), "build_s": round(build_s, 1),
               "calib_images": n_calib, "size_kb": len(model) // 1024,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, **extra}
        print(json.dumps(row), flush=True)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=("export", "run"))
    ap.add_argument("--layout", default="split_ltrb")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tflite_matrix"))
    ap.add_argument("--variants", nargs="*", default=["float", "minmax", "percentile", "entropy",
                                                       "percentile+>SOFTMAX"])
    ap.add_argument("--calib", type=int, default=300)
    a = ap.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if a.phase == "export":
        do_export(a.layout, a.work)
    else:
        do_run(a.layout, a.work, a.variants, a.calib)


if __name__ == "__main__":
    main()
