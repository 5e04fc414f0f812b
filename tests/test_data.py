"""edgebuild.data, edgebuild.demo and the calibset step, on real files (../shared/data and the demo generator)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from edgebuild import schema
from edgebuild.data.dataset import open_dataset
from edgebuild.data.preprocess import letterbox, preprocess
from edgebuild.data.sampler import sample_size
from edgebuild.data.stream import iter_calibration, manifest_size
from edgebuild.errors import EdgebuildError
from edgebuild.steps.calibset import build_manifest, precheck


def cfg_for(**over):
    nested: dict = {}
    for dotted, v in over.items():
        node = nested
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return schema.validate(OmegaConf.create(nested))


def cfg_path(path, **over):
    return cfg_for(dataset__path=str(path), **over)


@pytest.fixture()
def small_yolo(shared_data, tmp_path) -> Path:
    """A writable copy of 12 train + 4 val images of ../shared/data/shapes."""
    src, dst = shared_data / "shapes", tmp_path / "small"
    for split, n in (("train", 12), ("val", 4)):
        (dst / "images" / split).mkdir(parents=True)
        (dst / "labels" / split).mkdir(parents=True)
        for img in sorted((src / "images" / split).iterdir())[:n]:
            shutil.copy(img, dst / "images" / split / img.name)
            shutil.copy(src / "labels" / split / (img.stem + ".txt"), dst / "labels" / split / (img.stem + ".txt"))
    shutil.copy(src / "data.yaml", dst / "data.yaml")
    return dst / "data.yaml"


def raises(fn, *needles):
    with pytest.raises(EdgebuildError) as e:
        fn()
    msg = str(e.value)
    for n in needles:
        assert str(n) in msg, f"{n!r} not in: {msg}"
    return msg


# ---------------------------------------------------------------- sampling

def test_same_seed_same_manifest_different_seed_different(shared_data):
    y = shared_data / "shapes" / "data.yaml"
    a = build_manifest(cfg_path(y, calibration__count=20, calibration__seed=3))
    b = build_manifest(cfg_path(y, calibration__count=20, calibration__seed=3))
    c = build_manifest(cfg_path(y, calibration__count=20, calibration__seed=4))
    assert a == b
    assert [i["path"] for i in a["items"]] != [i["path"] for i in c["items"]]
    assert len({i["path"] for i in a["items"]}) == 20  # no repeats
    assert all(Path(i["path"]).parent.name == "train" for i in a["items"])  # default split is train


def test_stratified_is_deterministic_and_class_balanced(shared_data):
    y = shared_data / "shapes" / "data.yaml"
    a = build_manifest(cfg_path(y, calibration__count=5, calibration__stratified=True))
    b = build_manifest(cfg_path(y, calibration__count=5, calibration__stratified=True))
    c = build_manifest(cfg_path(y, calibration__count=5, calibration__stratified=True, calibration__seed=1))
    assert a == b and a["items"] != c["items"]
    # round-robin over classes, rarest first: 5 images cover all 5 classes
    present = {cls for item in a["items"] for cls in item["classes"]}
    assert present == set(range(5)), present


def test_fraction_count_and_default_sizes(shared_data):
    y = shared_data / "shapes" / "data.yaml"  # 500 train images
    assert len(build_manifest(cfg_path(y, calibration__fraction=0.25))["items"]) == 125
    assert len(build_manifest(cfg_path(y, calibration__count=7))["items"]) == 7
    assert len(build_manifest(cfg_path(y, calibration__fraction=0.002))["items"]) == 1
    assert build_manifest(cfg_path(y))["count"] == 300  # default: min(300, split)
    assert sample_size(240, None, None) == 240
    assert sample_size(500, None, 1.0) == 500


def test_method_does_not_change_calibset_key_but_seed_does(shared_data):
    from edgebuild.engine import registry
    from edgebuild.resolve import make_plan

    kinds = {"calibset": registry()["calibset"]}
    y = shared_data / "shapes" / "data.yaml"

    def key(**over):
        return make_plan(cfg_path(y, calibration__count=5, **over), None, kinds).steps[0].key

    base = key()
    assert key(calibration__method="entropy") == base
    assert key(calibration__method="percentile", validation__max_map_drop=5.0) == base
    assert key(calibration__seed=1) != base
    assert key(calibration__stratified=True) != base


def test_dataset_edit_changes_calibset_key(small_yolo):
    from edgebuild.engine import registry
    from edgebuild.resolve import make_plan

    kinds = {"calibset": registry()["calibset"]}
    key = lambda: make_plan(cfg_path(small_yolo, calibration__count=3), None, kinds).steps[0].key  # noqa: E731
    before = key()
    img = sorted((small_yolo.parent / "images" / "train").iterdir())[5]
    cv2.imwrite(str(img), cv2.flip(cv2.imread(str(img)), 1))
    assert key() != before


def test_calibset_step_through_the_engine(cache_dir, tmp_path):
    from edgebuild.cache import Cache
    from edgebuild.engine import registry
    from edgebuild.resolve import make_plan
    from edgebuild.runner import execute

    kinds = {"calibset": registry()["calibset"]}
    root = tmp_path / "configured-cache"  # build.cache_dir wins over $EDGEBUILD_CACHE (cache_dir fixture)

    def run(**over):
        cfg = cfg_for(build__cache_dir=str(root), calibration__count=16, **over)
        cache = Cache(root)
        return execute(make_plan(cfg, cache, kinds), cache, cfg, isolate=False)["calibset"]

    first = run()
    m = json.loads((first.path / "manifest.json").read_text())
    assert not first.hit and len(m["items"]) == 16 and m["method_independent"] is True
    assert all(i["path"].startswith(str(root / "datasets" / "demo-v1" / "images" / "train")) for i in m["items"])
    assert all(len(i["sha256"]) == 64 for i in m["items"])
    assert run(calibration__method="entropy").hit
    assert not run(calibration__seed=2).hit
    assert not cache_dir.exists(), "the demo dataset must follow build.cache_dir"


# ---------------------------------------------------------------- preprocessing

def _real_images(shared_data):
    """Real dataset images, whole and cropped to odd aspect ratios, so resize and padding both happen."""
    imgs = [cv2.imread(str(p)) for p in sorted((shared_data / "shapes-hard" / "images" / "val").iterdir())[:3]]
    return imgs + [imgs[0][:200, :317], imgs[1][7:, :111], imgs[2][:1, :]]


@pytest.mark.parametrize("imgsz", [224, 320, 416])
def test_letterbox_equals_ultralytics_bit_for_bit(shared_data, imgsz):
    from ultralytics.data.augment import LetterBox

    lb = LetterBox(new_shape=(imgsz, imgsz), auto=False)  # center=True, 114, INTER_LINEAR are its defaults
    for img in _real_images(shared_data):
        ours, info = letterbox(img, imgsz)
        theirs = lb(image=img.copy())[..., ::-1]
        assert ours.shape == theirs.shape == (imgsz, imgsz, 3)
        assert np.array_equal(ours, theirs)
        # the float path equals Ultralytics' predictor arithmetic: HWC BGR -> CHW RGB, float32 / 255
        x, _ = preprocess(img, imgsz)
        ref = np.ascontiguousarray(theirs.transpose(2, 0, 1))[None].astype(np.float32) / np.float32(255)
        assert x.dtype == np.float32 and np.array_equal(x, ref)


def test_letterbox_info_round_trips_boxes(shared_data):
    img = cv2.imread(str(sorted((shared_data / "shapes" / "images" / "val").iterdir())[0]))[:160, :]
    _, info = letterbox(img, 320)
    assert (info.scale, info.pad_x, info.pad_y, info.orig_w, info.orig_h) == (1.0, 0, 80, 320, 160)
    boxes = np.array([[10, 20, 100, 150], [0, 0, 320, 160]], np.float32)
    assert np.allclose(info.unletterbox_boxes(info.letterbox_boxes(boxes)), boxes)


def test_stream_yields_exactly_preprocess_output(shared_data, tmp_path):
    m = build_manifest(cfg_path(shared_data / "shapes-hard" / "data.yaml", calibration__count=6))
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert manifest_size(tmp_path / "manifest.json") == 6
    for dtype, layout in (("float32", "NCHW"), ("uint8", "NHWC")):
        got = list(iter_calibration(tmp_path / "manifest.json", 256, dtype, layout))
        assert len(got) == 6
        for item, x in zip(m["items"], got):
            ref, _ = preprocess(item["path"], 256, dtype, layout)
            assert x.dtype == ref.dtype and x.shape == ref.shape and np.array_equal(x, ref)


def test_stream_rejects_changed_dataset(small_yolo, tmp_path):
    m = build_manifest(cfg_path(small_yolo, calibration__count=4))
    mp = tmp_path / "manifest.json"
    mp.write_text(json.dumps(m))
    victim = Path(m["items"][2]["path"])
    victim.write_bytes(victim.read_bytes() + b"\0")
    it = iter_calibration(mp, 320)
    next(it), next(it)
    raises(lambda: next(it), str(victim), "changed", "sha256")
    victim.unlink()
    raises(lambda: list(iter_calibration(mp, 320)), str(victim), "gone")


# ---------------------------------------------------------------- readers

def test_yolo_and_coco_readers_give_the_same_samples(shared_data, tmp_path):
    yolo = open_dataset(cfg_path(shared_data / "shapes" / "data.yaml"))
    ys = yolo.samples("val")[:25]
    images = shared_data / "shapes" / "images" / "val"
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(yolo.names)]}
    for i, s in enumerate(ys):
        coco["images"].append({"id": 100 + i, "file_name": s.image_path.name, "width": s.width, "height": s.height})
        for k, (b, c, p) in enumerate(zip(s.boxes, s.classes, s.polygons)):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": 100 + i, "iscrowd": 0,
                                        "category_id": int(c) + 1, "area": float((b[2] - b[0]) * (b[3] - b[1])),
                                        "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                        "segmentation": [p.reshape(-1).tolist()]})
    (tmp_path / "instances_val.json").write_text(json.dumps(coco))
    ds = open_dataset(cfg_for(dataset__path=str(tmp_path / "instances_{split}.json"), dataset__format="coco",
                              dataset__images=str(images)))
    cs = ds.samples("val")
    assert ds.names == yolo.names and len(cs) == len(ys) == 25
    for a, b in zip(ys, cs):
        assert a.image_path == b.image_path and (a.width, a.height) == (b.width, b.height)
        assert np.array_equal(a.classes, b.classes)
        assert np.allclose(a.boxes, b.boxes, atol=1e-4)
        assert len(a.polygons) == len(b.polygons)
        assert all(np.allclose(p, q, atol=1e-4) for p, q in zip(a.polygons, b.polygons))
    raises(lambda: ds.samples("train"), "instances_train.json", "does not exist")


def test_yolo_box_labels_and_names_list(small_yolo):
    (small_yolo).write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b, c, d, e]\n")
    lbl = sorted((small_yolo.parent / "labels" / "val").iterdir())[0]
    lbl.write_text("1 0.5 0.5 0.25 0.5\n")
    ds = open_dataset(cfg_path(small_yolo))
    s = ds.samples("val")[0]
    assert ds.names == ["a", "b", "c", "d", "e"] and s.polygons is None
    assert np.allclose(s.boxes, [[120, 80, 200, 240]]) and s.classes.tolist() == [1]


# ---------------------------------------------------------------- errors

def test_missing_data_yaml(tmp_path):
    msg = raises(lambda: precheck(cfg_path(tmp_path / "nope" / "data.yaml")), "dataset.path", "data.yaml")
    assert "does not exist" in msg


def test_format_mismatch(small_yolo, tmp_path):
    (tmp_path / "x.json").write_text("{}")
    raises(lambda: open_dataset(cfg_path(tmp_path / "x.json")), "dataset.format", "coco")
    raises(lambda: open_dataset(cfg_path(small_yolo, dataset__format="coco")), "dataset.format", "yolo")


def test_missing_image_dir(small_yolo):
    shutil.rmtree(small_yolo.parent / "images" / "train")
    raises(lambda: precheck(cfg_path(small_yolo)), str(small_yolo), "images/train", "do not exist")


def test_empty_split(small_yolo):
    for f in (small_yolo.parent / "images" / "train").iterdir():
        f.unlink()
    raises(lambda: precheck(cfg_path(small_yolo)), "calibration.split", "no images")


def test_unknown_split(small_yolo):
    raises(lambda: precheck(cfg_path(small_yolo, calibration__split="test")), "calibration.split", "'test'",
           "train, val")


def test_count_larger_than_split(small_yolo):
    raises(lambda: precheck(cfg_path(small_yolo, calibration__count=13)), "calibration.count", "has 12", "<=12")


def test_fraction_outside_range(small_yolo):
    raises(lambda: cfg_path(small_yolo, calibration__fraction=1.5), "calibration.fraction", "(0, 1]")
    raises(lambda: cfg_path(small_yolo, calibration__fraction=0.0), "calibration.fraction")
    raises(lambda: sample_size(10, None, -0.1), "calibration.fraction")


def test_label_class_out_of_range(small_yolo):
    lbl = sorted((small_yolo.parent / "labels" / "train").iterdir())[3]
    lbl.write_text(lbl.read_text() + "7 0.5 0.5 0.1 0.1\n")
    n = len(lbl.read_text().splitlines())
    raises(lambda: open_dataset(cfg_path(small_yolo)).samples("train"), f"{lbl}:{n}", "class 7", "5 classes")


def test_label_coordinates_out_of_range(small_yolo):
    lbl = sorted((small_yolo.parent / "labels" / "train").iterdir())[4]
    lbl.write_text("0 0.2 0.2 0.9 0.3 1.7 0.8\n")
    raises(lambda: open_dataset(cfg_path(small_yolo)).samples("train"), f"{lbl}:1", "1.7", "normalized")


def test_coco_label_errors(small_yolo, tmp_path):
    img = sorted((small_yolo.parent / "images" / "val").iterdir())[0]
    doc = {"images": [{"id": 1, "file_name": img.name, "width": 320, "height": 320}],
           "categories": [{"id": 1, "name": "x"}],
           "annotations": [{"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]}]}
    j = tmp_path / "c.json"
    j.write_text(json.dumps(doc))
    cfg = cfg_for(dataset__path=str(j), dataset__format="coco", dataset__images=str(img.parent))
    raises(lambda: open_dataset(cfg).samples("val"), "annotation id 9", "class 3")
    doc["annotations"][0].update(category_id=1, bbox=[300, 10, 60, 5])
    j.write_text(json.dumps(doc))
    raises(lambda: open_dataset(cfg).samples("val"), "annotation id 9", "outside the image")
    raises(lambda: open_dataset(cfg_for(dataset__path=str(j), dataset__format="coco",
                                        dataset__images=str(tmp_path / "none"))).samples("val"), "dataset.images")


def _corrupt(small_yolo) -> list[Path]:
    imgs = sorted((small_yolo.parent / "images" / "train").iterdir())
    imgs[1].write_bytes(b"not an image at all")
    imgs[6].write_bytes(imgs[6].read_bytes()[:3000])  # truncated JPEG
    imgs[9].write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9")  # JPEG markers, garbage inside
    return [imgs[1], imgs[6], imgs[9]]


def test_corrupt_images_skipped_with_warning_and_count(small_yolo, caplog):
    import ultralytics.utils.patches  # noqa: F401  (it patches PIL.Image.open process-wide: must not matter)

    bad = _corrupt(small_yolo)
    with caplog.at_level(logging.WARNING, logger="edgebuild"):
        m = build_manifest(cfg_path(small_yolo, calibration__fraction=1.0))
        ds = open_dataset(cfg_path(small_yolo))
        assert len(ds.samples("train")) == 9 and len(ds.skipped["train"]) == 3
    assert len(m["items"]) == m["count"] == 9  # fraction=1.0 means all readable images
    assert {s["path"] for s in m["skipped"]} == {str(p) for p in bad}
    assert "skipped 3 unreadable" in caplog.text


def test_corrupt_images_error_mode(small_yolo):
    bad = _corrupt(small_yolo)
    cfg = cfg_path(small_yolo, dataset__on_corrupt="error", calibration__fraction=1.0)
    msg = raises(lambda: build_manifest(cfg), "cannot be read", "dataset.on_corrupt=skip")
    assert any(str(p) in msg for p in bad)
    raises(lambda: open_dataset(cfg).samples("train"), "cannot be read")
    raises(lambda: build_manifest(cfg_path(small_yolo, calibration__count=10)), "calibration.count",
           "only 9 of the 10")


# ---------------------------------------------------------------- demo assets

def test_builtin_demo_is_the_default_and_generated_in_the_cache(cache_dir):
    cfg = schema.validate(OmegaConf.create({}))
    assert cfg.dataset.path == "builtin:demo" and cfg.model.weights == "builtin:demo-det"
    ds = open_dataset(cfg)
    assert ds.source == cache_dir.resolve() / "datasets" / "demo-v1" / "data.yaml"
    assert len(ds.image_files("train")) == 240 and len(ds.samples("val")) == 60
    assert ds.names == ["circle", "square", "triangle", "star"]
    assert not [p for p in (cache_dir / "datasets").iterdir() if p.name != "demo-v1"], "temp dir left behind"
    first = ds.source.stat().st_mtime_ns
    assert open_dataset(cfg).source.stat().st_mtime_ns == first  # reused, not regenerated
    raises(lambda: open_dataset(cfg_for(dataset__path="builtin:nope")), "dataset.path", "builtin:demo")


def test_builtin_demo_weights_resolve_to_the_shipped_file():
    from edgebuild.demo import resolve_weights

    p = resolve_weights(schema.validate(OmegaConf.create({})))
    assert p.name == "yolov8n-demo-det.pt" and p.parent.name == "demo" and p.is_file()
    assert 1_000_000 < p.stat().st_size < 7 * 1024 * 1024
    raises(lambda: resolve_weights(cfg_for(model__weights="builtin:nope")), "model.weights")
    raises(lambda: resolve_weights(cfg_for(model__weights="/nonexistent/w.pt")), "model.weights", "does not exist")


def test_synth_is_byte_identical_per_seed(tmp_path):
    from edgebuild.demo import synth

    a = synth.generate(tmp_path / "a", seed=5, n_train=6, n_val=2).parent
    b = synth.generate(tmp_path / "b", seed=5, n_train=6, n_val=2).parent
    c = synth.generate(tmp_path / "c", seed=6, n_train=6, n_val=2).parent
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * 8
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "images/train/train_00000.jpg").read_bytes() != (c / "images/train/train_00000.jpg").read_bytes()
    ds = open_dataset(cfg_path(a / "data.yaml"))
    s = ds.samples("train")
    assert sum(len(x.classes) for x in s) >= 6 and all(x.polygons is not None for x in s)


@pytest.mark.slow
def test_demo_weights_detect_the_demo_val_objects(cache_dir):
    from ultralytics import YOLO

    from edgebuild.demo import resolve_weights

    cfg = schema.validate(OmegaConf.create({}))
    model = YOLO(str(resolve_weights(cfg)))
    assert list(model.names.values()) == ["circle", "square", "triangle", "star"]
    samples = open_dataset(cfg).samples("val")[:16]
    hits = total = 0
    for s in samples:
        r = model.predict(str(s.image_path), imgsz=256, conf=0.25, device="cpu", verbose=False)[0]
        for box, cls in zip(s.boxes, s.classes):
            total += 1
            ious = _iou(box, r.boxes.xyxy.numpy())
            hits += bool(len(ious)) and r.boxes.cls.numpy()[ious.argmax()] == cls and ious.max() > 0.5
    assert total >= 16 and hits / total > 0.5, (hits, total)  # float mAP50 is 0.75 (README)


def _iou(box, boxes):
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)
