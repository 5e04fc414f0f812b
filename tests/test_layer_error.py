"""Per-layer INT8 error: the SQNR table, its TFLite (LiteRT) and TensorRT-QDQ (onnxruntime) collectors, the step."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from omegaconf import OmegaConf

from edgebuild.errors import EdgebuildError
from edgebuild.quant.layer_error import SQNR
from tests import test_tensorrt as trt
from tests.test_tflite import SIZE, images, tiny  # noqa: F401  (tiny: the module-scoped SavedModel fixture)


def _sorted_worst_first(rows):
    return [r["sqnr_db"] for r in rows] == sorted(r["sqnr_db"] for r in rows)


# ---------------------------------------------------------------- the accumulator

def test_sqnr_sums_energy_over_images_and_sorts_worst_first():
    rng = np.random.default_rng(0)
    acc = SQNR({"a": "CONV_2D", "b": "ADD"}, {"b": ["a", "x"]})
    noise = {"a": 0.1, "b": 0.3}
    for _ in range(3):
        for name, s in noise.items():
            f = rng.normal(0, 1, 10_000)
            acc.add(name, f, f + rng.normal(0, s, f.shape))
    f = rng.normal(0, 1, 100)
    acc.add("exact", f, f)
    rows = acc.rows()
    assert [r["tensor"] for r in rows] == ["b", "a", "exact"]
    by = {r["tensor"]: r for r in rows}
    for name, s in noise.items():   # S/N = 1/s^2
        assert by[name]["sqnr_db"] == pytest.approx(-20 * math.log10(s), abs=0.1)
        assert by[name]["rel_rmse"] == pytest.approx(s, rel=0.02)
    assert by["exact"]["sqnr_db"] == 99.0 and by["exact"]["rel_rmse"] == 0.0
    assert by["b"]["op"] == "ADD" and by["b"]["lost_db"] == pytest.approx(by["a"]["sqnr_db"] - by["b"]["sqnr_db"])
    assert by["a"]["lost_db"] is None                        # no known quantized input
    json.dumps(rows)


# ---------------------------------------------------------------- TFLite: int8 .tflite vs calibrated float, in LiteRT

def _tflite_models(saved_model, float_layers=()):
    from edgebuild.tflite import quantize

    calibrated, _ = quantize.calibrate(saved_model, images(8), 8, input_shape=[1, SIZE, SIZE, 3])
    model, _ = quantize.quantize_int8(calibrated, float_layers=list(float_layers))
    return calibrated, model


@pytest.mark.slow
def test_tflite_table_covers_int8_activations_and_float_layers_remove_the_worst(tiny):  # noqa: F811
    from ai_edge_litert.interpreter import Interpreter

    from edgebuild.tflite.layer_error import collect

    d, _, _ = tiny
    calibrated, model = _tflite_models(d / "saved_model")
    rows = collect(calibrated, model, images(3, seed=5)())
    assert rows and _sorted_worst_first(rows)
    finite = [r for r in rows if math.isfinite(r["sqnr_db"]) and 0 < r["sqnr_db"] < 99]
    assert len(finite) >= 0.8 * len(rows), rows
    assert all(r["op"] for r in rows) and any(r["op"] == "CONV_2D" for r in rows)
    assert any(r["lost_db"] is not None for r in rows)       # ops downstream of other int8 tensors
    # every row is an int8 activation of the artifact, never the uint8 input or a constant
    details = {t["name"]: t for t in Interpreter(model_content=model).get_tensor_details()}
    assert all(details[r["tensor"]]["dtype"] == np.int8 for r in rows)
    # the worst row, recomputed by hand: raw uint8 pixels into the int8 model, per-axis quantization parameters
    worst = rows[0]
    s = n = 0.0
    for x in images(3, seed=5)():
        got = {}
        for b, feed in ((calibrated, x), (model, np.round(x * 255).astype(np.uint8))):
            it = Interpreter(model_content=b, experimental_preserve_all_tensors=True)
            it.allocate_tensors()
            it.set_tensor(it.get_input_details()[0]["index"], feed)
            it.invoke()
            t = next(t for t in it.get_tensor_details() if t["name"] == worst["tensor"])
            p = t["quantization_parameters"]
            v = it.get_tensor(t["index"]).astype(np.float64)
            got[b is model] = (v - p["zero_points"][0]) * p["scales"][0] if len(p["scales"]) else v
        s += float(np.sum(got[False] ** 2))
        n += float(np.sum((got[False] - got[True]) ** 2))
    assert worst["sqnr_db"] == pytest.approx(10 * math.log10(s / n), abs=0.01)
    assert worst["rel_rmse"] == pytest.approx(math.sqrt(n / s), rel=1e-3)

    _, kept = _tflite_models(d / "saved_model", [worst["tensor"]])
    again = collect(calibrated, kept, images(3, seed=5)())
    assert worst["tensor"] not in {r["tensor"] for r in again}
    assert again[0]["tensor"] != worst["tensor"] and len(again) < len(rows)


# ---------------------------------------------------------------- TensorRT QDQ: model_qdq.onnx vs model.onnx in onnxruntime

def _qdq(tmp_path, float_layers=()):
    from edgebuild.quant.calibrators import make_calibrator
    from edgebuild.tensorrt import qdq

    path = trt.tiny_model(tmp_path / "model.onnx")
    m = onnx.load(str(path))
    plan = qdq.plan_quantization(m, float_layers)
    ranges, _ = qdq.collect_ranges(path, qdq.calibration_tensors(m), trt.images(8), make_calibrator("minmax"))
    qdq.write_qdq(path, tmp_path / "model_qdq.onnx", ranges, plan)
    return path, tmp_path / "model_qdq.onnx", plan


def test_qdq_table_has_one_row_per_quantized_activation(tmp_path):
    from edgebuild.tensorrt.layer_error import activation_pairs, collect

    path, q, plan = _qdq(tmp_path)
    assert set(activation_pairs(onnx.load(str(q)))) == set(plan.activations) == {"images", "a0"}
    rows = collect(path, q, trt.images(4, seed=3))
    by = {r["tensor"]: r for r in rows}
    assert set(by) == {"images", "a0"} and _sorted_worst_first(rows)
    assert by["images"]["op"] == "/model.0/conv/Conv"
    assert by["a0"]["op"] == "/model.22/cv2.0/Conv, /model.22/cv3.0/Conv"   # both head convs read it
    # uniform [0, 1) input, symmetric int8 with amax ~1: noise = (1/127)^2 / 12, signal = 1/3
    assert by["images"]["sqnr_db"] == pytest.approx(10 * math.log10(4 * 127 ** 2), abs=0.5)
    assert 10 < by["a0"]["sqnr_db"] < 60 and all(r["lost_db"] is None for r in rows)


def test_qdq_table_follows_float_layers(tmp_path):
    from edgebuild.tensorrt.layer_error import collect

    path, q, _ = _qdq(tmp_path, ["/model.0/conv/Conv"])
    assert [r["tensor"] for r in collect(path, q, trt.images(2))] == ["a0"]


# ---------------------------------------------------------------- the step and its config

def _calibset(tmp_path, n, size):
    import cv2

    from edgebuild.digest import file_sha256

    d = tmp_path / "calibset"
    d.mkdir()
    items = []
    rng = np.random.default_rng(0)
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        items.append({"path": str(p), "sha256": file_sha256(p)})
    (d / "manifest.json").write_text(json.dumps({"items": items}))
    return d


def test_layer_error_step_on_a_qdq_model(tmp_path):
    from edgebuild import schema
    from edgebuild.engine import StepContext, registry

    kind = registry()["layer_error"]
    assert kind.upstream == ("export", "calibset", "?calibrate", "?tflite", "?qdq", "?precision_search") and kind.isolate
    assert kind.config == ("model.imgsz", "validation.layer_error_images")
    for backend in ("tflite", "tensorrt"):
        for mode, applies in (("int8", True), ("mixed", True), ("auto", True), ("fp16", False)):
            cfg = schema.validate(OmegaConf.create({"target": {"backend": backend}, "precision": {
                "mode": mode, "float_layers": ["SOFTMAX"] if mode == "mixed" else []}}))
            assert kind.applies(cfg) == applies, (backend, mode)
    path, q, _ = _qdq(tmp_path)
    export, qdir, out = tmp_path / "export", tmp_path / "qdq", tmp_path / "out"
    for d in (export, qdir, out):
        d.mkdir()
    path.rename(export / "model.onnx")
    (export / "meta.json").write_text("{}")   # rgb input, as every export without model.input.order
    q.rename(qdir / "model_qdq.onnx")
    cfg = OmegaConf.create({"model": {"imgsz": 16}, "validation": {"layer_error_images": 2}})  # the tiny model's size
    inputs = {"export": export, "calibset": _calibset(tmp_path, 3, 16), "qdq": qdir}
    kind.run(StepContext("layer_error", cfg, out, inputs))
    got = json.loads((out / "layer_error.json").read_text())
    assert got["backend"] == "tensorrt" and got["images"] == 2 and got["tensors"] == 2
    assert {r["tensor"] for r in got["rows"]} == {"images", "a0"} and _sorted_worst_first(got["rows"])


def test_layer_error_images_must_be_positive():
    from edgebuild import schema

    with pytest.raises(EdgebuildError) as e:
        schema.validate(OmegaConf.create({"validation": {"layer_error_images": 0}}))
    assert e.value.where == "validation.layer_error_images" and "at least 1, got 0" in e.value.problem
