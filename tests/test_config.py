"""Bad configuration gives one clear paragraph naming the key and the fix (through the real CLI)."""
from __future__ import annotations

import pytest

from tests.cli import ROOT, error_paragraph, run

CASES = [
    (["+recipe=nope"], "+recipe=nope", ["no recipe named 'nope'", "demo", "imx95_seg", str(ROOT / "recipes")]),
    (["+recipe=../../etc/passwd"], "+recipe=../../etc/passwd", ["not a path"]),
    (["+recipe=demo", "model.colour=red"], "model.colour", ["unknown key", "imgsz"]),
    (["+recipe=demo", "+model.colour=red"], "model.colour", ["unknown key", "imgsz"]),
    (["+recipe=demo", "model.imgsz=big"], "model.imgsz", ["'big' is not a valid int"]),
    (["+recipe=demo", "target.backend=coreml"], "target.backend", ["'coreml' is not allowed", "tflite, tensorrt"]),
    (["+recipe=demo", "calibration.method=kl"], "calibration.method", ["minmax, entropy, percentile"]),
    (["+recipe=demo", "target=imx7"], "target", ["'imx7' is not a target choice", "cpu"]),
    (["+recipe=demo", "calibration.fraction=0.5"], "calibration.count", ["exclusive"]),
    (["+recipe=demo", "calibration.count=null", "calibration.fraction=1.5"], "calibration.fraction", ["(0, 1]"]),
    (["+recipe=orin_nano_det", "calibration.correction_images=0"], "calibration.correction_images", ["at least 1"]),
    (["+recipe=orin_nano_det", "calibration.correction=adaround"], "calibration.correction",
     ["none, bias, weights, finetune"]),
    (["+recipe=imx93_det", "calibration.correction_images=500"], "calibration.correction_images",
     ["only calibration.count=300", "calibration.correction_images=300 or fewer"]),
    (["+recipe=imx93_det", "calibration.correction_images=-3"], "calibration.correction_images", ["at least 1"]),
    (["+recipe=orin_nano_det", "calibration.correction_steps=0"], "calibration.correction_steps", ["at least 1"]),
    (["+recipe=demo", "model.imgsz=100"], "model.imgsz", ["multiple of the model stride 32", "use 96"]),
    (["+recipe=demo", "+model._target_=os.system"], "model._target_", ["instantiate"]),
    (["+recipe=demo", "model.input.mean=[0,0]"], "model.input.mean", ["has 2 values", "three values"]),
    (["+recipe=demo", "model.input.std=[58,0,57]"], "model.input.std", ["divides by zero", "positive"]),
    (["+recipe=demo", "model.input.order=yuv"], "model.input.order", ["'yuv' is not allowed", "rgb, bgr"]),
    (["+recipe=imx8mp_det", "model.input.dtype=int8"], "model.input.dtype",
     ["int8 but target imx8mp takes uint8", "model.input.dtype=uint8"]),
    (["+recipe=demo", "hydra.callbacks.x._target_=os.system"], "hydra.callbacks.x._target_", ["instantiate"]),
]


@pytest.mark.parametrize("args,where,phrases", CASES, ids=[c[1] + ":" + c[2][0][:20] for c in CASES])
def test_bad_config_gives_one_clear_error(args, where, phrases, tmp_path):
    proc = run(*args, "build.plan=true", cwd=tmp_path, cache=tmp_path / "cache")  # run dirs land in tmp_path
    assert proc.returncode == 2, proc.stderr
    msg = error_paragraph(proc)
    assert msg.startswith(f"error: {where}:"), msg
    assert "Fix:" in msg
    for phrase in phrases:
        assert phrase in msg, msg


def test_recipe_yaml_syntax_error_names_the_line(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "broken.yaml").write_text("# @package _global_\nmodel:\n  imgsz: 320\n  name: [unclosed\n")
    proc = run("+recipe=broken", cwd=tmp_path, cache=tmp_path / "cache")
    assert proc.returncode == 2
    msg = error_paragraph(proc)
    assert "broken.yaml:" in msg and "not valid YAML" in msg


def test_recipe_with_target_key_is_refused(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "evil.yaml").write_text("# @package _global_\nmodel:\n  _target_: os.system\n")
    proc = run("+recipe=evil", "build.plan=true", cwd=tmp_path, cache=tmp_path / "cache")
    assert proc.returncode == 2
    assert "model._target_" in error_paragraph(proc)


def test_cwd_recipes_shadow_builtins(tmp_path):
    """A product repo's ./recipes/demo.yaml wins over the project's recipes/demo.yaml."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "demo.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /decoder: fused\nmodel:\n  imgsz: 192\n")
    (tmp_path / "recipes" / "mine.yaml").write_text("# @package _global_\nmodel:\n  imgsz: 224\n")
    shadowed = run("+recipe=demo", "--cfg", "job", cwd=tmp_path)
    assert shadowed.returncode == 0, shadowed.stderr
    assert "imgsz: 192" in shadowed.stdout and "layout: fused" in shadowed.stdout
    builtin = run("+recipe=demo", "--cfg", "job")
    assert "imgsz: 256" in builtin.stdout and "layout: split_ltrb" in builtin.stdout
    mine = run("+recipe=mine", "--cfg", "job", cwd=tmp_path)
    assert "imgsz: 224" in mine.stdout
    listed = run("+recipe=missing", cwd=tmp_path)
    assert "mine" in error_paragraph(listed) and "imx95_seg" in error_paragraph(listed)


def test_hydra_info_shows_both_recipe_dirs(tmp_path):
    (tmp_path / "recipes").mkdir()
    proc = run("+recipe=demo", "--info", "searchpath", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"edgebuild-recipes://{tmp_path / 'recipes'}" in proc.stdout
    assert f"edgebuild-recipes://{ROOT / 'recipes'}" in proc.stdout


def test_default_outputs_dir_that_cannot_be_created_is_one_paragraph(tmp_path):
    """No hydra.run.dir given: the default outputs/ under the current directory is checked before Hydra makes it."""
    (tmp_path / "outputs").write_text("a file where the run dir should go")
    proc = run("+recipe=demo", "build.plan=true", cwd=tmp_path, cache=tmp_path / "cache")
    assert proc.returncode == 2
    msg = error_paragraph(proc)
    assert msg.startswith("error: hydra.run.dir:") and "regular file" in msg and "Fix:" in msg
    sweep = run("+recipe=demo", "build.plan=true", "-m", cwd=tmp_path, cache=tmp_path / "cache")
    assert sweep.returncode == 2 and error_paragraph(sweep).startswith("error: hydra.sweep.dir:")
    assert run("+recipe=demo", "--cfg", "job", cwd=tmp_path).returncode == 0  # nothing is written: no check


def test_finetune_without_onnx2torch_is_one_paragraph(monkeypatch):
    """The correct/qdq steps' precheck: a missing onnx2torch is named with the install fix, before any build."""
    import importlib.util

    from omegaconf import OmegaConf

    from edgebuild.errors import EdgebuildError
    from edgebuild.quant import require_torch

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx2torch" else real(name, *a))
    require_torch(OmegaConf.create({"calibration": {"correction": "weights"}}))  # not needed: no error
    with pytest.raises(EdgebuildError, match=r"calibration\.correction: finetune runs the model in torch, but "
                                             r"onnx2torch is not installed.*Fix: pip install 'edgebuild\[tensorrt\]'"):
        require_torch(OmegaConf.create({"calibration": {"correction": "finetune"}}))


@pytest.mark.parametrize("recipe,model,weights", [("imx93_det", "yolo11n_det", "shapes-hard-yolo11n-det.pt"),
                                                  ("cpu_det", "yolov8n_det", "shapes-hard-yolov8n-det.pt"),
                                                  ("imx95_seg", "yolo11n_seg", "shapes-hard-yolo11n-seg.pt")])
def test_model_group_swaps_the_recipes_shared_weights(recipe, model, weights):
    """`+recipe=imx93_det model=yolo11n_det` builds YOLO11 from its own shared weights, never the recipe's YOLOv8."""
    proc = run(f"+recipe={recipe}", f"model={model}", "--cfg", "job", "--resolve")
    assert proc.returncode == 0, proc.stderr
    assert f"weights: ../shared/data/weights/{weights}" in proc.stdout
    assert f"name: {weights[:-3]}" in proc.stdout
