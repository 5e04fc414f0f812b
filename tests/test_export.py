"""Export step and edgebuild.layout.decode.

Fast tests: decode math against an independent per-anchor loop, plan-time errors.
Slow tests (torch/onnx): every layout, detect and segment, exported through the real step and run with onnxruntime
on real shapes-hard val images, compared with Ultralytics' own PyTorch inference; fused compared with
`YOLO.export(format="onnx")`; byte-identical re-export; the run-time errors.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from edgebuild import schema
from edgebuild.errors import EdgebuildError
from edgebuild.layout import anchor_grid, decode, num_anchors

IMGSZ = 320
N_IMAGES = 3
# Tolerances (float32 onnxruntime vs float32 PyTorch, BN-fused vs unfused). Measured maxima are in the report.
TOL = {"boxes": 1e-2, "scores": 1e-4, "mask_coefs": 1e-3, "protos": 1e-3, "fused": 1e-2}


def cfg(*overrides: str):
    return schema.validate(OmegaConf.from_dotlist(list(overrides)))


# ----------------------------------------------------------------------------------------------- decode (fast)
def _meta(layout, task="detect", imgsz=64, nc=3, strides=(8, 16, 32)):
    return {"layout": layout, "task": task, "imgsz": imgsz, "nc": nc, "strides": list(strides)}


def _reference_ltrb_to_xyxy(ltrb, imgsz, strides):
    """Independent per-anchor loop (no shared code with edgebuild.layout)."""
    out, i = np.zeros_like(ltrb), 0
    for s in strides:
        g = imgsz // s
        for y in range(g):
            for x in range(g):
                l, t, r, b = ltrb[i]
                out[i] = [(x + 0.5 - l) * s, (y + 0.5 - t) * s, (x + 0.5 + r) * s, (y + 0.5 + b) * s]
                i += 1
    return out


def test_decode_all_layouts_agree_with_per_anchor_reference():
    rng = np.random.default_rng(0)
    meta = _meta("split_ltrb")
    n, nc, nm = num_anchors(64, meta["strides"]), 3, 32
    assert n == 64 + 16 + 4
    ltrb = rng.uniform(0, 6, (n, 4)).astype(np.float32)
    scores = rng.uniform(0, 1, (n, nc)).astype(np.float32)
    coefs = rng.normal(size=(n, nm)).astype(np.float32)
    protos = rng.normal(size=(16, 16, nm)).astype(np.float32)
    want = _reference_ltrb_to_xyxy(ltrb, 64, meta["strides"])
    xywh = np.concatenate([(want[:, :2] + want[:, 2:]) / 2, want[:, 2:] - want[:, :2]], 1)
    # split_dfl: each distance as two adjacent bins with probabilities (1 - frac, frac), all others ~0
    lo = np.floor(ltrb).astype(int)
    probs = np.full((n, 4, 16), 1e-12)
    np.put_along_axis(probs, lo[..., None], (1 - (ltrb - lo))[..., None], axis=2)
    np.put_along_axis(probs, lo[..., None] + 1, (ltrb - lo)[..., None], axis=2)
    raw = {
        "split_dfl": {"boxes": np.log(probs).reshape(n, 64).astype(np.float32)[None], "scores": scores[None],
                      "mask_coefs": coefs[None], "protos": protos[None]},
        "split_ltrb": {"boxes": ltrb[None], "scores": scores[None], "mask_coefs": coefs[None], "protos": protos[None]},
        "split": {"boxes": (want / 64)[None], "scores": scores[None], "mask_coefs": coefs[None],
                  "protos": protos[None]},
        "fused": {"fused": np.concatenate([xywh, scores, coefs], 1).T[None],
                  "protos": protos.transpose(2, 0, 1)[None]},  # Ultralytics emits NCHW protos
    }
    for layout, outputs in raw.items():
        d = decode(outputs, _meta(layout, "segment"))
        np.testing.assert_allclose(d.boxes, want, atol=1e-4, err_msg=layout)
        np.testing.assert_array_equal(d.scores, scores)
        np.testing.assert_array_equal(d.mask_coefs, coefs)
        np.testing.assert_array_equal(d.protos, protos)
        keep = scores.max(1) > 0.6          # min_score decodes only the anchors NMS at that conf can keep, and each
        sub = decode(outputs, _meta(layout, "segment"), min_score=0.6)      # exactly as the full decode does
        assert 0 < keep.sum() < n
        np.testing.assert_array_equal(sub.boxes, d.boxes[keep], err_msg=layout)
        np.testing.assert_array_equal(sub.scores, scores[keep])
        np.testing.assert_array_equal(sub.mask_coefs, coefs[keep])
        det = decode({k: v for k, v in outputs.items() if k in ("boxes", "scores", "fused")}, _meta(layout))
        assert det.mask_coefs is None and det.protos is None
        if layout == "fused":  # detect fused carries no coefficient rows
            det = decode({"fused": outputs["fused"][:, :4 + nc]}, _meta(layout))
        np.testing.assert_allclose(det.boxes, want, atol=1e-4)


def test_anchor_grid_matches_ultralytics_order():
    centres, stride = anchor_grid(64, [8, 16, 32])
    assert centres[:3].tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5]]  # x fastest, then y
    assert centres[8].tolist() == [0.5, 1.5] and stride[63, 0] == 8 and stride[64, 0] == 16
    assert centres[-1].tolist() == [1.5, 1.5] and stride[-1, 0] == 32


def test_decode_rejects_mismatched_outputs():
    with pytest.raises(EdgebuildError, match="no 'scores' role"):
        decode({"boxes": np.zeros((1, 84, 4))}, _meta("split"))
    with pytest.raises(EdgebuildError, match=r"output 'boxes' has shape \[100, 4\], expected \[84, 4\]"):
        decode({"boxes": np.zeros((1, 100, 4)), "scores": np.zeros((1, 100, 3))}, _meta("split"))
    with pytest.raises(EdgebuildError, match="not a known output layout"):
        decode({}, _meta("nope"))


# ------------------------------------------------------------------------------------------ plan-time errors (fast)
def _precheck(*overrides):
    from edgebuild.engine import registry

    registry()["export"].precheck(cfg(*overrides))


def test_precheck_missing_weights(tmp_path):
    with pytest.raises(EdgebuildError, match=r"model\.weights: .*missing\.pt does not exist.*Fix: point model.weights"):
        _precheck(f"model.weights={tmp_path / 'missing.pt'}")


def test_precheck_suffix_and_onnx_layout(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"x")
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(EdgebuildError, match=r"m\.tflite has suffix '\.tflite'"):
        _precheck(f"model.weights={tmp_path / 'm.tflite'}")
    with pytest.raises(EdgebuildError, match=r"model\.onnx_layout: .*layout is not declared"):
        _precheck(f"model.weights={tmp_path / 'm.onnx'}")
    with pytest.raises(EdgebuildError,
                       match=r"decoder\.layout: is split_ltrb .* layout fused.*Fix: set decoder.layout=fused"):
        _precheck(f"model.weights={tmp_path / 'm.onnx'}", "model.onnx_layout=fused")
    with pytest.raises(EdgebuildError, match=r"model\.onnx_layout: is fused but model.weights is a checkpoint"):
        _precheck(f"model.weights={tmp_path / 'm.pt'}", "model.onnx_layout=fused", "decoder.layout=fused")
    _precheck(f"model.weights={tmp_path / 'm.onnx'}", "model.onnx_layout=fused", "decoder.layout=fused")
    with pytest.raises(EdgebuildError, match=r"model\.input: sets mean .* ONNX file .*Fix: export from the \.pt"):
        _precheck(f"model.weights={tmp_path / 'm.onnx'}", "model.onnx_layout=fused", "decoder.layout=fused",
                  "model.input.std=[58.4,57.1,57.4]")


def test_imgsz_not_multiple_of_stride_suggests_nearest():
    from edgebuild.export.load import check_imgsz

    with pytest.raises(EdgebuildError, match=r"model\.imgsz: 352 is not a multiple of the model's largest stride 64.*"
                                             r"model\.imgsz=384"):
        check_imgsz(352, 64)
    check_imgsz(384, 64)


def test_builtin_weights_without_demo_resolver(monkeypatch):
    import edgebuild.demo
    from edgebuild.export.load import resolve_weights

    monkeypatch.delattr(edgebuild.demo, "resolve_weights", raising=False)
    with pytest.raises(EdgebuildError, match=r"builtin:demo-det is not available.*Fix: set model.weights"):
        resolve_weights(cfg("model.weights=builtin:demo-det"))


# ------------------------------------------------------------------------------------------ slow: real exports
def _weights(shared_data, task, arch="yolov8n"):
    return shared_data / "weights" / f"shapes-hard-{arch}-{'seg' if task == 'segment' else 'det'}.pt"


def run_export(out: Path, *overrides: str) -> Path:
    """The registered step, as the runner calls it (precheck, files, sliced config), in this process."""
    from edgebuild.engine import StepContext, registry
    from edgebuild.resolve import slice_config

    c = cfg(*overrides)
    kind = registry()["export"]
    kind.precheck(c)
    out.mkdir(parents=True)
    kind.run(StepContext("export", slice_config(c, kind.config), out, {}, kind.files(c)))
    return out


_EXPORTS: dict = {}


@pytest.fixture(scope="module")
def exported(shared_data, tmp_path_factory):
    """(task, layout[, arch]) -> (step output dir, seconds); each exported once per module."""
    def get(task, layout, arch="yolov8n"):
        key = (task, layout) if arch == "yolov8n" else (task, layout, arch)
        if key not in _EXPORTS:
            t0 = time.monotonic()
            out = run_export(tmp_path_factory.mktemp(f"{arch}-{task}-{layout}") / "out",
                             f"model.weights={_weights(shared_data, task, arch)}", f"model.task={task}",
                             f"model.imgsz={IMGSZ}", f"decoder.layout={layout}")
            _EXPORTS[key] = (out, time.monotonic() - t0)
        return _EXPORTS[key][0]
    return get


@pytest.fixture(scope="module")
def val_images(shared_data):
    from edgebuild.data.preprocess import preprocess

    paths = sorted((shared_data / "shapes-hard" / "images" / "val").glob("*.jpg"))[:N_IMAGES]
    return [preprocess(p, IMGSZ)[0] for p in paths]


def _ultralytics_outputs(weights: Path, images: list[np.ndarray]) -> list[dict]:
    """Ultralytics' own PyTorch inference (its loader, its eval forward) per image:
    boxes xyxy pixels, scores, mask coefficients, protos HWC (None for detect)."""
    import torch
    from ultralytics.nn.tasks import load_checkpoint

    model, _ = load_checkpoint(str(weights))
    nc, rows = len(model.names), []
    for x in images:
        with torch.no_grad():
            y = model(torch.from_numpy(x))[0]
        pred, proto = (y[0][0].numpy(), y[1][0].numpy()) if isinstance(y, tuple) else (y[0].numpy(), None)
        xy, wh = pred[0:2].T, pred[2:4].T
        rows.append({"boxes": np.concatenate([xy - wh / 2, xy + wh / 2], 1), "scores": pred[4:4 + nc].T,
                     "mask_coefs": pred[4 + nc:].T if proto is not None else None,
                     "protos": proto.transpose(1, 2, 0) if proto is not None else None})
    return rows


@pytest.fixture(scope="module")
def reference(shared_data, val_images):
    return {task: _ultralytics_outputs(_weights(shared_data, task), val_images) for task in ("detect", "segment")}


def _max_errors(onnx_path: Path, meta: dict, images, refs) -> dict:
    errs = {}
    for x, ref in zip(images, refs):
        raw = _run_onnx(onnx_path, meta, x)
        for o in meta["outputs"]:  # runtime shapes are exactly the declared ones
            assert list(raw[o["role"]].shape) == o["shape"]
        if meta["layout"] == "split":
            assert np.abs(raw["boxes"]).max() < 4, "boxes must be normalized in-graph (pixel range would be ~imgsz)"
        d = decode(raw, meta)
        for name in ("boxes", "scores", "mask_coefs", "protos"):
            got, want = getattr(d, name), ref[name]
            if want is None:
                assert got is None
                continue
            assert got.shape == want.shape, name
            errs[name] = max(errs.get(name, 0.0), float(np.abs(got - want).max()))
    return errs


def _run_onnx(onnx_path: Path, meta: dict, x: np.ndarray) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    roles = {o["name"]: o["role"] for o in meta["outputs"]}
    return {roles[o.name]: a for o, a in zip(sess.get_outputs(), sess.run(None, {"images": x}))}


MEASURED: dict = {}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detect", "segment"])
@pytest.mark.parametrize("layout", ["split", "split_ltrb", "split_dfl", "fused"])
def test_layout_matches_ultralytics_pytorch(task, layout, exported, val_images, reference):
    out = exported(task, layout)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["layout"] == layout and meta["task"] == task and meta["nc"] == 10 and meta["strides"] == [8, 16, 32]
    assert meta["normalized"] is (layout == "split") and meta["names"][0] == "circle"
    assert meta["source"]["weights"] == _weights(Path("x"), task).name and len(meta["source"]["sha256"]) == 64
    errs = _max_errors(out / "model.onnx", meta, val_images, reference[task])
    MEASURED[(task, layout)] = errs
    print(f"\n{task}/{layout}: max abs error {errs}, export {_EXPORTS[(task, layout)][1]:.1f}s")
    for name, e in errs.items():
        assert e <= TOL[name], f"{name}: max error {e} > {TOL[name]}"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["split", "split_ltrb", "split_dfl"])
def test_yolo11_detect_matches_ultralytics_pytorch(layout, exported, shared_data, val_images):
    """The trained YOLO11n (C3k2 + C2PSA attention) on real val images, against Ultralytics' own PyTorch forward."""
    out = exported("detect", layout, "yolo11n")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["nc"] == 10 and meta["strides"] == [8, 16, 32] and meta["layout"] == layout
    assert meta["source"]["weights"] == "shapes-hard-yolo11n-det.pt"
    if "yolo11n" not in _REF11:
        _REF11["yolo11n"] = _ultralytics_outputs(_weights(shared_data, "detect", "yolo11n"), val_images)
    errs = _max_errors(out / "model.onnx", meta, val_images, _REF11["yolo11n"])
    print(f"\nyolo11n detect/{layout}: max abs error {errs}, export {_EXPORTS[('detect', layout, 'yolo11n')][1]:.1f}s")
    assert set(errs) == {"boxes", "scores"}
    for name, e in errs.items():
        assert e <= TOL[name], f"{name}: max error {e} > {TOL[name]}"


_REF11: dict = {}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detect", "segment"])
def test_fused_matches_ultralytics_onnx_export(task, exported, shared_data, tmp_path, val_images):
    from ultralytics import YOLO

    ours = exported(task, "fused")
    meta = json.loads((ours / "meta.json").read_text())
    copy = tmp_path / _weights(shared_data, task).name  # Ultralytics writes next to the weights
    shutil.copyfile(_weights(shared_data, task), copy)
    theirs = Path(YOLO(str(copy)).export(format="onnx", imgsz=IMGSZ, opset=17, simplify=True))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(theirs), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == [o["name"] for o in meta["outputs"]]
    worst = 0.0
    for x in val_images:
        mine = _run_onnx(ours / "model.onnx", meta, x)
        for o, want in zip(meta["outputs"], sess.run(None, {"images": x})):
            got = mine[o["role"]]
            assert got.shape == want.shape
            worst = max(worst, float(np.abs(got - want).max()))
    print(f"\n{task}/fused vs YOLO.export(onnx): max abs error {worst}")
    assert worst <= TOL["fused"]


@pytest.mark.slow
def test_export_is_byte_identical_and_meta_embedded(exported, shared_data, tmp_path):
    import onnx

    first = exported("detect", "split_ltrb")
    again = run_export(tmp_path / "again", f"model.weights={_weights(shared_data, 'detect')}",
                       f"model.imgsz={IMGSZ}", "decoder.layout=split_ltrb")
    assert (first / "model.onnx").read_bytes() == (again / "model.onnx").read_bytes()
    assert (first / "meta.json").read_bytes() == (again / "meta.json").read_bytes()
    model = onnx.load(str(first / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert props == {"edgebuild": (first / "meta.json").read_text()}
    assert model.producer_name == "edgebuild" and model.ir_version <= 10
    assert [i.name for i in model.graph.input] == ["images"]
    assert model.opset_import[0].version == 17


@pytest.mark.slow
def test_existing_onnx_is_checked_and_copied(exported, tmp_path):
    ours = exported("segment", "fused")
    src = tmp_path / "yolo-seg.onnx"
    shutil.copyfile(ours / "model.onnx", src)
    out = run_export(tmp_path / "imp", f"model.weights={src}", "model.task=segment", "model.onnx_layout=fused",
                     "decoder.layout=fused", f"model.imgsz={IMGSZ}")
    assert (out / "model.onnx").read_bytes() == src.read_bytes()
    meta, want = json.loads((out / "meta.json").read_text()), json.loads((ours / "meta.json").read_text())
    assert {k: v for k, v in meta.items() if k != "source"} == {k: v for k, v in want.items() if k != "source"}
    with pytest.raises(EdgebuildError, match=r"model\.task: is detect but yolo-seg\.onnx is a segment graph"):
        run_export(tmp_path / "e1", f"model.weights={src}", "model.task=detect", "model.onnx_layout=fused",
                   "decoder.layout=fused", f"model.imgsz={IMGSZ}")
    with pytest.raises(EdgebuildError, match=r"model\.imgsz: is 256 but yolo-seg\.onnx has a fixed input of 320x320"
                                             r".*Fix: set model\.imgsz=320"):
        run_export(tmp_path / "e2", f"model.weights={src}", "model.task=segment", "model.onnx_layout=fused",
                   "decoder.layout=fused", "model.imgsz=256")
    with pytest.raises(EdgebuildError, match=r"model\.onnx_layout: is split but yolo-seg\.onnx was exported by "
                                             r"edgebuild with layout fused"):
        run_export(tmp_path / "e3", f"model.weights={src}", "model.task=segment", "model.onnx_layout=split",
                   "decoder.layout=split", f"model.imgsz={IMGSZ}")


@pytest.mark.slow
def test_non_yolo_onnx_is_rejected(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, IMGSZ, IMGSZ])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, IMGSZ, IMGSZ])
    g = helper.make_graph([helper.make_node("Relu", ["images"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(g), tmp_path / "relu.onnx")
    with pytest.raises(EdgebuildError, match=r"relu\.onnx does not look like a static-shape YOLO graph with layout "
                                             r"fused.*Fix: a fused graph has input images"):
        run_export(tmp_path / "o", f"model.weights={tmp_path / 'relu.onnx'}", "model.onnx_layout=fused",
                   "decoder.layout=fused")
    (tmp_path / "junk.onnx").write_text("not a protobuf at all")
    with pytest.raises(EdgebuildError, match=r"junk\.onnx is not a readable ONNX model"):
        run_export(tmp_path / "o2", f"model.weights={tmp_path / 'junk.onnx'}", "model.onnx_layout=split_ltrb")


@pytest.mark.slow
def test_bad_checkpoints_give_clear_errors(shared_data, tmp_path):
    import torch
    from edgebuild.export.load import load_checkpoint

    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not weights\n")
    with pytest.raises(EdgebuildError, match=r"model\.weights: .*notes\.pt is not a loadable Ultralytics checkpoint "
                                             r"\(it is not a PyTorch file: it starts with b'thes'\)"):
        load_checkpoint(text, "detect", IMGSZ)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(EdgebuildError, match=r"empty\.pt is not a loadable .*it is empty"):
        load_checkpoint(empty, "detect", IMGSZ)
    nomodel = tmp_path / "state.pt"
    torch.save({"epoch": 3, "best_fitness": 0.5}, nomodel)
    with pytest.raises(EdgebuildError, match=r"state\.pt is a pickle but not an Ultralytics checkpoint: it holds a "
                                             r"dict with keys \['best_fitness', 'epoch'\]"):
        load_checkpoint(nomodel, "detect", IMGSZ)
    with pytest.raises(EdgebuildError, match=r"model\.task: is segment but shapes-hard-yolov8n-det\.pt is a detect "
                                             r"model.*Fix: set model\.task=detect"):
        load_checkpoint(_weights(shared_data, "detect"), "segment", IMGSZ)
    with pytest.raises(EdgebuildError, match=r"model\.task: is detect but shapes-hard-yolov8n-seg\.pt is a segment "
                                             r"model.*Fix: set model\.task=segment"):
        load_checkpoint(_weights(shared_data, "segment"), "detect", IMGSZ)
    with pytest.raises(EdgebuildError, match=r"model\.imgsz: 336 is not a multiple .* stride 32.*model\.imgsz=320"):
        load_checkpoint(_weights(shared_data, "detect"), "detect", 336)


@pytest.mark.slow
def test_end_to_end_head_is_rejected(tmp_path):
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from edgebuild.export.load import load_checkpoint

    model = DetectionModel("yolo26n.yaml", nc=2, verbose=False)  # built from the packaged yaml, nothing downloaded
    path = tmp_path / "yolo26n-e2e.pt"
    torch.save({"model": model}, path)
    with pytest.raises(EdgebuildError, match=r"yolo26n-e2e\.pt has an NMS-free end-to-end head.*Fix: use a YOLOv8 or "
                                             r"YOLO11 checkpoint"):
        load_checkpoint(path, "detect", IMGSZ)


@pytest.mark.slow
def test_step_through_engine_isolated_and_cached(shared_data, cache_dir, tmp_path):
    """Real planner + runner (spawned child process), then a cache hit on the same inputs."""
    from edgebuild.cache import Cache
    from edgebuild.engine import registry
    from edgebuild.resolve import make_plan
    from edgebuild.runner import execute

    c = cfg(f"model.weights={_weights(shared_data, 'detect')}", "decoder.layout=split")
    kinds = {"export": registry()["export"]}
    cache = Cache(cache_dir)
    res = execute(make_plan(c, cache, kinds), cache, c, isolate=True)["export"]
    assert not res.hit and json.loads((res.path / "meta.json").read_text())["layout"] == "split"
    again = make_plan(c, cache, kinds)
    assert again["export"].cached
    changed = make_plan(cfg(f"model.weights={_weights(shared_data, 'detect')}", "decoder.layout=split",
                            "validation.iou=0.5"), cache, kinds)
    assert changed["export"].cached, "validation keys must not re-export"


@pytest.mark.slow
def test_yolo11_segment_from_yaml_split_ltrb(tmp_path):
    """YOLO11 blocks (C3k2, C2PSA) and a 3-class Segment head at imgsz 160: same equivalence on random input."""
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(0)
    model = SegmentationModel("yolo11n-seg.yaml", nc=3, verbose=False).eval()  # packaged yaml, nothing downloaded
    weights = tmp_path / "yolo11n-seg-3cls.pt"
    torch.save({"model": model}, weights)
    out = run_export(tmp_path / "out", f"model.weights={weights}", "model.task=segment", "model.imgsz=160",
                     "decoder.layout=split_ltrb")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["nc"] == 3 and meta["outputs"][3]["shape"] == [1, 40, 40, 32]
    images = [np.random.default_rng(i).uniform(0, 1, (1, 3, 160, 160)).astype(np.float32) for i in range(2)]
    errs = _max_errors(out / "model.onnx", meta, images, _ultralytics_outputs(weights, images))
    print(f"\nyolo11n-seg (random init) split_ltrb: max abs error {errs}")
    for name, e in errs.items():
        assert e <= TOL[name], f"{name}: max error {e} > {TOL[name]}"


@pytest.mark.slow
def test_input_normalization_folded_gives_the_float_references_detections(shared_data, tmp_path, val_images):
    """A network trained on BGR (pixel - mean) / std (here: the shapes-hard YOLOv8n with its first conv re-scaled and
    its input channels reversed). Exported with model.input = that normalization, the graph takes raw BGR bytes / 255
    (what the board feeds) and gives the same detections as Ultralytics' PyTorch forward on host-normalized input."""
    import torch
    from ultralytics.nn.tasks import load_checkpoint as ultralytics_load

    from edgebuild.data.preprocess import preprocess
    from edgebuild.metrics.nms import nms

    mean, std = [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]  # ImageNet, BGR order
    model, _ = ultralytics_load(str(_weights(shared_data, "detect")))
    conv = model.model[0].conv
    with torch.no_grad():
        conv.weight.copy_(conv.weight[:, [2, 1, 0]] * torch.tensor(std).view(1, 3, 1, 1) / 255.0)
    weights = tmp_path / "bgr-imagenet-norm.pt"
    torch.save({"model": model}, weights)

    out = run_export(tmp_path / "out", f"model.weights={weights}", f"model.imgsz={IMGSZ}", "decoder.layout=split_ltrb",
                     f"model.input.mean={mean}", f"model.input.std={std}", "model.input.order=bgr")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["input"]["order"] == "bgr" and meta["input"]["mean"] == mean and meta["input"]["std"] == std
    paths = sorted((shared_data / "shapes-hard" / "images" / "val").glob("*.jpg"))[:N_IMAGES]
    raw = [preprocess(p, IMGSZ, order="bgr")[0] for p in paths]                      # bytes / 255, BGR
    assert np.abs(raw[0][:, ::-1] - val_images[0]).max() == 0                          # the same pixels, reversed
    normalized = [((x * 255 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))).astype(np.float32)
                  for x in raw]
    refs = _ultralytics_outputs(weights, normalized)
    errs = _max_errors(out / "model.onnx", meta, raw, refs)
    print(f"\nnormalized BGR input folded: max abs error {errs}")
    for name, e in errs.items():
        assert e <= TOL[name], f"{name}: max error {e} > {TOL[name]}"
    for x, ref in zip(raw, refs):
        d = decode(_run_onnx(out / "model.onnx", meta, x), meta)
        ours, theirs = nms(d.boxes, d.scores, 0.25, 0.7, 300), nms(ref["boxes"], ref["scores"], 0.25, 0.7, 300)
        assert len(ours.boxes) == len(theirs.boxes) > 0
        assert np.array_equal(ours.classes, theirs.classes) and np.abs(ours.boxes - theirs.boxes).max() < TOL["boxes"]


def test_input_dtype_overrides_the_targets_and_is_checked():
    assert cfg().target.input_dtype == "uint8" and cfg().model.input.order == "rgb"
    assert cfg("model.input.dtype=int8").target.input_dtype == "int8"
    with pytest.raises(EdgebuildError, match=r"model\.input\.dtype: is int8 but target imx8mp takes uint8"):
        cfg("target.name=imx8mp", "target.input_dtypes=[uint8]", "model.input.dtype=int8")
