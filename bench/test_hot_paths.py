"""Hot paths, timed with pytest-benchmark. Lives in bench/, so `pytest tests` (testpaths = tests) never collects it.

    python -m pytest bench/test_hot_paths.py [--benchmark-json bench/hot_paths.json]

- decode + NMS per image: edgebuild.layout.decode + edgebuild.metrics.nms on REAL outputs of the shapes-hard detector
  (split_ltrb and fused layouts), exported once by edgebuild's own export code and run once with onnxruntime on one val
  image; the outputs are saved to bench/hot_outputs.npz and reused afterwards.
- letterbox per image: edgebuild.data.preprocess.letterbox and preprocess (decode from JPEG bytes already in memory
  excluded for letterbox; preprocess from the path includes the JPEG decode).
- cache key computation: edgebuild.resolve.make_plan on the composed demo recipe config (all step keys + cache lookups).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
WEIGHTS = SHARED / "weights" / "shapes-hard-yolov8n-det.pt"
VAL = SHARED / "shapes-hard" / "images" / "val"
NPZ = Path(__file__).with_name("hot_outputs.npz")
IMGSZ = 320
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")


def _image() -> Path:
    return sorted(VAL.glob("*.jpg"))[0]


def _make_outputs(tmp: Path) -> None:
    """Export split_ltrb and fused ONNX with edgebuild's export code, run one val image, save outputs + metas."""
    from edgebuild.data.preprocess import preprocess
    from edgebuild.digest import file_sha256
    from edgebuild.export.load import load_checkpoint
    from edgebuild.export.meta import build_meta
    from edgebuild.export.onnx_export import export_onnx
    from edgebuild.runtime import load_runner

    x, _ = preprocess(_image(), IMGSZ)
    arrays, metas = {}, {}
    for layout in ("split_ltrb", "fused"):
        loaded = load_checkpoint(WEIGHTS, "detect", IMGSZ)
        meta = build_meta(task="detect", layout=layout, imgsz=IMGSZ, names=loaded.names, strides=loaded.strides,
                          source_name=WEIGHTS.name, source_sha256=file_sha256(WEIGHTS))
        onnx = tmp / f"{layout}.onnx"
        export_onnx(loaded, layout, IMGSZ, 17, meta, onnx)
        out = load_runner(onnx, meta).predict(x)
        for role, arr in out.items():
            arrays[f"{layout}/{role}"] = arr
        metas[layout] = meta
    np.savez(NPZ, meta=json.dumps(metas), image=str(_image()), **arrays)


@pytest.fixture(scope="session")
def outputs(tmp_path_factory):
    if not NPZ.is_file():
        _make_outputs(tmp_path_factory.mktemp("hot"))
    z = np.load(NPZ)
    metas = json.loads(str(z["meta"]))
    return {layout: ({k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(layout + "/")}, metas[layout])
            for layout in metas}


def _decode_nms(outs, meta):
    from edgebuild.layout import decode
    from edgebuild.metrics.nms import nms

    d = decode(outs, meta)
    return nms(d.boxes, d.scores, 0.001, 0.7, 300)


@pytest.mark.parametrize("layout", ["split_ltrb", "fused"])
def test_decode_nms_per_image(benchmark, outputs, layout):
    outs, meta = outputs[layout]
    det = benchmark(_decode_nms, outs, meta)
    assert len(det) > 0


def test_letterbox_per_image(benchmark):
    import cv2

    from edgebuild.data.preprocess import letterbox

    img = cv2.imread(str(_image()))
    rgb, info = benchmark(letterbox, img, IMGSZ)
    assert rgb.shape == (IMGSZ, IMGSZ, 3)


def test_preprocess_from_path_per_image(benchmark):
    from edgebuild.data.preprocess import preprocess

    x, _ = benchmark(preprocess, _image(), IMGSZ)
    assert x.shape == (1, 3, IMGSZ, IMGSZ)


def test_cache_keys_make_plan_demo(benchmark, tmp_path):
    from hydra import compose, initialize_config_dir

    from edgebuild import schema
    from edgebuild.cache import Cache
    from edgebuild.resolve import make_plan

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        raw = compose(config_name="config", overrides=["+recipe=demo", f"build.cache_dir={tmp_path / 'cache'}"])
    cfg = schema.validate(raw)
    plan = benchmark(make_plan, cfg, Cache(tmp_path / "cache"))
    assert len(plan.steps) >= 5
