"""TFLite backend on real converters (onnx2tf, TFLiteConverter, mlir_quantize, LiteRT). Conversions are slow-marked.

Most tests use a tiny hand-built ONNX (conv -> two heads; the box head ends in a softmax + conv, like YOLO's DFL)
so each conversion takes seconds; test_shapes_hard_* uses the real export of the shared weights.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgebuild.errors import EdgebuildError

pytestmark = pytest.mark.slow
SIZE = 64


def tiny_onnx(path: Path, size: int = SIZE, grouped: str = "") -> Path:
    """images [1,3,S,S] -> boxes [1,N,4] (softmax over 16 bins, then a fixed 'DFL' 1x1 conv), scores [1,N,3].
    grouped: insert a 3x3 grouped conv with this node name after the stem (in YOLO11's C2PSA the `pe` conv is
    depthwise over a reshaped tensor, so onnx2tf takes its grouped-conv route: a Keras layer named after the node)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n = (size // 4) ** 2
    w1 = rng.normal(0, 0.5, (8, 3, 4, 4)).astype(np.float32)
    bb, bs = (rng.normal(0, 0.1, k).astype(np.float32) for k in (64, 3))
    wb = rng.normal(0, 0.5, (64, 8, 1, 1)).astype(np.float32)
    ws = rng.normal(0, 0.5, (3, 8, 1, 1)).astype(np.float32)
    dfl = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)
    inits = [numpy_helper.from_array(a, k) for a, k in
             [(w1, "w1"), (wb, "wb"), (bb, "bb"), (ws, "ws"), (bs, "bs"), (dfl, "dfl"),
              (np.array([1, 4, 16, n], np.int64), "s1"), (np.array([1, 4, n], np.int64), "s2"),
              (np.array([1, 3, n], np.int64), "s3")]]
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["c1"], strides=[4, 4], name="conv1"),
        helper.make_node("Relu", ["c1"], ["f0" if grouped else "f"]),
        helper.make_node("Conv", ["f", "wb", "bb"], ["b0"], name="conv_box"),
        helper.make_node("Reshape", ["b0", "s1"], ["b1"]),
        helper.make_node("Transpose", ["b1"], ["b2"], perm=[0, 2, 1, 3]),   # [1,16,4,N]
        helper.make_node("Softmax", ["b2"], ["b3"], axis=1),
        helper.make_node("Conv", ["b3", "dfl"], ["b4"], name="conv_dfl"),   # [1,1,4,N]
        helper.make_node("Reshape", ["b4", "s2"], ["b5"]),
        helper.make_node("Transpose", ["b5"], ["boxes"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["f", "ws", "bs"], ["s0"], name="conv_score"),
        helper.make_node("Reshape", ["s0", "s3"], ["s1r"]),
        helper.make_node("Sigmoid", ["s1r"], ["s2r"]),
        helper.make_node("Transpose", ["s2r"], ["scores"], perm=[0, 2, 1]),
    ]
    if grouped:
        wg = rng.normal(0, 0.5, (8, 2, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(wg, "wg"))
        nodes.insert(2, helper.make_node("Conv", ["f0", "wg"], ["f"], group=4, pads=[1, 1, 1, 1], name=grouped))
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
                          [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, n, 4]),
                           helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(path))
    return path


def images(n: int, size: int = SIZE, seed: int = 0):
    def gen():
        rng = np.random.default_rng(seed)
        for _ in range(n):
            x = rng.uniform(0, 1, (1, size, size, 3)).astype(np.float32)
            x[0, : size // 4] = rng.uniform(0, 1)  # some flat regions: skewed activation tails
            yield x
    return gen


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from edgebuild.tflite.convert import check_against_onnx, onnx_to_saved_model, sample_images

    d = tmp_path_factory.mktemp("tiny")
    onnx_path = tiny_onnx(d / "model.onnx")
    info = onnx_to_saved_model(onnx_path, d / "saved_model")
    errors = check_against_onnx(onnx_path, d / "saved_model", sample_images(1, size=SIZE), info)
    (d / "meta.json").write_text("{}")   # as the tfconvert step's: no input.order, so rgb
    return d, info, errors


def _io(model: bytes):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    r = it.get_signature_runner("serving_default")
    return r.get_input_details(), r.get_output_details()


def test_saved_model_outputs_keep_onnx_names(tiny):
    d, info, errors = tiny
    assert info["outputs"] == ["boxes", "scores"] and info["input_shape"] == [1, SIZE, SIZE, 3]
    assert set(errors) == {"boxes", "scores"} and max(errors.values()) < 1e-3
    assert not (Path.cwd() / "calibration_image_sample_data_20x128x128x3_float32.npy").exists()


def test_grouped_conv_with_exporter_node_name_converts(tmp_path):
    """onnx2tf keeps a grouped conv's kernel as a Keras variable named after the ONNX node, and the TorchScript
    exporter's leading '/' is not a valid TensorFlow root scope (YOLO11's C2PSA `pe` conv, issue 21)."""
    from edgebuild.tflite.convert import check_against_onnx, onnx_to_saved_model, sample_images

    onnx_path = tiny_onnx(tmp_path / "m.onnx", grouped="/model.10/m/m.0/attn/pe/conv/Conv")
    info = onnx_to_saved_model(onnx_path, tmp_path / "sm")
    errors = check_against_onnx(onnx_path, tmp_path / "sm", sample_images(1, size=SIZE), info)
    assert info["outputs"] == ["boxes", "scores"] and max(errors.values()) < 1e-3


def test_int8_contract_uint8_input_int8_outputs_per_channel(tiny):
    from edgebuild.tflite import quantize
    from edgebuild.tflite.ranges import _model

    d, _, _ = tiny
    scales = {}
    for per_channel in (True, False):
        model, _ = quantize.build_int8(d / "saved_model", images(8), 8, per_channel=per_channel,
                                       input_shape=[1, SIZE, SIZE, 3])
        ins, outs = _io(model)
        (inp,) = ins.values()
        assert inp["dtype"] == np.uint8 and inp["quantization"] == (pytest.approx(1 / 255), 0)
        assert {k: v["dtype"] for k, v in outs.items()} == {"boxes": np.int8, "scores": np.int8}
        assert outs["boxes"]["quantization"][0] != outs["scores"]["quantization"][0]
        sg = _model(model).subgraphs[0]
        conv_w = [t for t in sg.tensors if t.shape is not None and len(t.shape) == 4 and t.shape[0] == 64]
        scales[per_channel] = len(conv_w[0].quantization.scale)
    assert scales == {True: 64, False: 1}


def test_ranges_differ_per_method(tiny):
    from edgebuild.tflite import quantize

    d, _, _ = tiny
    got = {}
    for method in ("minmax", "entropy", "percentile"):
        model, built = quantize.build_int8(d / "saved_model", images(12), 12, method=method, percentile=99.0,
                                           input_shape=[1, SIZE, SIZE, 3])
        got[method] = built["ranges"]
        assert built["ranges"]["serving_default_images:0"] == [0.0, 1.0]
    f_name = next(k for k in got["minmax"] if "Relu" in k or "relu" in k.lower())
    hi = {m: r[f_name][1] for m, r in got.items()}
    assert len({round(v, 4) for v in hi.values()}) == 3, hi
    assert hi["percentile"] < hi["minmax"] and hi["entropy"] < hi["minmax"]


def test_mixed_keeps_softmax_branch_float(tiny):
    from edgebuild.tflite import mixed, quantize

    d, _, _ = tiny
    model, built = quantize.build_int8(d / "saved_model", images(4), 4, float_layers=[">SOFTMAX"],
                                       input_shape=[1, SIZE, SIZE, 3])
    kept = [o["op"] for o in built["float_ops"]]
    assert kept[0] == "SOFTMAX" and "CONV_2D" in kept and len(kept) >= 3
    assert {o["op"] for o in mixed.float_ops(model)} >= {"SOFTMAX", "CONV_2D"}
    _, outs = _io(model)
    assert outs["scores"]["dtype"] == np.int8  # the other branch stays integer
    with pytest.raises(EdgebuildError, match="matches no op"):
        quantize.build_int8(d / "saved_model", images(2), 2, float_layers=["LSTM"], input_shape=[1, SIZE, SIZE, 3])


def test_calibration_errors(tiny):
    from edgebuild.tflite import quantize

    d, _, _ = tiny
    with pytest.raises(EdgebuildError, match="empty"):
        quantize.build_int8(d / "saved_model", images(0), 0, input_shape=[1, SIZE, SIZE, 3])
    with pytest.raises(EdgebuildError, match="shape"):
        quantize.build_int8(d / "saved_model", images(2, size=32), 2, input_shape=[1, SIZE, SIZE, 3])
    with pytest.raises(EdgebuildError, match="calibration set is empty"):
        quantize.build_int8(d / "saved_model", images(0), 5, method="entropy", input_shape=[1, SIZE, SIZE, 3])


def test_metadata_embedded_and_fp16(tiny):
    from edgebuild.tflite import metadata, quantize

    d, _, _ = tiny
    model = quantize.convert_fp16(d / "saved_model")
    meta = {"task": "detect", "names": ["a", "b", "c"], "outputs": [{"name": "boxes", "role": "boxes"},
                                                                   {"name": "scores", "role": "scores"}]}
    io = metadata.io_details(model, meta)
    assert [o["role"] for o in io["outputs"]] == ["boxes", "scores"] and io["input"]["dtype"] == "float32"
    embedded = metadata.embed(model, {**meta, "tflite": io})
    assert metadata.read_metadata(embedded)["names"] == ["a", "b", "c"]
    _, outs = _io(embedded)  # still a valid, runnable model
    assert set(outs) == {"boxes", "scores"}


RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    import numpy as np
    from edgebuild.tflite import quantize
    n, size, method = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    def gen():
        rng = np.random.default_rng(0)
        for _ in range(n):
            yield rng.uniform(0, 1, (1, size, size, 3)).astype(np.float32)
    quantize.build_int8(Path(sys.argv[1]), gen, n, method=method, input_shape=[1, size, size, 3])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


def test_peak_rss_does_not_grow_with_calibration_size(tmp_path):
    """400 images of 256x256 would be 314 MB if held; streaming keeps peak RSS flat."""
    from edgebuild.tflite.convert import onnx_to_saved_model

    onnx_to_saved_model(tiny_onnx(tmp_path / "m.onnx", 256), tmp_path / "sm")
    (tmp_path / "rss.py").write_text(RSS_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    rss = {}
    for n in (50, 400):
        out = subprocess.run([sys.executable, str(tmp_path / "rss.py"), str(tmp_path / "sm"), str(n), "256", "percentile"],
                             capture_output=True, text=True, cwd=root, env={**__import__("os").environ,
                                                                             "PYTHONPATH": str(root)})
        assert out.returncode == 0, out.stderr[-2000:]
        rss[n] = int(out.stdout.strip().splitlines()[-1])
    assert rss[400] < rss[50] + 100, rss  # MB


def _calibset(tmp_path: Path, n: int, seed: int) -> Path:
    """A calibset step output: manifest of real PNG files (what iter_calibration streams)."""
    import hashlib

    import cv2

    d = tmp_path / "calibset"
    d.mkdir()
    items = []
    for i, x in enumerate(images(n, seed=seed)()):
        path = d / f"img{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor((x[0] * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
        items.append({"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    (d / "manifest.json").write_text(json.dumps({"count": n, "items": items}))
    return d


def _run_step(name: str, cfg: dict, out: Path, inputs: dict) -> Path:
    from omegaconf import OmegaConf

    from edgebuild.engine import StepContext, registry

    out.mkdir()
    registry()[name].run(StepContext(name, OmegaConf.create(cfg), out, inputs))
    return out


def _float_outputs(onnx_path: Path, x: np.ndarray) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x.transpose(0, 3, 1, 2)})))


def _int8_outputs(model: bytes, x: np.ndarray) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    r = Interpreter(model_content=model).get_signature_runner("serving_default")
    (name, inp), = r.get_input_details().items()
    out = r(**{name: np.round(x * 255).astype(np.uint8)})
    q = {k: v["quantization"] for k, v in r.get_output_details().items()}
    return {k: (v.astype(np.float32) - q[k][1]) * q[k][0] for k, v in out.items()}


@pytest.mark.parametrize("kind,per_channel", [("weights", True), ("weights", False), ("finetune", False)])
def test_correction_steps_correct_the_tflite_convs_in_its_own_arithmetic(tiny, tmp_path, kind, per_channel):
    """calibrate -> correct -> tflite, as the runner calls them: with clipping ranges (percentile 90) the corrected
    model's scores are closer to float on images the correction never saw; only conv weights and biases changed
    (every activation keeps the exact scale and zero point the correction simulated), and weights stay per-channel
    or per-tensor as the target wants."""
    from edgebuild.tflite.ranges import _model

    d, _, _ = tiny
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "model.onnx").write_bytes((d / "model.onnx").read_bytes())
    (tmp_path / "export" / "meta.json").write_text(json.dumps({
        "input": {"name": "images", "shape": [1, 3, SIZE, SIZE], "layout": "NCHW"},
        "outputs": [{"name": "boxes", "role": "boxes"}, {"name": "scores", "role": "scores"}]}))
    inputs = {"tfconvert": d, "calibset": _calibset(tmp_path, 16, seed=3), "export": tmp_path / "export"}
    cal = {"method": "percentile", "percentile": 90.0, "num_bins": 2048, "correction_images": 16,
           "correction_steps": 5}
    inputs["calibstats"] = _run_step("calibstats", {"calibration": cal, "model": {"imgsz": SIZE}},
                                     tmp_path / "calibstats", inputs)
    inputs["calibrate"] = _run_step("calibrate", {"calibration": cal, "model": {"imgsz": SIZE}},
                                    tmp_path / "calibrate", inputs)
    common = {"precision": {"mode": "int8", "float_layers": []}, "model": {"imgsz": SIZE},
              "target": {"per_channel": per_channel, "input_dtype": "uint8"}}
    models = {"none": _run_step("tflite", common, tmp_path / "tflite-none", inputs)}
    corrected = _run_step("correct", {**common, "calibration": {**cal, "correction": kind}},
                          tmp_path / "correct", inputs)
    models["weights"] = _run_step("tflite", common, tmp_path / "tflite-weights", {**inputs, "correct": corrected})
    summary = json.loads((corrected / "correction.json").read_text())
    assert (summary["kind"], summary["convs"], summary["images"], summary["per_channel"]) == \
        (kind, 2, 16, per_channel)  # the DFL conv (weights 0..15) is left exact
    assert summary["skipped"] == ["conv1"]  # no bias in the ONNX (onnx2tf blows up on this tiny conv with one)
    meta = json.loads((models["weights"] / "meta.json").read_text())
    assert meta["quantization"]["correction"]["kind"] == kind

    held = list(images(8, seed=9)())
    err = {k: sum(float(np.mean((_int8_outputs((m / "model.tflite").read_bytes(), x)["scores"]
                                 - _float_outputs(d / "model.onnx", x)["scores"]) ** 2)) for x in held)
           for k, m in models.items()}
    if kind == "weights":  # (5 finetune steps at lr 2e-5 barely move the weights: only the arithmetic is checked)
        assert err["weights"] < 0.9 * err["none"], err

    def quant(path):
        sg = _model((path / "model.tflite").read_bytes()).subgraphs[0]
        return {t.name: (t.type, None if t.quantization is None or t.quantization.scale is None
                         else tuple(t.quantization.scale)) for t in sg.tensors}

    before, after = quant(models["none"]), quant(models["weights"])
    assert before.keys() == after.keys()
    changed = {k for k in before if before[k] != after[k]}
    assert changed and all(before[k][0] in (2, 9) for k in changed)  # INT32 biases, INT8 weights only
    weight_scales = {len(after[k][1]) for k in changed if after[k][0] == 9}
    assert weight_scales == ({1} if not per_channel else weight_scales - {1})
