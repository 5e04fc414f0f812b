"""TensorRT path: QDQ placement and writer, TensorRT calibration cache, engine step without/with tensorrt."""
from __future__ import annotations

import importlib.util
import json
import shlex
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgebuild.quant.calibrators import make_calibrator
from edgebuild.engine import StepContext, registry
from edgebuild.errors import EdgebuildError
from edgebuild.tensorrt import calib_cache, engine_build, qdq

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAS_TRT, reason="tensorrt not importable here: NVIDIA-only wheels")


# ---------------------------------------------------------------- a tiny YOLO-like head, built with onnx.helper

def tiny_model(path: Path) -> Path:
    """images -> conv(8) -> SiLU -> conv(16) -> 'boxes branch' softmax over 16 bins -> DFL conv (0..15) -> boxes;
    SiLU -> conv(3) -> sigmoid -> scores. Node names follow Ultralytics' export."""
    rng = np.random.default_rng(0)

    def init(name, arr):
        return numpy_helper.from_array(arr.astype(np.float32), name)

    inits = [init("w0", rng.normal(0, 0.3, (8, 3, 3, 3))), init("b0", rng.normal(0, 0.1, 8)),
             init("w1", rng.normal(0, 0.2, (16, 8, 1, 1))), init("b1", rng.normal(0, 0.1, 16)),
             init("w2", rng.normal(0, 0.2, (3, 8, 1, 1))), init("b2", rng.normal(0, 0.1, 3)),
             init("dfl_w", np.arange(16).reshape(1, 16, 1, 1))]
    nodes = [
        helper.make_node("Conv", ["images", "w0", "b0"], ["c0"], name="/model.0/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c0"], ["s0"], name="/model.0/act/Sigmoid"),
        helper.make_node("Mul", ["c0", "s0"], ["a0"], name="/model.0/act/Mul"),
        helper.make_node("Conv", ["a0", "w1", "b1"], ["c1"], name="/model.22/cv2.0/Conv"),
        helper.make_node("Softmax", ["c1"], ["p"], name="/model.22/dfl/Softmax", axis=1),
        helper.make_node("Conv", ["p", "dfl_w"], ["boxes"], name="/model.22/dfl/conv/Conv"),
        helper.make_node("Conv", ["a0", "w2", "b2"], ["c2"], name="/model.22/cv3.0/Conv"),
        helper.make_node("Sigmoid", ["c2"], ["scores"], name="/model.22/Sigmoid"),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 1, 16, 16]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def images(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.random((1, 3, 16, 16), dtype=np.float32)


@pytest.fixture()
def tiny(tmp_path) -> Path:
    return tiny_model(tmp_path / "model.onnx")


def run(path: Path, x: np.ndarray) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x})))


def inits_of(model) -> dict:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


# ---------------------------------------------------------------- placement

def test_placement_quantizes_convs_but_keeps_dfl_float(tiny):
    plan = qdq.plan_quantization(onnx.load(str(tiny)))
    assert plan.quantized == ["/model.0/conv/Conv", "/model.22/cv2.0/Conv", "/model.22/cv3.0/Conv"]
    assert plan.dfl == ["/model.22/dfl/conv/Conv"]
    assert plan.activations == ["images", "a0"]  # the two head convs share one input scale


def test_float_layers_glob_op_type_and_downstream(tiny):
    m = onnx.load(str(tiny))
    assert qdq.plan_quantization(m, ["/model.22/cv2*"]).quantized == ["/model.0/conv/Conv", "/model.22/cv3.0/Conv"]
    by_type = qdq.match_float_layers(m, ["softmax"])
    assert by_type == {"softmax": ["/model.22/dfl/Softmax"]}
    down = qdq.match_float_layers(m, [">/model.0/act/Mul"])[">/model.0/act/Mul"]
    assert set(down) == {"/model.0/act/Mul", "/model.22/cv2.0/Conv", "/model.22/dfl/Softmax",
                         "/model.22/dfl/conv/Conv", "/model.22/cv3.0/Conv", "/model.22/Sigmoid"}


def test_float_layer_pattern_that_matches_nothing_is_an_error(tiny):
    with pytest.raises(EdgebuildError) as e:
        qdq.plan_quantization(onnx.load(str(tiny)), ["/model.99/*"])
    assert e.value.where == "precision.float_layers" and "/model.99/*" in e.value.problem


def test_everything_float_is_an_error(tiny):
    with pytest.raises(EdgebuildError, match="no Conv is left"):
        qdq.plan_quantization(onnx.load(str(tiny)), ["Conv"])


# ---------------------------------------------------------------- calibration + QDQ writer

def test_qdq_model_is_symmetric_int8_per_channel_from_our_ranges(tiny, tmp_path):
    m = onnx.load(str(tiny))
    plan = qdq.plan_quantization(m)
    ranges, n = qdq.collect_ranges(tiny, qdq.calibration_tensors(m), images(8), make_calibrator("minmax"))
    assert n == 8 and set(ranges) >= {"images", "c0", "a0", "c1", "p", "boxes", "c2", "scores"}
    out = tmp_path / "model_qdq.onnx"
    info = qdq.write_qdq(tiny, out, ranges, plan)
    q = onnx.load(str(out))
    onnx.checker.check_model(q)
    inits = inits_of(q)
    assert info == {"quantize_nodes": 2, "dequantize_nodes": 5}  # 2 activations; 2 activation + 3 weight DQs
    for node in q.graph.node:
        if node.op_type == "QuantizeLinear":  # activation scale = amax / 127, zero point int8 0
            lo, hi = ranges[node.input[0]]
            assert inits[node.input[1]] == pytest.approx(max(abs(lo), abs(hi)) / 127, rel=1e-6)
            assert inits[node.input[2]].dtype == np.int8 and inits[node.input[2]] == 0
    w_dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert {inits[n.input[1]].shape for n in w_dq} == {(8,), (16,), (3,)}  # one scale per output channel
    assert all(inits[n.input[0]].dtype == np.int8 for n in w_dq)
    # biases stay float (TensorRT has no int32 DequantizeLinear); the DFL conv keeps float weights
    convs = {n.name: n for n in q.graph.node if n.op_type == "Conv"}
    assert all(b in inits and inits[b].dtype == np.float32 for b in ("b0", "b1", "b2"))
    assert convs["/model.22/dfl/conv/Conv"].input[1] == "dfl_w"
    # and it still computes the same thing, within int8 error
    x = next(images(1, seed=7))
    f, qv = run(tiny, x), run(out, x)
    assert np.abs(f["scores"] - qv["scores"]).max() < 0.05
    assert np.abs(f["boxes"] - qv["boxes"]).max() < 0.5  # distances 0..15 bins


def conv_means(path: Path, outputs: list[str], xs: list[np.ndarray]) -> dict:
    import onnxruntime as ort

    model = qdq.with_outputs(onnx.load(str(path)), outputs)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = [sess.run(outputs, {"images": x}) for x in xs]
    return {o: np.mean([v[i].mean(axis=(0, 2, 3)) for v in values], axis=0) for i, o in enumerate(outputs)}


def clipped_qdq(tiny: Path, out: Path) -> list[str]:
    """QDQ of the tiny model with the head's input range halved (real clipping to correct); returns the int8 convs."""
    m = onnx.load(str(tiny))
    plan = qdq.plan_quantization(m)
    ranges, _ = qdq.collect_ranges(tiny, qdq.calibration_tensors(m), images(8), make_calibrator("minmax"))
    ranges["a0"] = (ranges["a0"][0], ranges["a0"][1] * 0.5)
    qdq.write_qdq(tiny, out, ranges, plan)
    return plan.quantized


def test_bias_correction_removes_the_int8_mean_shift_sequentially(tiny, tmp_path):
    """After correction every int8 conv's per-channel output mean equals float's on the correction images (the
    downstream convs too, which only holds if upstream corrections were applied first); only biases change."""
    from edgebuild.quant.correction import correct

    convs = clipped_qdq(tiny, tmp_path / "q.onnx")
    xs = list(images(6, seed=3))
    outs = ["c0", "c1", "c2"]
    ref = conv_means(tiny, outs, xs)
    before = conv_means(tmp_path / "q.onnx", outs, xs)
    q = onnx.load(str(tmp_path / "q.onnx"))
    old = inits_of(q)
    info = correct(onnx.load(str(tiny)), q, convs, xs, "bias")
    onnx.save(q, str(tmp_path / "bc.onnx"))
    after = conv_means(tmp_path / "bc.onnx", outs, xs)
    for o in outs:
        assert np.abs(after[o] - ref[o]).max() < 1e-5, o
    assert max(np.abs(before[o] - ref[o]).max() for o in ("c1", "c2")) > 1e-3  # there was something to correct
    new = inits_of(q)
    changed = {k for k in old if not np.array_equal(old[k], new[k])}
    assert changed == {"b0", "b1", "b2"} and info["convs"] == 3 and info["skipped"] == []
    assert [n.op_type for n in q.graph.node] == [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]


def test_weight_correction_refits_int8_weights_and_generalizes(tiny, tmp_path):
    """kind=weights re-fits each int8 conv's weights + bias to the float output from the quantized input: the
    outputs' error vs float drops on images it never saw (more than bias correction's), only the int8 convs'
    weights, weight scales and biases change, and the model is still symmetric int8 for TensorRT."""
    from edgebuild.quant.correction import correct

    convs = clipped_qdq(tiny, tmp_path / "q.onnx")
    fit, held = list(images(32, seed=3)), list(images(8, seed=5))

    def error(path):
        return sum(float(np.mean((run(path, x)["scores"] - run(tiny, x)["scores"]) ** 2)) for x in held)

    errors = {"none": error(tmp_path / "q.onnx")}
    for kind in ("bias", "weights"):
        q = onnx.load(str(tmp_path / "q.onnx"))
        old = inits_of(q)
        info = correct(onnx.load(str(tiny)), q, convs, fit, kind)
        onnx.save(q, str(tmp_path / f"{kind}.onnx"))
        errors[kind] = error(tmp_path / f"{kind}.onnx")
        new = inits_of(q)
        changed = {k for k in old if not np.array_equal(old[k], new[k])}
    assert errors["weights"] < errors["bias"] < errors["none"], errors
    assert (info["kind"], info["images"], info["convs"], info["skipped"]) == ("weights", 32, 3, [])
    assert {k for k in changed if not k.startswith("b")} == {"w0_quantized", "w0_scale", "w1_quantized", "w1_scale",
                                                             "w2_quantized", "w2_scale"}
    assert changed >= {"b0", "b1", "b2"} and "dfl_w" not in changed
    assert qdq.check_qdq(q) == {"quantize_nodes": 2, "dequantize_nodes": 5}
    w = new["w1_quantized"]
    assert w.dtype == np.int8 and np.abs(w).max() == 127  # re-quantized per channel: full int8 range


def test_float_targets_in_chunks_give_the_same_correction(tiny, tmp_path, monkeypatch):
    """The float conv outputs are computed a chunk of depth levels at a time (memory bound); one level per chunk
    and everything in one chunk must give identical corrected weights."""
    from edgebuild.quant import correction

    convs = clipped_qdq(tiny, tmp_path / "q.onnx")
    xs = list(images(6, seed=3))
    got = []
    for budget in (1, 1 << 30):
        monkeypatch.setattr(correction, "TARGET_CACHE_BYTES", budget)
        q = onnx.load(str(tmp_path / "q.onnx"))
        correction.correct(onnx.load(str(tiny)), q, convs, xs, "weights")
        got.append(inits_of(q))
    assert all(np.array_equal(got[0][k], got[1][k]) for k in got[0])
    assert not np.array_equal(got[0]["w1_quantized"], inits_of(onnx.load(str(tmp_path / "q.onnx")))["w1_quantized"])


def skip_model(path: Path) -> Path:
    """images -> conv a -> SiLU -> conv b; Add(b, a) -> conv c; Concat(c, a) -> conv d: tensors read several levels
    after they are made (as YOLO's C2f concats and FPN skips are)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name) for name, shape in
             [("wa", (8, 3, 3, 3)), ("ba", (8,)), ("wb", (8, 8, 3, 3)), ("bb", (8,)), ("wc", (8, 8, 1, 1)),
              ("bc", (8,)), ("wd", (4, 16, 3, 3)), ("bd", (4,))]]
    nodes = [helper.make_node("Conv", ["images", "wa", "ba"], ["ca"], name="/a/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["ca"], ["sa"], name="/a/Sigmoid"),
             helper.make_node("Mul", ["ca", "sa"], ["xa"], name="/a/Mul"),
             helper.make_node("Conv", ["xa", "wb", "bb"], ["cb"], name="/b/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["cb", "xa"], ["xb"], name="/b/Add"),
             helper.make_node("Conv", ["xb", "wc", "bc"], ["cc"], name="/c/Conv"),
             helper.make_node("Concat", ["cc", "xa"], ["xc"], name="/c/Concat", axis=1),
             helper.make_node("Conv", ["xc", "wd", "bd"], ["out"], name="/d/Conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "skips", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_level_inputs_from_kept_tensors_equal_a_run_from_the_image(tmp_path):
    """The correction's QDQ conv inputs, computed level by level from the tensors kept per image, equal running the
    QDQ model from the image (with the upstream convs' weights changed between levels, as the correction does)."""
    from edgebuild.quant import correction

    f = skip_model(tmp_path / "skips.onnx")
    m = onnx.load(str(f))
    plan = qdq.plan_quantization(m)
    ranges, _ = qdq.collect_ranges(f, qdq.calibration_tensors(m), images(4), make_calibrator("minmax"))
    qdq.write_qdq(f, tmp_path / "q.onnx", ranges, plan)
    q = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "q.onnx")))
    convs = {n.name: n for n in q.graph.node if n.op_type == "Conv"}
    depth, above = correction._depths(q, set(convs))
    assert sorted(depth.values()) == [1, 2, 3, 4]
    xs = list(images(3, seed=7))
    kept = correction._QdqInputs(q, "images", above, xs)
    inits = {i.name: i for i in q.graph.initializer}
    for k in range(4):
        wanted = [convs[name].input[0] for name in convs if depth[name] == k + 1]
        got = kept.level(k, wanted)
        full = correction.session(onnx.utils.Extractor(q).extract_model(["images"], wanted))
        for x, g in zip(xs, got):
            for t, v in zip(wanted, full.run(wanted, {"images": x})):
                np.testing.assert_allclose(g[t], v, atol=1e-5)
        for name in convs:  # "correct" this level's convs before the next level reads them
            if depth[name] == k + 1:
                b = inits[convs[name].input[2]]
                b.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(b) + 0.5, b.name))
    assert all(len(v) <= 3 for v in kept.values)  # tensors no later level reads are dropped


def test_qdq_step_applies_the_correction_only_when_asked(tiny, tmp_path):
    """The qdq step itself (calibset manifest of real image files -> model_qdq.onnx + meta.json)."""
    import hashlib

    import cv2
    from omegaconf import OmegaConf

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "model.onnx").write_bytes(tiny.read_bytes())
    (tmp_path / "export" / "meta.json").write_text("{}")
    (tmp_path / "calibset").mkdir()
    items = []
    for i, x in enumerate(images(5, seed=11)):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), (x[0].transpose(1, 2, 0) * 255).astype(np.uint8))
        items.append({"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    (tmp_path / "calibset" / "manifest.json").write_text(json.dumps({"count": 5, "items": items}))
    inputs = {"export": tmp_path / "export", "calibset": tmp_path / "calibset"}
    metas, inits = {}, {}
    for kind in ("none", "bias", "weights", "finetune"):
        cfg = OmegaConf.create({"calibration": {"method": "minmax", "percentile": 99.99, "num_bins": 2048,
                                                "correction": kind, "correction_images": 3, "correction_steps": 5},
                                "precision": {"mode": "int8", "float_layers": []}, "model": {"imgsz": 16}})
        out = tmp_path / kind
        out.mkdir()
        registry()["qdq"].run(StepContext("qdq", cfg, out, inputs))
        metas[kind] = json.loads((out / "meta.json").read_text())["quantization"]
        inits[kind] = inits_of(onnx.load(str(out / "model_qdq.onnx")))
    assert metas["none"]["correction"] is None
    for kind in ("bias", "weights", "finetune"):
        assert metas[kind]["correction"]["kind"] == kind
        assert metas[kind]["correction"]["images"] == 3 and metas[kind]["correction"]["convs"] == 3
        assert all(not np.array_equal(inits["none"][b], inits[kind][b]) for b in ("b0", "b1", "b2"))
    assert all(np.array_equal(inits["none"][k], inits["bias"][k]) for k in inits["none"] if k not in ("b0", "b1", "b2"))
    assert not np.array_equal(inits["none"]["w0_quantized"], inits["weights"]["w0_quantized"])


def test_finetune_trains_int8_weights_against_the_float_outputs(tiny, tmp_path):
    """kind=finetune trains the int8 convs' weights and biases through the fake-quantized model (activation scales
    frozen) to match the float outputs: the training loss falls, the outputs' error vs float drops on images it
    never saw, only int8 weights, weight scales and biases change, and the model stays symmetric int8."""
    from edgebuild.quant.finetune import finetune

    convs = clipped_qdq(tiny, tmp_path / "q.onnx")
    fit, held = list(images(32, seed=3)), list(images(8, seed=5))

    def error(path):
        return sum(float(np.mean((run(path, x)[o] - run(tiny, x)[o]) ** 2)) for x in held for o in ("boxes", "scores"))

    q = onnx.load(str(tmp_path / "q.onnx"))
    old = inits_of(q)
    info = finetune(onnx.load(str(tiny)), q, convs, fit, steps=200)
    onnx.save(q, str(tmp_path / "ft.onnx"))
    assert error(tmp_path / "ft.onnx") < 0.95 * error(tmp_path / "q.onnx")
    assert info["loss_last"] < info["loss_first"]
    assert (info["kind"], info["images"], info["convs"], info["skipped"], info["steps"]) == ("finetune", 32, 3, [], 200)
    new = inits_of(q)
    changed = {k for k in old if not np.array_equal(old[k], new[k])}
    assert changed == {"b0", "b1", "b2", "w0_quantized", "w0_scale", "w1_quantized", "w1_scale", "w2_quantized",
                       "w2_scale"}  # activation scales (a0_scale, images_scale) and the DFL conv untouched
    assert qdq.check_qdq(q) == {"quantize_nodes": 2, "dequantize_nodes": 5}


def test_finetune_runs_batch_one_exports_in_batches(tmp_path):
    """Exports fix batch 1 in their Reshape constants; the torch copy takes a batch and still equals onnxruntime."""
    import torch

    from edgebuild.quant.finetune import _torch_model

    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (4, 3, 1, 1)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 4, 64], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], name="/model.0/conv/Conv"),
             helper.make_node("Reshape", ["c", "shape"], ["flat"], name="/model.22/Reshape"),
             helper.make_node("Softmax", ["flat"], ["out"], name="/model.22/Softmax", axis=2)]
    graph = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 64])], [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "r.onnx"))
    xs = list(images(3, seed=2))
    xs = [x[:, :, :8, :8].copy() for x in xs]
    module, convs = _torch_model(model, ["/model.0/conv/Conv"])
    got = module(torch.from_numpy(np.concatenate(xs))).detach().numpy()
    want = np.concatenate([run(tmp_path / "r.onnx", x)["out"] for x in xs])
    assert got.shape == (3, 4, 64) and np.abs(got - want).max() < 1e-5
    assert list(convs) == ["/model.0/conv/Conv"] and convs["/model.0/conv/Conv"].weight.shape == (4, 3, 1, 1)


def test_correction_without_images_is_a_user_error(tiny):
    from edgebuild.quant.correction import correct
    from edgebuild.quant.finetune import finetune

    m = onnx.load(str(tiny))
    for run_correction in (lambda: correct(m, m, ["/model.0/conv/Conv"], [], "weights"),
                           lambda: finetune(m, m, ["/model.0/conv/Conv"], [], steps=10)):
        with pytest.raises(EdgebuildError) as e:
            run_correction()
        assert e.value.where == "calibration.correction_images"


def test_calibration_streams_python_memory_does_not_grow_with_images(tiny):
    tensors = qdq.calibration_tensors(onnx.load(str(tiny)))

    def peak(n):
        tracemalloc.start()
        qdq.collect_ranges(tiny, tensors, images(n), make_calibrator("entropy", num_bins=2048))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(4), peak(64)
    assert large < small * 1.2 + 256 * 1024, (small, large)


def test_empty_calibration_set_is_a_user_error(tiny):
    with pytest.raises(EdgebuildError) as e:
        qdq.collect_ranges(tiny, ["images"], iter(()), make_calibrator("minmax"))
    assert e.value.where == "calibset"


# ---------------------------------------------------------------- TensorRT calibration cache

# Real TensorRT caches quoted from public sources:
#  - microsoft/onnxruntime, onnxruntime/core/providers/tensorrt/tensorrt_execution_provider_utils.h
#    (ReadDynamicRange: "Native TensorRT generated calibration table ... tensor name : scale in 32-bit single
#    precision IEEE754 format", dynamic range = scale * 127; its ORT-table example gives data_0 the value 2.008338):
ORT_EXAMPLE = "TRT-7103-EntropyCalibration2\ndata_0: 4000889d\n"
#  - a TensorRT 8.5.1 cache of a small PyTorch CNN posted in an NVIDIA/TensorRT issue (first lines):
TRT_EXAMPLE = """TRT-8510-EntropyCalibration2
x: 4000890a
/conv1/Conv_output_0: 3f9db09c
/relu1/Relu_output_0: 3fb6163c
(Unnamed Layer* 8) [Constant]_output: 39137939
y: 3e1338d5
"""


def test_parse_documented_tensorrt_caches():
    ort = calib_cache.parse_cache(ORT_EXAMPLE)
    assert (ort.version, ort.algorithm) == ("7103", "EntropyCalibration2")
    assert ort.scales["data_0"] == pytest.approx(2.008338, abs=1e-6)
    trt = calib_cache.parse_cache(TRT_EXAMPLE.encode())
    assert trt.version == "8510" and len(trt.scales) == 5
    assert trt.scales["(Unnamed Layer* 8) [Constant]_output"] == pytest.approx(1.4068e-4, rel=1e-3)
    assert trt.amax()["x"] == pytest.approx(255.06, abs=0.01)  # a [0, 255] input, as in that model
    # our writer reproduces TensorRT's own tensor lines byte for byte from the same amax
    ours = calib_cache.format_cache({k: (-v, v) for k, v in trt.amax().items()}, "entropy")
    assert ours.splitlines()[1:] == TRT_EXAMPLE.splitlines()[1:]


def test_cache_round_trip_and_header(tiny):
    ranges = {"images": (0.0, 1.0), "a0": (-0.278, 3.5), "c1": (-7.25, 2.0), "zeros": (0.0, 0.0)}
    text = calib_cache.format_cache(ranges, "minmax", "10.3.0")
    lines = text.splitlines()
    assert lines[0] == "TRT-100300-MinMaxCalibration"
    assert lines[1] == "images: " + struct.pack(">f", np.float32(1.0) / np.float32(127.0)).hex()
    back = calib_cache.parse_cache(text)
    for name, (lo, hi) in ranges.items():
        assert back.amax()[name] == pytest.approx(max(abs(lo), abs(hi), 1e-30), rel=1e-6)
    assert list(back.scales) == list(ranges)
    assert calib_cache.parse_cache(calib_cache.format_cache(ranges, "percentile")).algorithm == "EntropyCalibration2"
    assert calib_cache.retarget(text, "8.6.2").splitlines()[0] == b"TRT-8602-MinMaxCalibration"
    assert calib_cache.retarget(text, "8.6.2").splitlines()[1:] == text.encode().splitlines()[1:]


@pytest.mark.parametrize("bad", ["", "images: 3c010204\n", "TRT-8602-EntropyCalibration2\nimages 3c010204\n",
                                 "TRT-8602-EntropyCalibration2\nimages: 3c0102\n"])
def test_malformed_cache_is_a_clear_error(bad):
    with pytest.raises(EdgebuildError) as e:
        calib_cache.parse_cache(bad)
    assert e.value.where == "calibration.cache"


def test_version_codes():
    assert calib_cache.version_code("8.6.2") == "8602"
    assert calib_cache.version_code("7.1.3") == "7103"  # JetPack 4.4, the header of the onnxruntime example
    assert calib_cache.version_code("8.5.2.2") == "8502"  # JetPack 5.1 (build number ignored)
    assert calib_cache.version_code("10.3.0") == "100300"


# ---------------------------------------------------------------- engine step

def test_trtexec_command_is_an_argument_list(tmp_path):
    nasty = "/model.22/cv2 $(rm -rf ~)/Conv"
    argv = engine_build.trtexec_argv("mixed", ["/model.22/cv2.0/Conv", nasty])
    assert argv[:2] == ["trtexec", "--onnx=model_qdq.onnx"] and "--int8" in argv and "--fp16" in argv
    assert f"--layerPrecisions=/model.22/cv2.0/Conv:fp16,{nasty}:fp16" in argv
    script = engine_build.build_script(argv)
    last = script.strip().splitlines()[-1]
    assert shlex.split(last) == argv + ["$@"]  # the shell sees exactly our arguments, nothing expanded
    assert "--int8" not in engine_build.trtexec_argv("fp16", [])
    with pytest.raises(EdgebuildError, match="layerPrecisions"):
        engine_build.trtexec_argv("mixed", ["a,b"])


@pytest.mark.skipif(HAS_TRT, reason="checks the behaviour without tensorrt")
def test_engine_step_without_tensorrt_writes_script_and_status_never_an_engine(tiny, tmp_path):
    qdir = tmp_path / "qdq"
    qdir.mkdir()
    m = onnx.load(str(tiny))
    plan = qdq.plan_quantization(m, ["/model.22/cv3*"])
    ranges, _ = qdq.collect_ranges(tiny, qdq.calibration_tensors(m), images(4), make_calibrator("minmax"))
    qdq.write_qdq(tiny, qdir / "model_qdq.onnx", ranges, plan)
    (qdir / "meta.json").write_text(json.dumps({"quantization": {"mode": "mixed", "float_nodes": plan.float_nodes}}))
    out = tmp_path / "out"
    out.mkdir()
    kind = registry()["engine"]
    kind.run(StepContext("engine", None, out, {"qdq": qdir}))
    status = json.loads((out / "engine.json").read_text())
    assert status["built"] is False and status["reason"] == "engine not built here: tensorrt not importable"
    assert not (out / "model.engine").exists()
    script = (out / "build_engine.sh").read_text()
    assert "--layerPrecisions=/model.22/cv3.0/Conv:fp16" in script and (out / "build_engine.sh").stat().st_mode & 0o100
    assert kind.environment(None) == {"tensorrt": None, "gpu": engine_build.probe().gpu}


@pytest.mark.skipif(HAS_TRT, reason="checks the behaviour without tensorrt")
def test_require_engine_fails_at_plan_time_without_tensorrt():
    from omegaconf import OmegaConf

    from edgebuild.schema import validate

    cfg = validate(OmegaConf.create({"target": {"backend": "tensorrt", "require_engine": True}}))
    assert registry()["engine"].precheck is engine_build.require_engine_precheck
    with pytest.raises(EdgebuildError) as e:
        engine_build.require_engine_precheck(cfg)
    assert e.value.where == "target.require_engine" and "tensorrt" in e.value.problem
    engine_build.require_engine_precheck(validate(OmegaConf.create({"target": {"backend": "tensorrt"}})))


def test_steps_are_declared_as_the_contract_says():
    from omegaconf import OmegaConf

    from edgebuild.schema import validate

    kinds = registry()
    q, e = kinds["qdq"], kinds["engine"]
    assert q.upstream == ("export", "calibset") and q.isolate
    assert q.artifacts == ("model_qdq.onnx", "calibration.cache", "meta.json")
    assert e.upstream == ("qdq", "?precision_search") and {"build_engine.sh", "engine.json"} <= set(e.artifacts)
    trt_cfg = validate(OmegaConf.create({"target": {"backend": "tensorrt"}}))
    tfl_cfg = validate(OmegaConf.create({"target": {"backend": "tflite"}}))
    assert q.applies(trt_cfg) and e.applies(trt_cfg) and not q.applies(tfl_cfg) and not e.applies(tfl_cfg)


@needs_trt
def test_real_engine_from_qdq_model(tiny, tmp_path):
    env = engine_build.probe()
    if not env.gpu:
        pytest.skip("tensorrt imports but no CUDA GPU answers")
    import tensorrt as trt

    m = onnx.load(str(tiny))
    ranges, _ = qdq.collect_ranges(tiny, qdq.calibration_tensors(m), images(4), make_calibrator("minmax"))
    qdq.write_qdq(tiny, tmp_path / "model_qdq.onnx", ranges, qdq.plan_quantization(m))
    facts = engine_build.build_engine(tmp_path / "model_qdq.onnx", tmp_path / "model.engine", "int8", [],
                                      timing_cache=tmp_path / "timing.cache")
    assert facts["built"]
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine((tmp_path / "model.engine").read_bytes())
    assert engine is not None and (tmp_path / "timing.cache").stat().st_size > 0


# ---------------------------------------------------------------- the real detector

@pytest.mark.slow
def test_qdq_on_shapes_hard_yolov8n(shared_data, tmp_path):
    """Ultralytics ONNX of the shared detector: 63 convs quantized, DFL float, a cache covering every tensor,
    and the QDQ model's scores close to float on a val image (a single anchor may flip: no max-error check)."""
    import shutil

    from ultralytics import YOLO

    from edgebuild.data.preprocess import preprocess

    shutil.copy(shared_data / "weights" / "shapes-hard-yolov8n-det.pt", tmp_path / "det.pt")
    f = Path(YOLO(str(tmp_path / "det.pt")).export(format="onnx", imgsz=320, opset=17, simplify=True))
    m = onnx.load(str(f))
    plan = qdq.plan_quantization(m)
    assert len(plan.quantized) == 63 and plan.dfl == ["/model.22/dfl/conv/Conv"]
    train = sorted((shared_data / "shapes-hard" / "images" / "train").glob("*.jpg"))[:16]
    tensors = qdq.calibration_tensors(m)
    ranges, n = qdq.collect_ranges(f, tensors, (preprocess(p, 320)[0] for p in train), make_calibrator("entropy"))
    qdq.write_qdq(f, tmp_path / "q.onnx", ranges, plan)
    cache = calib_cache.parse_cache(calib_cache.format_cache(ranges, "entropy"))
    assert set(cache.scales) == set(tensors) and n == 16
    x, _ = preprocess(sorted((shared_data / "shapes-hard" / "images" / "val").glob("*.jpg"))[0], 320)
    fo, qo = run(f, x)["output0"][0], run(tmp_path / "q.onnx", x)["output0"][0]
    fs, qs = fo[4:], qo[4:]  # class scores [10, 2100]
    assert np.abs(fs - qs).mean() < 0.01
    confident = fs > 0.5
    assert confident.sum() >= 3 and (qs[confident] > 0.25).mean() >= 0.9
    assert np.corrcoef(fo[:4].ravel(), qo[:4].ravel())[0, 1] > 0.999  # pixel boxes


@pytest.mark.slow
@pytest.mark.parametrize("method,kind,n_images", [("minmax", "weights", 64), ("entropy", "finetune", 300)])
def test_orin_nano_recipe_int8_is_within_one_point_of_float(shared_data, tmp_path, method, kind, n_images):
    """The issue's acceptance through the real CLI: `edgebuild +recipe=orin_nano_det calibration=<method>` (all 63
    convs int8, the method's ranges and default correction) -> QDQ ONNX whose box mAP50-95 in onnxruntime is within
    the recipe's 1.0-pt gate of the float ONNX's, both scored by the same evaluator on all 400 val images."""
    from tests.cli import run

    out = tmp_path / "run"
    proc = run("+recipe=orin_nano_det", f"calibration={method}", f"hydra.run.dir={out}", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    f, q = report["float"]["bbox"], report["quantized"]["bbox"]
    assert f["map50_95"] > 0.7 and q["map50_95"] > 0.7, "float and INT8 both detect the shapes"
    assert report["gate"]["passed"] and report["gate"]["max_map_drop"] == 1.0, report["gate"]
    assert report["quantized"]["artifact"]["file"] == "model_qdq.onnx", report["quantized"]["artifact"]
    fix = report["mixed_precision"]["correction"]
    assert fix["kind"] == kind and fix["convs"] == 63 and fix["images"] == n_images and fix["skipped"] == []
    meta = json.loads((out / "artifacts" / "meta.json").read_text())["quantization"]
    assert meta["method"] == method and meta["quantized_convs"] == 63 and meta["dfl_float"]
    assert (out / "artifacts" / "calibration.cache").is_file() and (out / "artifacts" / "build_engine.sh").is_file()
