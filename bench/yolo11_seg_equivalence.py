"""Export equivalence of a trained YOLO11n-seg checkpoint: edgebuild's exported ONNX vs Ultralytics' PyTorch forward.

The same comparison as tests/test_export.py (test_yolo11_detect_matches_ultralytics_pytorch and
test_yolo11_segment_from_yaml_split_ltrb), for a trained -seg checkpoint on real shapes-hard val images. The export
step runs with the config the recipe composes (by default imx95_seg with model=yolo11n_seg: its decoder layout, imgsz,
input normalization), through the registered step as the runner calls it. Per image: max abs error of boxes (xyxy
input pixels), scores, mask coefficients and protos after edgebuild.layout.decode, against Ultralytics' own forward.
Also: detections after NMS (conf 0.25, iou 0.7) compared class by class.

    python bench/yolo11_seg_equivalence.py [--weights PT] [--recipe imx95_seg] [--images 8] [-- OVERRIDE ...]

Prints the result and writes bench/yolo11_seg_equivalence.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DEFAULT_WEIGHTS = Path("/tmp/seg11/shapes-hard-yolo11n-seg.pt")


def compose_config(recipe: str, overrides: list[str]):
    """The validated config `edgebuild +recipe=RECIPE OVERRIDES` builds with."""
    from hydra import compose, initialize_config_dir

    from edgebuild import schema

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        raw = compose(config_name="config", overrides=[f"+recipe={recipe}", *overrides])
    return schema.validate(raw, recipe=recipe)


def run_export_step(cfg, out: Path) -> Path:
    """The registered export step on the composed config (as tests/test_export.run_export, without re-validating)."""
    from edgebuild.engine import StepContext, registry
    from edgebuild.resolve import slice_config

    kind = registry()["export"]
    kind.precheck(cfg)
    out.mkdir(parents=True)
    kind.run(StepContext("export", slice_config(cfg, kind.config), out, {}, kind.files(cfg)))
    return out


def nms_compare(d, ref: dict) -> dict:
    from edgebuild.metrics.nms import nms

    ours = nms(d.boxes, d.scores, 0.25, 0.7, 300)
    theirs = nms(ref["boxes"], ref["scores"], 0.25, 0.7, 300)
    row = {"ours": len(ours), "ultralytics": len(theirs)}
    if len(ours) == len(theirs):
        row["same_classes"] = bool(np.array_equal(ours.classes, theirs.classes))
        if len(ours):
            row["box_max_abs"] = float(np.abs(ours.boxes - theirs.boxes).max())
            row["score_max_abs"] = float(np.abs(ours.scores - theirs.scores).max())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--recipe", default="imx95_seg")
    ap.add_argument("--model", default="yolo11n_seg", help="conf/model group")
    ap.add_argument("--images", type=int, default=8, help="first N val images (sorted)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "yolo11_seg_equivalence.json")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    a = ap.parse_args()

    import torchvision  # noqa: F401  torch's stack before TensorFlow's (tests/conftest.py)

    from edgebuild.data.preprocess import preprocess
    from edgebuild.layout import decode
    from tests.test_export import TOL, _max_errors, _run_onnx, _ultralytics_outputs

    weights = a.weights.resolve()
    cfg = compose_config(a.recipe, [f"model={a.model}", f"model.weights={weights}", *a.overrides])
    layout, imgsz = cfg.decoder.layout, int(cfg.model.imgsz)
    data_yaml = (ROOT / cfg.dataset.path).resolve() if not Path(cfg.dataset.path).is_absolute() else Path(cfg.dataset.path)
    val_dir = data_yaml.parent / "images" / "val"
    paths = sorted(val_dir.glob("*.jpg"))[:a.images]
    order = cfg.model.input.order

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        out = run_export_step(cfg, Path(tmp) / "export")
        export_s = time.monotonic() - t0
        meta = json.loads((out / "meta.json").read_text())
        onnx_sha = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
        assert meta["layout"] == layout and meta["task"] == "segment", meta
        # what the exported graph takes (bytes / 255 in model.input.order; normalization folded in) and what
        # Ultralytics' forward takes (bytes / 255, rgb, for the recipe default mean 0 / std 255)
        images = [preprocess(p, imgsz, order=order)[0] for p in paths]
        mean, std = list(cfg.model.input.mean), list(cfg.model.input.std)
        if (mean, std, order) == ([0, 0, 0], [255, 255, 255], "rgb"):
            ref_in = images
        else:
            ref_in = [((x * 255 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))).astype(np.float32)
                      for x in images]
        t0 = time.monotonic()
        refs = _ultralytics_outputs(weights, ref_in)
        ref_s = time.monotonic() - t0

        per_image, overall, scale, det = [], {}, {}, []
        for p, x, ref in zip(paths, images, refs):
            errs = _max_errors(out / "model.onnx", meta, [x], [ref])      # also checks declared output shapes
            per_image.append({"image": p.name, **errs})
            for k, v in errs.items():
                overall[k] = max(overall.get(k, 0.0), v)
                scale[k] = max(scale.get(k, 0.0), float(np.abs(ref[k]).max()))
            det.append({"image": p.name, **nms_compare(decode(_run_onnx(out / "model.onnx", meta, x), meta), ref)})

    result = {
        "weights": str(weights),
        "weights_sha256": meta["source"]["sha256"],
        "recipe": a.recipe,
        "overrides": [f"model={a.model}", *a.overrides],
        "layout": layout,
        "imgsz": imgsz,
        "opset": int(cfg.model.opset),
        "nc": meta["nc"],
        "outputs": [{k: o[k] for k in ("role", "shape")} for o in meta["outputs"]],
        "images": len(paths),
        "image_dir": str(val_dir),
        "onnx_sha256": onnx_sha,
        "max_abs_error": overall,
        "reference_max_abs": scale,
        "tolerance": {k: TOL[k] for k in overall},
        "within_tolerance": {k: overall[k] <= TOL[k] for k in overall},
        "per_image": per_image,
        "detections_conf0.25": det,
        "export_seconds": round(export_s, 2),
        "ultralytics_seconds": round(ref_s, 2),
        "versions": {"ultralytics": _version("ultralytics"), "torch": _version("torch"),
                     "onnxruntime": _version("onnxruntime")},
    }
    text = json.dumps(result, indent=1)
    a.json.write_text(text + "\n")
    print(text)
    print(f"\n{a.recipe} ({layout}) {weights.name}, {len(paths)} val images: max abs error "
          + ", ".join(f"{k} {v:.3g} (tol {TOL[k]:g})" for k, v in overall.items()))


def _version(pkg: str) -> str:
    from importlib.metadata import version

    try:
        return version(pkg)
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
