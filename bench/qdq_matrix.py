"""QDQ accuracy matrix: float ONNX vs TensorRT-style QDQ ONNX (calibration method x precision) in onnxruntime.

    .venv/bin/python bench/qdq_matrix.py --onnx model.onnx --data ../shared/data/shapes-hard \
        --calib 300 --methods minmax entropy percentile --mixed '/model.22/cv2*'

`--onnx` is the export step's model.onnx (its meta.json beside it), split_ltrb layout; `--from-pt weights.pt` runs
edgebuild's export on an Ultralytics checkpoint instead. Box mAP50-95 is COCO protocol on the dataset's val split,
through edgebuild's own runtime and evaluator (the validate step's code), float and QDQ alike.
Calibration images are the first `--calib` train images in sorted order, or with `--manifest` the images of a
calibset manifest.json (what `edgebuild +recipe=orin_nano_det` calibrates on), streamed one at a time.
`--sensitivity` ranks Conv inputs (or `--candidates` patterns) by how much of the all-int8 output error keeping
each one float removes, on `--held` train images outside the calibration set (how conf/precision/mixed_trt.yaml
was chosen, docs/tensorrt.md).
The calibration draw matters at this scale: minmax int8 is -1.25 pt on the first 300 sorted images and -1.03 pt
on the recipe's seeded 300-image draw (both without correction, `--correction none`).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _shared import box_metrics, export_checkpoint  # noqa: E402  (bench/ is on sys.path as the script's dir)

from edgebuild.quant.calibrators import make_calibrator  # noqa: E402
from edgebuild.data.preprocess import preprocess  # noqa: E402
from edgebuild.tensorrt import calib_cache, qdq  # noqa: E402
from edgebuild.quant.correction import correct  # noqa: E402
from edgebuild.quant.finetune import finetune  # noqa: E402


def tensor(path: Path, imgsz: int):
    return preprocess(str(path), imgsz)[0]


def calibrate(onnx_path: Path, images: list[Path], method: str, imgsz: int) -> tuple[dict, float]:
    model = __import__("onnx").load(str(onnx_path))
    tensors = qdq.calibration_tensors(model)
    cal = make_calibrator(method, percentile=99.99, num_bins=2048)
    t0 = time.time()
    stream = (tensor(p, imgsz) for p in images)
    ranges, _ = qdq.collect_ranges(onnx_path, tensors, stream, cal)
    return ranges, time.time() - t0


def sensitivity(onnx_path: Path, ranges: dict, held: list[Path], imgsz: int, candidates: list[str], out: Path) -> list:
    """Leave-one-out: QDQ with every conv int8 except the candidate (a node name or float_layers pattern); the
    relative squared error of `scores` (all anchors) and `boxes` (anchors with float score > 0.2) vs the float
    model on `held` images; returns rows sorted by the share of the all-int8 error removed (most sensitive first)."""
    import onnx
    import onnxruntime as ort

    xs = [tensor(p, imgsz) for p in held]

    def run(path):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return [dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x}))) for x in xs]

    ref = run(onnx_path)

    def error(res):
        es = eb = 0.0
        for q, f in zip(res, ref):
            sq, sf, bq, bf = q["scores"][0], f["scores"][0], q["boxes"][0], f["boxes"][0]
            es += float(((sq - sf) ** 2).sum()) / float((sf ** 2).sum() + 1e-9)
            fg = sf.max(1) > 0.2
            if fg.any():
                eb += float(((bq[fg] - bf[fg]) ** 2).sum()) / float((bf[fg] ** 2).sum())
        return es / len(res), eb / len(res)

    model = onnx.load(str(onnx_path))
    path = out / "sensitivity.onnx"
    full = qdq.plan_quantization(model, [])
    qdq.write_qdq(onnx_path, path, ranges, full)
    base = error(run(path))
    rows = []
    for cand in candidates or full.quantized:
        qdq.write_qdq(onnx_path, path, ranges, qdq.plan_quantization(model, [cand]))
        es, eb = error(run(path))
        gain = (base[0] - es) / max(base[0], 1e-12) + (base[1] - eb) / max(base[1], 1e-12)
        rows.append({"float": cand, "score_err": es, "box_err": eb, "gain": gain})
        print(f"{gain:+.3f}  {cand}", flush=True)
    return sorted(rows, key=lambda r: -r["gain"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", type=Path)
    ap.add_argument("--from-pt", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--val", type=int, default=0, help="0 = whole val split")
    ap.add_argument("--methods", nargs="+", default=["minmax", "entropy"])
    ap.add_argument("--manifest", type=Path, help="calibset manifest.json: calibrate on its images (the recipe's "
                    "seeded draw) instead of the first --calib train images in sorted order")
    ap.add_argument("--mixed", nargs="*", default=[], help="float_layers patterns for one mixed row per method")
    ap.add_argument("--sensitivity", action="store_true", help="instead of the matrix: leave-one-out sensitivity "
                    "of each --methods calibration on --held train images outside the calibration set")
    ap.add_argument("--candidates", nargs="*", default=[], help="with --sensitivity: node names / patterns to try "
                    "(default: every quantized conv)")
    ap.add_argument("--held", type=int, default=64)
    ap.add_argument("--correction", choices=("none", "bias", "weights", "finetune"), default="none",
                    help="matrix rows: correct the int8 convs after calibration, as the qdq step does "
                    "(calibration.correction)")
    ap.add_argument("--correction-images", type=int, default=64, help="first N calibration images for --correction")
    ap.add_argument("--correction-steps", type=int, default=400, help="training steps for --correction finetune")
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="qdq_matrix_")))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    export_dir = a.onnx.parent if a.onnx else export_checkpoint(a.from_pt, "split_ltrb", a.imgsz, a.out / "export")
    onnx_path = a.onnx or export_dir / "model.onnx"
    if not (export_dir / "meta.json").is_file():
        raise SystemExit(f"{export_dir / 'meta.json'} is missing: --onnx takes the export step's model.onnx "
                         "(its meta.json beside it describes the outputs), or use --from-pt weights.pt")
    meta = json.loads((export_dir / "meta.json").read_text())
    import onnx

    model = onnx.load(str(onnx_path))
    data_yaml, n_val = a.data / "data.yaml", a.val or None

    def score(path: Path) -> dict:
        t0 = time.time()
        m = box_metrics(path, meta, data_yaml, a.imgsz, n_val)
        return {"map50_95": m["map50_95"], "map50": m["map50"], "seconds": round(time.time() - t0, 1)}

    if a.manifest:
        calib = [Path(it["path"]) for it in json.loads(a.manifest.read_text())["items"]]
    else:
        calib = sorted((a.data / "images" / "train").glob("*.jpg"))[: a.calib]
    if a.sensitivity:
        used = {str(p) for p in calib}
        held = [p for p in sorted((a.data / "images" / "train").glob("*.jpg")) if str(p) not in used][: a.held]
        result = {}
        for method in a.methods:
            ranges, _ = calibrate(onnx_path, calib, method, a.imgsz)
            result[method] = sensitivity(onnx_path, ranges, held, a.imgsz, a.candidates, a.out)
            print(f"\n{method}: most sensitive first")
            for r in result[method][:10]:
                print(f"  {r['gain']:+.3f}  {r['float']}")
        if a.json:
            a.json.write_text(json.dumps(result, indent=1))
        return
    rows = [{"model": "float", **score(onnx_path)}]
    print(rows[-1], flush=True)
    for method in a.methods:
        ranges, secs = calibrate(onnx_path, calib, method, a.imgsz)
        variants = [("int8", [])] + ([("mixed", a.mixed)] if a.mixed else [])
        for mode, layers in variants:
            plan = qdq.plan_quantization(model, layers)
            path = a.out / f"{method}_{mode}.onnx"
            info = qdq.write_qdq(onnx_path, path, ranges, plan)
            fix_s = 0.0
            if a.correction != "none":
                q = onnx.load(str(path))
                xs = [tensor(p, a.imgsz) for p in calib[: a.correction_images]]
                t0 = time.time()
                if a.correction == "finetune":
                    finetune(model, q, plan.quantized, xs, a.correction_steps)
                else:
                    correct(model, q, plan.quantized, xs, a.correction)
                fix_s = time.time() - t0
                onnx.save(q, str(path))
            calib_cache.write_cache(a.out / f"{method}.cache", ranges, method)
            r = score(path)
            rows.append({"model": f"{method} {mode}", **r, "drop_pt": round(100 * (r["map50_95"] - rows[0]["map50_95"]), 2),
                         "calib_s": round(secs, 1), "correction_s": round(fix_s, 1), "q_convs": len(plan.quantized), **info})
            print(rows[-1], flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n| model | box mAP50-95 | mAP50 | drop (pt) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['map50_95']:.4f} | {r['map50']:.4f} | {r.get('drop_pt', 0):+.2f} |")
    print(f"peak RSS {rss:.0f} MB, {len(calib)} calibration images, {n_val or 'all'} val images")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "peak_rss_mb": rss}, indent=1))


if __name__ == "__main__":
    main()
