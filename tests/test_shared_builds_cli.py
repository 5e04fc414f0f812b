"""Through the CLI on the demo recipe with a dataset the test writes, all on one cache: two `edgebuild` processes
started by hand build each step once; editing only the val entry of data.yaml re-runs calibset (its input) and the
validation steps, but reuses tflite and everything else keyed by calibset's unchanged output (early cutoff); a
3-job sweep through submitit's local launcher (the code path of submitit_slurm) builds its shared steps once."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgebuild.demo.synth import generate
from tests.cli import EDGEBUILD, ROOT, run

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


def test_submitit_sweep_builds_shared_steps_once(built):
    """validation.max_images changes validate and validate_float (shared by the 3 jobs); the gate only the report."""
    tmp = built["tmp"]
    sweep = tmp / "sweep"
    proc = run("--multirun", "+recipe=demo", f"dataset.path={built['data']}", "validation.max_images=20",
               "validation.max_map_drop=2,3,4", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20",
               f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}", cache=tmp / "cache", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/plan.json"))
    assert len(jobs) == 3, list(sweep.rglob("*"))
    built_by: dict[tuple[str, str], int] = {}
    for job in jobs:
        for s in json.loads((job / "plan.json").read_text())["steps"]:
            built_by[(s["name"], s["key"])] = built_by.get((s["name"], s["key"]), 0) + (not s["hit"])
        assert (job / "report.json").is_file() and (job / "artifacts" / "model.tflite").is_file()
    assert all(n == 1 for (name, _), n in built_by.items() if name in ("validate", "validate_float")), built_by
    assert sum(n for (name, _), n in built_by.items() if name in ("validate", "validate_float")) == 2, built_by
    assert sorted(n for (name, _), n in built_by.items() if name == "report") == [1, 1, 1]
    assert all(n == 0 for (name, _), n in built_by.items() if name not in ("validate", "validate_float", "report"))
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows), rows
    assert list(sweep.glob(".submitit/*/*_log.out")), "the jobs ran through submitit"
