"""python -m edgebuild.deploy infer BUNDLE IMAGE... | bench BUNDLE [IMAGE]  (see docs/deploy.md)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edgebuild.errors import EdgebuildError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="the bundle directory (deploy/ of a run, or the extracted deploy .tar.gz)")
    p.add_argument("--delegate", metavar="PATH", help="external TFLite delegate library (NPU), or 'auto' for the one "
                   "the bundle's meta.json names; default: CPU")
    p.add_argument("--delegate-option", metavar="KEY=VALUE", action="append", default=[],
                   help="delegate option (repeatable); default: the bundle's")
    p.add_argument("--model", metavar="FILE", help="run this model file of the bundle instead of the default")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1, as validation)")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU (default: the bundle's, 0.7)")
    p.add_argument("--max-det", type=int, default=None, help="detections kept per image (default: the bundle's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m edgebuild.deploy", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    inf = sub.add_parser("infer", help="detect objects in images")
    _common(inf)
    inf.add_argument("images", nargs="+", metavar="IMAGE")
    inf.add_argument("--save", metavar="PATH", help="draw the detections: a file for one image, a directory for several")
    b = sub.add_parser("bench", help="latency of preprocess / invoke / decode+NMS (/ masks), median and p90")
    _common(b)
    b.add_argument("image", nargs="?", help="image to time (default: the bundle's sample.jpg)")
    b.add_argument("--runs", type=int, default=50)
    b.add_argument("--warmup", type=int, default=5)
    return ap


def _options(pairs: list[str]) -> dict | None:
    if not pairs:
        return None
    out = {}
    for p in pairs:
        if "=" not in p:
            raise EdgebuildError("--delegate-option", f"{p!r} is not KEY=VALUE.", "write it as e.g. cache_file_path=/tmp/c.")
        k, v = p.split("=", 1)
        out[k] = v
    return out


def _load(a):
    from edgebuild.deploy.model import load

    return load(a.bundle, a.delegate, _options(a.delegate_option), a.model, a.threads)


def infer(a) -> None:
    model = _load(a)
    results = []
    for i, image in enumerate(a.images):
        r = model.predict(image, a.conf, a.iou, a.max_det)
        if a.save:
            from edgebuild.deploy.draw import save

            dest = Path(a.save) if len(a.images) == 1 else Path(a.save) / (Path(image).stem + ".jpg")
            save(image, r, dest)
        if a.json:
            results.append(r.to_json())
        else:
            print(f"{image}: {len(r)} detection(s), {sum(r.ms.values()):.1f} ms")
            for box, score, name in zip(r.boxes, r.scores, r.names):
                print(f"  {name:<16} {score:.3f}  [{', '.join(f'{v:.1f}' for v in box)}]")
    if a.json:
        json.dump({"bundle": str(a.bundle), "model": model.model.name, "runtime": model.runner.kind,
                   "delegate": a.delegate, "conf": a.conf, "images": results}, sys.stdout)
        print()


def bench(a) -> None:
    model = _load(a)
    image = a.image or str(Path(a.bundle) / "sample.jpg")
    for _ in range(max(0, a.warmup)):
        model.predict(image, a.conf, a.iou, a.max_det)
    times: dict[str, list[float]] = {}
    n = 0
    for _ in range(max(1, a.runs)):
        r = model.predict(image, a.conf, a.iou, a.max_det)
        n = len(r)
        for k, v in {**r.ms, "total": sum(r.ms.values())}.items():
            times.setdefault(k, []).append(v)
    stats = {k: {"median_ms": round(float(np.median(v)), 3), "p90_ms": round(float(np.percentile(v, 90)), 3)}
             for k, v in times.items()}
    out = {"bundle": str(a.bundle), "model": model.model.name, "runtime": model.runner.kind, "delegate": a.delegate,
           "threads": a.threads, "image": image, "conf": a.conf, "detections": n, "runs": len(times["total"]),
           "warmup": a.warmup, "stages": stats}
    if a.json:
        print(json.dumps(out))
        return
    print(f"{model.model.name} on {model.runner.kind}{' + ' + a.delegate if a.delegate else ''}, {a.threads} thread(s), "
          f"{out['runs']} runs, {n} detection(s) at conf {a.conf}")
    for k, s in stats.items():
        print(f"  {k:<11} median {s['median_ms']:8.3f} ms   p90 {s['p90_ms']:8.3f} ms")


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    try:
        (infer if a.command == "infer" else bench)(a)
    except EdgebuildError as e:
        print(e.paragraph(), file=sys.stderr)
        sys.exit(e.exit_code)
