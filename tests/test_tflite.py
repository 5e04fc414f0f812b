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


def tiny_onnx(path: Path, size: int = SIZE) -> Path:
    """images [1,3,S,S] -> boxes [1,N,4] (softmax over 16 bins, then a fixed 'DFL' 1x1 conv), scores [1,N,3]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n = (size // 4) ** 2
    w1 = rng.normal(0, 0.5, (8, 3, 4, 4)).astype(np.float32)
    wb = rng.normal(0, 0.5, (64, 8, 1, 1)).astype(np.float32)
    ws = rng.normal(0, 0.5, (3, 8, 1, 1)).astype(np.float32)
    dfl = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)
    inits = [numpy_helper.from_array(a, k) for a, k in
             [(w1, "w1"), (wb, "wb"), (ws, "ws"), (dfl, "dfl"),
              (np.array([1, 4, 16, n], np.int64), "s1"), (np.array([1, 4, n], np.int64), "s2"),
              (np.array([1, 3, n], np.int64), "s3")]]
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["c1"], strides=[4, 4]),
        helper.make_node("Relu", ["c1"], ["f"]),
        helper.make_node("Conv", ["f", "wb"], ["b0"]),
        helper.make_node("Reshape", ["b0", "s1"], ["b1"]),
        helper.make_node("Transpose", ["b1"], ["b2"], perm=[0, 2, 1, 3]),   # [1,16,4,N]
        helper.make_node("Softmax", ["b2"], ["b3"], axis=1),
        helper.make_node("Conv", ["b3", "dfl"], ["b4"]),                    # [1,1,4,N]
        helper.make_node("Reshape", ["b4", "s2"], ["b5"]),
        helper.make_node("Transpose", ["b5"], ["boxes"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["f", "ws"], ["s0"]),
        helper.make_node("Reshape", ["s0", "s3"], ["s1r"]),
        helper.make_node("Sigmoid", ["s1r"], ["s2r"]),
        helper.make_node("Transpose", ["s2r"], ["scores"], perm=[0, 2, 1]),
    ]
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
