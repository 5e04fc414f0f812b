"""Deploy bundle and runner (edgebuild.deploy): same detections as validation, light import graph, clear errors.

Fast tests use a tiny real ONNX model (constant DFL distances and scores, onnxruntime) packed by the same
edgebuild.packaging the deploy step uses; the slow test builds cpu_det, imx93_det and imx95_seg and runs each
bundle's runner in a fresh virtual environment holding only numpy, OpenCV and ai-edge-litert.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgebuild.packaging import RUNTIME_MODULES, deploy_meta, readme, runtime_sources, write_bundle

HEAVY = ("torch", "tensorflow", "hydra", "onnx", "omegaconf", "onnx2tf", "ultralytics", "tensorrt")
IMGSZ, STRIDES, NC = 32, (8, 16, 32), 2
N = sum((IMGSZ // s) ** 2 for s in STRIDES)   # 21 anchors
HOT = 5                                        # anchor (level 8, row 1, col 1): centre (1.5, 1.5) cells = (12, 12) px


def tiny_onnx(path: Path) -> None:
    """A real ONNX graph in the split_ltrb layout: boxes = ltrb distances (1, 1, 2, 2) cells for every anchor, scores
    0.9 (class 1) on anchor HOT and 0.1 elsewhere; both add 0 * mean(images) so the input feeds the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ltrb = np.tile(np.array([1, 1, 2, 2], np.float32), (1, N, 1))
    scores = np.full((1, N, NC), 0.1, np.float32)
    scores[0, HOT, 1] = 0.9
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["ltrb", "z"], ["boxes"]),
             helper.make_node("Add", ["sc", "z"], ["scores"])]
    inits = [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(ltrb, "ltrb"),
             numpy_helper.from_array(scores, "sc")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                            [1, 3, IMGSZ, IMGSZ])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, N, 4]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, N, NC])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def tiny_meta() -> dict:
    return {"task": "detect", "layout": "split_ltrb", "imgsz": IMGSZ, "nc": NC, "names": ["disc", "bar"],
            "strides": list(STRIDES), "normalized": False,
            "input": {"name": "images", "shape": [1, 3, IMGSZ, IMGSZ], "layout": "NCHW", "dtype": "float32"},
            "outputs": [{"name": "boxes", "role": "boxes", "shape": [1, N, 4]},
                        {"name": "scores", "role": "scores", "shape": [1, N, NC]}],
            "source": {"weights": "tiny.onnx"}}


def make_bundle(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir(parents=True)
    tiny_onnx(src / "model_qdq.onnx")
    target = {"name": "orin_nano", "backend": "tensorrt", "delegate": "tensorrt"}
    meta = deploy_meta(tiny_meta(), target, "model_qdq.onnx", {"iou": 0.7, "max_det": 300})
    files = {"model_qdq.onnx": src / "model_qdq.onnx"}
    root, _ = write_bundle(tmp / "out", files, meta, readme(meta, sorted(files), None))
    return root


@pytest.fixture()
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path)


@pytest.fixture()
def image(tmp_path) -> Path:
    """64 x 48 (w x h): letterboxed to 32 x 24 + 4 px of padding top and bottom."""
    p = tmp_path / "img.jpg"
    cv2.imwrite(str(p), np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return p


def deploy_cli(*args, cwd: Path, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # only the bundle's own edgebuild/
    return subprocess.run([python, "-m", "edgebuild.deploy", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


# ---------------------------------------------------------------- predict


def test_predict_gives_boxes_in_original_pixels_and_names(bundle, image):
    from edgebuild.deploy import load

    r = load(bundle).predict(image, conf=0.25)
    assert len(r) == 1 and r.names == ["bar"] and r.classes.tolist() == [1]
    assert r.scores[0] == pytest.approx(0.9)
    # anchor centre (12, 12) px, ltrb (1, 1, 2, 2) cells of 8 px -> (4, 4, 28, 28) letterboxed; scale 0.5, pad_y 4
    np.testing.assert_allclose(r.boxes[0], [8, 0, 56, 48], atol=1e-4)
    assert (r.width, r.height) == (64, 48) and r.masks is None
    assert set(r.ms) == {"preprocess", "invoke", "decode_nms"}
    low = load(bundle).predict(image, conf=0.05, iou=1.0)
    assert len(low) == N * NC        # every (anchor, class) pair above 0.05, nothing suppressed at IoU 1


def test_runner_and_validation_share_postprocessing(bundle, image):
    """The deploy runner and the validate loop give identical detections for the same model and image."""
    from edgebuild.data.preprocess import preprocess
    from edgebuild.deploy import load
    from edgebuild.metrics.evaluate import Settings, predict_image
    from edgebuild.runtime import load_runner

    meta = json.loads((bundle / "meta.json").read_text())
    x, lb = preprocess(image, IMGSZ)
    det, _ = predict_image(load_runner(bundle / "model_qdq.onnx", meta), meta, x, lb, Settings(IMGSZ, conf=0.05))
    r = load(bundle).predict(image, conf=0.05)
    np.testing.assert_array_equal(r.boxes, det.boxes)
    np.testing.assert_array_equal(r.scores, det.scores)
    np.testing.assert_array_equal(r.classes, det.classes)


def test_rle_round_trips_through_coco():
    from faster_coco_eval.core import mask as mask_utils

    from edgebuild.deploy.model import rle

    m = np.zeros((7, 9), np.uint8)
    m[0, 0], m[2:5, 3:8], m[6, 8] = 1, 1, 1
    enc = rle(m)
    assert sum(enc["counts"]) == m.size
    back = mask_utils.decode(mask_utils.frPyObjects(enc, 7, 9))
    np.testing.assert_array_equal(back, m)


# ---------------------------------------------------------------- the bundle


def test_bundle_carries_byte_copies_of_the_runner_and_a_deterministic_tar(tmp_path):
    a, b = make_bundle(tmp_path / "a"), make_bundle(tmp_path / "b")
    for name, src in runtime_sources().items():
        assert (a / name).read_bytes() == src.read_bytes(), name
    assert {"meta.json", "labels.txt", "README.md", "model_qdq.onnx"} <= {p.name for p in a.iterdir()}
    assert (a / "labels.txt").read_text() == "disc\nbar\n"
    assert (a.parent / "deploy.tar.gz").read_bytes() == (b.parent / "deploy.tar.gz").read_bytes()
    with tarfile.open(a.parent / "deploy.tar.gz") as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    assert names == {str(Path("deploy") / p.relative_to(a)) for p in a.rglob("*") if p.is_file()}


def test_runner_import_graph_is_numpy_opencv_and_the_runtime_only(bundle, image):
    """From the bundle directory, loading and predicting imports only the bundle's own edgebuild modules, and none
    of torch, TensorFlow, Hydra, onnx, omegaconf."""
    code = ("import json, sys; from edgebuild.deploy import load; r = load('.').predict(sys.argv[1]); "
            "print(json.dumps({'n': len(r), 'mods': sorted(sys.modules), 'files': sorted(m.__file__ for k, m in "
            "sys.modules.items() if k.split('.')[0] == 'edgebuild')}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code, str(image)], cwd=bundle, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["n"] == 1
    heavy = sorted({m.split(".")[0] for m in out["mods"]} & set(HEAVY))
    assert heavy == [], f"the runner imported {heavy}"
    files = {Path(f).resolve() for f in out["files"]}
    assert all(bundle.resolve() in f.parents for f in files), files    # the bundle's copy, not the installed package
    assert {str(f.relative_to(bundle.resolve() / "edgebuild")) for f in files} <= set(RUNTIME_MODULES)


def test_infer_cli_json_and_save(bundle, image, tmp_path):
    proc = deploy_cli("infer", ".", image, "--json", "--save", tmp_path / "drawn.jpg", cwd=bundle)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["runtime"] == "onnxruntime" and out["model"] == "model_qdq.onnx"
    (det,) = out["images"][0]["detections"]
    assert det["name"] == "bar" and det["box"] == pytest.approx([8, 0, 56, 48], abs=1e-4)
    assert cv2.imread(str(tmp_path / "drawn.jpg")).shape == (48, 64, 3)


def test_bench_cli_reports_stage_latencies(bundle, image):
    proc = deploy_cli("bench", ".", image, "--runs", "5", "--warmup", "1", "--json", cwd=bundle)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["stages"]) == {"preprocess", "invoke", "decode_nms", "total"} and out["runs"] == 5
    for s in out["stages"].values():
        assert 0 < s["median_ms"] <= s["p90_ms"]


@pytest.mark.parametrize("target, library, npu_model", [
    ("cpu", None, None), ("imx8mp", "/usr/lib/libvx_delegate.so", "model.tflite"),
    ("imx93", "/usr/lib/libethosu_delegate.so", "model_vela.tflite"),
    ("imx95", "/usr/lib/libneutron_delegate.so", "model_neutron.tflite"), ("orin_nano", None, "model.engine")])
def test_each_target_bundle_names_its_delegate_and_file(target, library, npu_model):
    import yaml

    t = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "target" / f"{target}.yaml").read_text())
    model = "model_qdq.onnx" if t["backend"] == "tensorrt" else "model.tflite"
    meta = deploy_meta(tiny_meta(), t, model, {"iou": 0.7, "max_det": 300})
    text = readme(meta, [model], "sample.jpg")
    d = meta["deploy"]
    assert d["model"] == model and d["target"] == target
    if npu_model is None:
        assert d["delegate"] is None and "--delegate" not in text
        return
    assert d["delegate"]["library"] == library and d["delegate"]["model"] == npu_model
    if library:
        assert f"python3 -m edgebuild.deploy infer . sample.jpg --delegate {library}" in text
        assert (npu_model == model) == (f"NPU: {npu_model}" in text)   # only a file the bundle has is named to run
    else:
        assert "./build_engine.sh" in text and "--model model.engine" in text


# ---------------------------------------------------------------- bad input: one error paragraph each


def one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Fix:" in lines[0]
    return lines[0]


def test_error_bundle_without_meta(bundle, image):
    (bundle / "meta.json").unlink()
    msg = one_error(deploy_cli("infer", ".", image, cwd=bundle))
    assert "meta.json" in msg and "rebuild" in msg


def test_error_bundle_from_a_newer_schema(bundle, image):
    meta = json.loads((bundle / "meta.json").read_text())
    meta["deploy"]["schema_version"] += 1
    (bundle / "meta.json").write_text(json.dumps(meta))
    msg = one_error(deploy_cli("infer", ".", image, cwd=bundle))
    assert "meta.json" in msg and "newer" in msg


def test_error_image_that_cannot_be_decoded(bundle, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg at all")
    msg = one_error(deploy_cli("infer", ".", bad, cwd=bundle))
    assert str(bad) in msg and "cannot be decoded" in msg


def test_error_delegate_that_does_not_exist(bundle, image, tmp_path):
    missing = tmp_path / "libvx_delegate.so"
    msg = one_error(deploy_cli("infer", ".", image, "--delegate", missing, cwd=bundle))
    assert str(missing) in msg and "delegate" in msg


def test_error_engine_where_tensorrt_is_missing(bundle, image):
    pytest.importorskip("onnxruntime")
    if subprocess.run([sys.executable, "-c", "import tensorrt"], capture_output=True).returncode == 0:
        pytest.skip("tensorrt is installed here")
    (bundle / "model.engine").write_bytes(b"an engine is only read once tensorrt imports")
    msg = one_error(deploy_cli("infer", ".", image, "--model", "model.engine", cwd=bundle))
    assert "tensorrt is not importable" in msg and "model_qdq.onnx" in msg


def test_error_packed_bundle_passed_instead_of_directory(bundle, image):
    msg = one_error(deploy_cli("infer", bundle.parent / "deploy.tar.gz", image, cwd=bundle))
    assert "tar xzf" in msg


# ---------------------------------------------------------------- slow: real bundles in a runtime-only venv

RECIPES = ("cpu_det", "imx93_det", "imx95_seg")
# cheap builds: the test checks runner == validate, not accuracy
CHEAP = ("calibration.count=8", "calibration.correction=none", "validation.max_images=50",
         "validation.latency_runs=1", "validation.layer_error_images=1")
RUNTIME_PINS = ("numpy", "opencv-python-headless", "ai-edge-litert")   # the build env's versions, nothing else


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """recipe -> run dir. The three recipes are built once per session, in one process, with only the steps this
    test reads (deploy and validate and their upstream: no layer_error, validate_float or report)."""
    base = tmp_path_factory.mktemp("deploy-builds")
    env = dict(os.environ, YOLO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "tests.quick_build", str(base), str(base / "cache"), "deploy,validate",
                           *RECIPES, "--", *CHEAP], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return lambda recipe: base / recipe


@pytest.fixture(scope="session")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with only numpy, OpenCV (headless) and ai-edge-litert (and their own deps)."""
    import importlib.metadata as md

    venv = tmp_path_factory.mktemp("runtime-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    pins = [f"{p}=={md.version(p)}" for p in RUNTIME_PINS]
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # what the venv holds, not a checkout
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True, env=clean).stdout
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert not installed & {"torch", "tensorflow", "hydra-core", "omegaconf", "onnx", "onnxruntime", "edgebuild",
                            "ultralytics", "faster-coco-eval"}, installed
    return py


def _validate_detections(run_dir: Path) -> dict:
    plan = json.loads((run_dir / "plan.json").read_text())
    entry = Path(next(s["entry"] for s in plan["steps"] if s["name"] == "validate"))
    return json.loads((entry / "detections.json").read_text())


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_bundle_runner_in_runtime_only_venv_equals_validate(recipe, built, runtime_venv, tmp_path):
    from faster_coco_eval.core import mask as mask_utils

    run_dir = built(recipe)
    assert (run_dir / "deploy" / "meta.json").is_file() and (run_dir / "deploy.tar.gz").is_file()
    with tarfile.open(run_dir / "deploy.tar.gz") as tar:   # run the packed copy: the tarball is complete
        tar.extractall(tmp_path, filter="data")
    bundle = tmp_path / "deploy"
    meta = json.loads((bundle / "meta.json").read_text())
    if recipe == "imx93_det":
        assert (bundle / "model_vela.tflite").is_file()
        assert meta["deploy"]["delegate"]["library"] == "/usr/lib/libethosu_delegate.so"
        assert "--delegate /usr/lib/libethosu_delegate.so" in (bundle / "README.md").read_text()
    ref = _validate_detections(run_dir)
    assert len(ref["images"]) == 50
    conf = 0.25
    proc = deploy_cli("infer", ".", *[im["image"] for im in ref["images"]], "--conf", conf, "--json",
                      cwd=bundle, python=str(runtime_venv))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads([ln for ln in proc.stdout.splitlines() if ln.strip()][-1])
    assert out["model"] == "model.tflite" and out["runtime"] == "litert"
    compared = masks = 0
    for want, got in zip(ref["images"], out["images"], strict=True):
        keep = [i for i, s in enumerate(want["scores"]) if s > conf]   # validate ran at conf 0.001: same NMS above
        dets = got["detections"]
        assert len(dets) == len(keep), want["image"]
        for i, d in zip(keep, dets):
            assert d["class"] == want["classes"][i] and d["name"] == meta["names"][d["class"]]
            assert d["score"] == pytest.approx(want["scores"][i], abs=1e-6)
            np.testing.assert_allclose(d["box"], want["boxes"][i], atol=1e-4)
            if "masks" in want:
                h, w = d["mask"]["size"]
                mine = mask_utils.decode(mask_utils.frPyObjects(d["mask"], h, w))
                assert _mask_iou(mine, mask_utils.decode(want["masks"][i])) >= 0.999
                masks += 1
            compared += 1
    assert compared > 50                       # real detections were compared, not empty lists
    assert (masks > 50) == (recipe == "imx95_seg")
