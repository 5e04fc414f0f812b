"""precision=auto: the search (edgebuild.quant.auto), TensorRT's Q/DQ removal, the held-back search images, config."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from omegaconf import OmegaConf

from edgebuild.errors import EdgebuildError
from edgebuild.quant.auto import Candidate, search
from tests import test_tensorrt as trt
from tests.test_layer_error import _qdq

GAIN = {"a": 0.1, "b": 0.6, "c": 0.3, "d": 0.05}   # what keeping each layer float recovers, in points


def _drop(base=1.5):
    calls = []

    def drop(layers):
        calls.append(list(layers))
        return base - sum(GAIN[x] for x in layers)
    return drop, calls


def _cands():  # ranked by a sensitivity that disagrees with the measured gain
    return lambda: [Candidate(x, x, s) for x, s in (("a", 9.0), ("b", 5.0), ("c", 3.0), ("d", 1.0))]


def test_all_int8_within_budget_keeps_zero_layers_and_evaluates_once():
    drop, calls = _drop(base=0.5)
    r = search(_cands(), drop, budget=0.7, max_layers=3)
    assert r["float_layers"] == [] and r["budget_met"] and calls == [[]] and r["singles"] == []


def test_greedy_adds_layers_by_measured_gain_until_within_budget():
    drop, calls = _drop()
    r = search(_cands(), drop, budget=0.7, max_layers=3)
    assert r["float_layers"] == ["b", "c"] and r["budget_met"] and r["drop"] == pytest.approx(0.6)
    assert [p["layers"] for p in r["curve"]] == [[], ["b"], ["b", "c"]]
    assert calls == [[], ["a"], ["b"], ["c"], ["d"], ["b", "c"]] and r["evaluations"] == 6


def test_budget_out_of_reach_returns_the_best_point_and_says_so():
    drop, _ = _drop()
    r = search(_cands(), drop, budget=0.1, max_layers=2)
    assert not r["budget_met"] and r["float_layers"] == ["b", "c"] and len(r["curve"]) == 3
    r0 = search(_cands(), _drop()[0], budget=0.1, max_layers=0)
    assert r0["float_layers"] == [] and not r0["budget_met"] and r0["evaluations"] == 1


def test_output_noise_and_ranking_by_what_a_layer_does_to_the_outputs():
    from edgebuild.quant.auto import output_noise, rank_by_output

    rng = np.random.default_rng(0)
    ref = [{"boxes": rng.normal(0, 100, 5000), "scores": rng.random(20)} for _ in range(3)]
    noisy = [{"boxes": r["boxes"] + rng.normal(0, 1, 5000), "scores": r["scores"]} for r in ref]
    assert output_noise(ref, ref) == 0.0
    assert output_noise(noisy, ref) == pytest.approx(1 / 100 ** 2, rel=0.1)     # boxes' relative noise only
    effect = {(): 1.0, ("a",): 0.99, ("b",): 0.1, ("c",): 0.5}                  # b matters most to the outputs
    got = rank_by_output(_cands()(), lambda layers: effect[tuple(layers)] if tuple(layers) in effect else 1.0, 2)
    assert [c.layer for c in got] == ["b", "c"] and got[0].score == pytest.approx(10.0)


def test_keep_float_equals_placing_the_conv_float_before_quantization(tmp_path):
    """Removing a conv's Q/DQ from the finished QDQ model = the model the QDQ writer makes with it float."""
    import onnxruntime as ort

    from edgebuild.tensorrt.auto import conv_inputs, keep_float

    conv = "/model.0/conv/Conv"   # the only reader of `images`
    for d in ("all", "planned"):
        (tmp_path / d).mkdir()
    path, q_all, _ = _qdq(tmp_path / "all")
    _, q_planned, _ = _qdq(tmp_path / "planned", [conv])
    qdq, float_model = onnx.load(str(q_all)), onnx.load(str(path))
    got = keep_float(qdq, float_model, [conv])
    onnx.checker.check_model(got)
    assert set(conv_inputs(got)) == set(conv_inputs(qdq)) - {conv}
    count = lambda m, op: sum(n.op_type == op for n in m.graph.node)  # noqa: E731
    assert count(got, "QuantizeLinear") == count(qdq, "QuantizeLinear") - 1                 # images' Q
    assert count(got, "DequantizeLinear") == count(qdq, "DequantizeLinear") - 2             # and its weights'
    a = ort.InferenceSession(got.SerializeToString(), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(q_planned), providers=["CPUExecutionProvider"])
    for x in trt.images(3, seed=5):
        for u, v in zip(a.run(None, {"images": x}), b.run(None, {"images": x})):
            np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6)


def test_keep_float_gives_the_conv_the_float_tensor_when_an_int8_conv_shares_it(tmp_path):
    from edgebuild.tensorrt.auto import conv_inputs, keep_float

    path, q, _ = _qdq(tmp_path)
    qdq, float_model = onnx.load(str(q)), onnx.load(str(path))
    got = keep_float(qdq, float_model, ["/model.22/cv2.0/Conv"])
    by = {n.name: n for n in got.graph.node}
    assert by["/model.22/cv2.0/Conv"].input[0] == "a0"                      # float, before a0's Q/DQ
    assert conv_inputs(got)["/model.22/cv3.0/Conv"][0] == "a0"              # still int8 through the shared Q/DQ
    w = {i.name: onnx.numpy_helper.to_array(i) for i in got.graph.initializer}
    f = {i.name: onnx.numpy_helper.to_array(i) for i in float_model.graph.initializer}
    np.testing.assert_array_equal(w[by["/model.22/cv2.0/Conv"].input[1]], f["w1"])   # the float model's weights
    both = keep_float(qdq, float_model, ["/model.22/cv2.0/Conv", "/model.22/cv3.0/Conv"])
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "a0" for n in both.graph.node)


def _cfg(**precision):
    from edgebuild import schema

    return schema.validate(OmegaConf.create({"precision": {"mode": "auto", **precision}}))


def test_auto_config_is_checked():
    cfg = _cfg()
    assert cfg.precision.auto.images == 200 and cfg.precision.auto.max_drop is None
    for bad, key in (({"float_layers": ["SOFTMAX"]}, "precision.float_layers"),
                     ({"auto": {"images": 0}}, "precision.auto.images"),
                     ({"auto": {"max_drop": -1.0}}, "precision.auto.max_drop"),
                     ({"auto": {"candidates": 0}}, "precision.auto.candidates"),
                     ({"auto": {"bogus": 1}}, "precision.auto.bogus")):
        with pytest.raises(EdgebuildError) as e:
            _cfg(**bad)
        assert e.value.where == key


def test_budget_defaults_to_the_gate_minus_a_margin():
    from edgebuild.steps.precision_search import MARGIN, budget

    from edgebuild import schema

    cfg = schema.validate(OmegaConf.create({"precision": {"mode": "auto"}, "validation": {"max_map_drop": 1.0}}))
    assert budget(cfg) == pytest.approx(1.0 - MARGIN)
    cfg = schema.validate(OmegaConf.create({"precision": {"mode": "auto", "auto": {"max_drop": 0.4}}}))
    assert budget(cfg) == 0.4


# ---------------------------------------------------------------- through the CLI (slow)

def _dataset_with_unreadable_val(tmp_path, shared_data):
    """shapes-hard's train split (linked) and a val split of garbage: images no decoder reads, labels no parser takes."""
    src = shared_data / "shapes-hard"
    d = tmp_path / "data"
    for sub in ("images", "labels"):
        (d / sub / "val").mkdir(parents=True)
        (d / sub / "train").symlink_to(src / sub / "train")
    for i in range(4):
        (d / "images" / "val" / f"v{i}.jpg").write_bytes(b"not an image " * 8)
        (d / "labels" / "val" / f"v{i}.txt").write_text("not a label\n")
    (d / "data.yaml").write_text((src / "data.yaml").read_text())
    return d / "data.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["cpu_det", "orin_nano_det"])
def test_search_never_reads_the_val_split_and_builds_the_chosen_layers(recipe, tmp_path, shared_data, cache_dir):
    """precision=auto with an unreachable budget (max_drop=0): the search tries its candidates and builds the
    artifact with one layer float, on held-back train images; the val split is garbage, so the first step that
    reads it (validate_float, after the search) fails with the error naming it."""
    import json

    from tests.cli import error_paragraph, run

    data = _dataset_with_unreadable_val(tmp_path, shared_data)
    proc = run(f"+recipe={recipe}", "precision=auto", f"dataset.path={data}", "dataset.on_corrupt=error",
               "calibration.count=32", "calibration.correction=none", "precision.auto.images=40",
               "precision.auto.candidates=2", "precision.auto.max_float_layers=1", "precision.auto.max_drop=0",
               "precision.auto.rank_images=2", "validation.layer_error_images=1", f"hydra.run.dir={tmp_path / 'run'}",
               cache=cache_dir)
    assert proc.returncode == 2 and "images/val/v" in error_paragraph(proc), proc.stderr[-3000:]
    [entry] = [p for p in (cache_dir / "steps" / "precision_search").iterdir() if len(p.name) == 64]
    result = json.loads((entry / "search.json").read_text())
    assert result["images"] == 40 and result["split"] == "train" and not result["budget_met"]
    assert len(result["singles"]) == 2 and len(result["curve"]) == 2 and result["evaluations"] == 3
    best = min(result["curve"], key=lambda p: (p["drop"], len(p["layers"])))
    assert result["float_layers"] == best["layers"] and result["drop"] == best["drop"]
    meta = json.loads((entry / "meta.json").read_text())
    if recipe == "cpu_det":
        assert meta["quantization"]["float_layers"] == result["float_layers"]
        assert bool(meta["float_ops"]) == bool(result["float_layers"])
    else:
        assert meta["quantization"]["float_nodes"] == result["float_layers"]
        assert (entry / "model_qdq.onnx").is_file() and (entry / "calibration.cache").is_file()
