"""Through the CLI on the demo recipe with a dataset the test writes: two `edgebuild` processes started by hand on
one cache build each step once, and editing only the val entry of data.yaml re-runs calibset (its input) and
the validation steps, but reuses tflite and everything else keyed by calibset's unchanged output (early cutoff)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgebuild.demo.synth import generate
from tests.cli import EDGEBUILD, ROOT

pytestmark = pytest.mark.slow


def start(cache: Path, run_dir: Path, data: Path) -> subprocess.Popen:
    env = dict(os.environ, YOLO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", EDGEBUILD_CACHE=str(cache))
    return subprocess.Popen([str(EDGEBUILD), "+recipe=demo", f"dataset.path={data}", "validation.max_images=30",
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def steps(run_dir: Path) -> dict[str, bool]:
    """step -> hit, from the run's plan.json."""
    return {s["name"]: s["hit"] for s in json.loads((run_dir / "plan.json").read_text())["steps"]}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Two processes on one fresh cache and recipe, started together (not through a sweep launcher)."""
    tmp = tmp_path_factory.mktemp("cutoff")
    data = generate(tmp / "ds", n_train=120, n_val=40)
    procs = [start(tmp / "cache", tmp / f"run{i}", data) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    return {"tmp": tmp, "data": data, "procs": procs, "outs": outs}


def test_two_hand_started_processes_build_each_step_once(built):
    for p, (out, err) in zip(built["procs"], built["outs"]):
        assert p.returncode == 0, err[-3000:]
    a, b = (steps(built["tmp"] / f"run{i}") for i in range(2))
    assert a.keys() == b.keys() and "tflite" in a
    assert all(a[s] != b[s] for s in a), f"each step is built by exactly one of them: {a} {b}"
    for name in ("model.tflite", "report.json"):
        assert (built["tmp"] / "run0" / "artifacts" / name).exists() or (built["tmp"] / "run0" / name).exists()
    assert (built["tmp"] / "run0" / "artifacts" / "model.tflite").read_bytes() == \
        (built["tmp"] / "run1" / "artifacts" / "model.tflite").read_bytes()


def test_editing_only_val_reuses_everything_keyed_by_calibsets_output(built):
    tmp, data = built["tmp"], built["data"]
    ds = data.parent
    (ds / "images" / "val2").mkdir()
    (ds / "labels" / "val2").mkdir()
    for img in sorted((ds / "images" / "val").iterdir())[:25]:
        shutil.copy(img, ds / "images" / "val2" / img.name)
        shutil.copy(ds / "labels" / "val" / f"{img.stem}.txt", ds / "labels" / "val2" / f"{img.stem}.txt")
    data.write_text(data.read_text().replace("val: images/val\n", "val: images/val2\n"))
    proc = start(tmp / "cache", tmp / "edited", data)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    hit = steps(tmp / "edited")
    rebuilt = {s for s, h in hit.items() if not h}
    assert {"calibset", "validate", "validate_float", "report"} <= rebuilt, hit
    for name in ("export", "tfconvert", "calibrate", "tflite", "layer_error", "compile"):
        if name in hit:
            assert hit[name], f"{name} re-ran although calibset's output is byte-identical: {hit}"
    assert {"calibrate", "tflite"} <= hit.keys()
    assert rebuilt == {"calibset", "validate", "validate_float", "report"}, hit
