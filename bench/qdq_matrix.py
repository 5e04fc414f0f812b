"""QDQ accuracy matrix: float ONNX vs TensorRT-style QDQ ONNX (calibration method x precision) in onnxruntime.

    .venv/bin/python bench/qdq_matrix.py --onnx model.onnx --data ../shared/data/shapes-hard \
        --calib 300 --methods minmax entropy percentile --mixed '/model.22/cv2*'

The ONNX must have the split_ltrb layout (outputs `boxes` [1,N,4] raw DFL distances in grid units and
`scores` [1,N,C]); `--from-pt weights.pt` makes one from an Ultralytics checkpoint when the export step is absent.
Box mAP50-95 is COCO protocol (edgebuild.metrics, faster-coco-eval) on the dataset's val split.
Calibration images are the first `--calib` train images in sorted order, or with `--manifest` the images of a
calibset manifest.json (what `edgebuild +recipe=orin_nano_det` calibrates on), streamed one at a time.
`--sensitivity` ranks Conv inputs (or `--candidates` patterns) by how much of the all-int8 output error keeping
each one float removes, on `--held` train images outside the calibration set (how conf/precision/mixed_trt.yaml
was chosen, docs/tensorrt.md).
The calibration draw matters at this scale: minmax int8 is -1.25 pt on the first 300 sorted images and -1.03 pt
on the recipe's seeded 300-image draw (both without bias correction, `--bias-correction 0`).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgebuild.calibrators import make_calibrator  # noqa: E402
from edgebuild.metrics.coco import category_id, evaluate, ground_truth  # noqa: E402
from edgebuild.metrics.nms import nms  # noqa: E402
from edgebuild.tensorrt import calib_cache, qdq  # noqa: E402
from edgebuild.tensorrt.bias_correction import correct_biases  # noqa: E402

STRIDES = (8, 16, 32)
try:  # decided once, so every model in one run sees the same pixels
    from edgebuild.data.preprocess import preprocess as _PREPROCESS
except ImportError:
    _PREPROCESS = None


def letterbox(path: str, imgsz: int):
    """Ultralytics letterbox (centered, gray 114), RGB, [0, 1] float NCHW; edgebuild.data's when it exists."""
    if _PREPROCESS is not None:
        batch, info = _PREPROCESS(path, imgsz, "float32", "NCHW")
        return batch, (info.scale, info.pad_x, info.pad_y)
    img = cv2.imread(path)
    h, w = img.shape[:2]
    r = min(imgsz / h, imgsz / w)
    nw, nh = round(w * r), round(h * r)
    px, py = (imgsz - nw) / 2, (imgsz - nh) / 2
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = round(py - 0.1), round(px - 0.1)
    img = cv2.copyMakeBorder(img, top, imgsz - nh - top, left, imgsz - nw - left, cv2.BORDER_CONSTANT,
                             value=(114, 114, 114))
    x = img[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.ascontiguousarray(x), (r, left, top)


def samples(data: Path, split: str):
    out = []
    for p in sorted((data / "images" / split).glob("*.jpg")):
        h, w = cv2.imread(str(p)).shape[:2]
        boxes, classes = [], []
        lab = data / "labels" / split / (p.stem + ".txt")
        for line in lab.read_text().splitlines() if lab.exists() else []:
            v = [float(x) for x in line.split()]
            pts = np.asarray(v[1:]).reshape(-1, 2) * (w, h)
            boxes.append([*pts.min(0), *pts.max(0)])
            classes.append(int(v[0]))
        out.append(SimpleNamespace(image_path=p, width=w, height=h, boxes=np.asarray(boxes).reshape(-1, 4),
                                   classes=classes, polygons=None))
    return out


def anchors(imgsz: int):
    pts, strides = [], []
    for s in STRIDES:
        g = imgsz // s
        ys, xs = np.meshgrid(np.arange(g) + 0.5, np.arange(g) + 0.5, indexing="ij")
        pts.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full(g * g, s))
    return np.concatenate(pts).astype(np.float32), np.concatenate(strides).astype(np.float32)[:, None]


def evaluate_model(path: Path, vals, gt, imgsz: int) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ap, st = anchors(imgsz)
    dets = []
    t0 = time.time()
    for img_id, s in enumerate(vals, 1):
        x, (r, px, py) = letterbox(str(s.image_path), imgsz)
        out = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))
        ltrb, scores = out["boxes"][0], out["scores"][0]
        xyxy = np.concatenate([ap - ltrb[:, :2], ap + ltrb[:, 2:]], 1) * st
        d = nms(xyxy, scores, conf=0.001, iou=0.7, max_det=300)
        b = (d.boxes - [px, py, px, py]) / r
        for (x1, y1, x2, y2), sc, c in zip(b, d.scores, d.classes):
            dets.append({"image_id": img_id, "category_id": category_id(c), "score": float(sc),
                         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]})
    m = evaluate(gt, dets, "bbox")
    return {"map50_95": m["map50_95"], "map50": m["map50"], "seconds": round(time.time() - t0, 1)}


def calibrate(onnx_path: Path, images: list[Path], method: str, imgsz: int) -> tuple[dict, float]:
    model = __import__("onnx").load(str(onnx_path))
    tensors = qdq.calibration_tensors(model)
    cal = make_calibrator(method, percentile=99.99, num_bins=2048)
    t0 = time.time()
    stream = (letterbox(str(p), imgsz)[0] for p in images)
    ranges, _ = qdq.collect_ranges(onnx_path, tensors, stream, cal)
    return ranges, time.time() - t0


def split_ltrb_from_pt(weights: Path, imgsz: int, out: Path) -> Path:
    """Ultralytics ONNX export, cut to split_ltrb (raw DFL distances + class scores), for use without the export step."""
    import onnx
    import onnx_graphsurgeon as gs
    from ultralytics import YOLO

    f = Path(YOLO(str(weights)).export(format="onnx", imgsz=imgsz, opset=17, simplify=True))
    g = gs.import_onnx(onnx.load(str(f)))
    t = g.tensors()
    sig = next(k for k in t if k.endswith("/Sigmoid_output_0") and "/model." in k and "act" not in k)
    dfl = next(k for k in t if k.endswith("dfl/Reshape_1_output_0"))
    outs = []
    for src, name in ((dfl, "boxes"), (sig, "scores")):
        o = gs.Variable(name, dtype=np.float32)
        g.nodes.append(gs.Node("Transpose", name=f"/out/{name}", attrs={"perm": [0, 2, 1]}, inputs=[t[src]], outputs=[o]))
        outs.append(o)
    g.outputs = outs
    g.cleanup().toposort()
    onnx.save(gs.export_onnx(g), str(out))
    return out


def sensitivity(onnx_path: Path, ranges: dict, held: list[Path], imgsz: int, candidates: list[str], out: Path) -> list:
    """Leave-one-out: QDQ with every conv int8 except the candidate (a node name or float_layers pattern); the
    relative squared error of `scores` (all anchors) and `boxes` (anchors with float score > 0.2) vs the float
    model on `held` images; returns rows sorted by the share of the all-int8 error removed (most sensitive first)."""
    import onnx
    import onnxruntime as ort

    xs = [letterbox(str(p), imgsz)[0] for p in held]

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
    ap.add_argument("--bias-correction", type=int, default=0, help="matrix rows: bias-correct the int8 convs on the "
                    "first N calibration images, as the qdq step does (0 = off; entropy.yaml uses 64)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="qdq_matrix_")))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    onnx_path = a.onnx or split_ltrb_from_pt(a.from_pt, a.imgsz, a.out / "float.onnx")
    import onnx

    model = onnx.load(str(onnx_path))
    vals = samples(a.data, "val")[: a.val or None]
    gt = ground_truth(vals, [str(i) for i in range(10)])
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
    rows = [{"model": "float", **evaluate_model(onnx_path, vals, gt, a.imgsz)}]
    print(rows[-1], flush=True)
    for method in a.methods:
        ranges, secs = calibrate(onnx_path, calib, method, a.imgsz)
        variants = [("int8", [])] + ([("mixed", a.mixed)] if a.mixed else [])
        for mode, layers in variants:
            plan = qdq.plan_quantization(model, layers)
            path = a.out / f"{method}_{mode}.onnx"
            info = qdq.write_qdq(onnx_path, path, ranges, plan)
            if a.bias_correction:
                q = onnx.load(str(path))
                xs = [letterbox(str(p), a.imgsz)[0] for p in calib[: a.bias_correction]]
                correct_biases(model, q, plan.quantized, xs)
                onnx.save(q, str(path))
            calib_cache.write_cache(a.out / f"{method}.cache", ranges, method)
            r = evaluate_model(path, vals, gt, a.imgsz)
            rows.append({"model": f"{method} {mode}", **r, "drop_pt": round(100 * (r["map50_95"] - rows[0]["map50_95"]), 2),
                         "calib_s": round(secs, 1), "q_convs": len(plan.quantized), **info})
            print(rows[-1], flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n| model | box mAP50-95 | mAP50 | drop (pt) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['map50_95']:.4f} | {r['map50']:.4f} | {r.get('drop_pt', 0):+.2f} |")
    print(f"preprocessing: {'edgebuild.data.preprocess' if _PREPROCESS else 'bench letterbox'}")
    print(f"peak RSS {rss:.0f} MB, {len(calib)} calibration images, {len(vals)} val images")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "peak_rss_mb": rss}, indent=1))


if __name__ == "__main__":
    main()
