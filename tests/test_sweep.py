"""A five-target multirun sweep of one recipe: shared steps build once, every job reports (issue: targets)."""
from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from tests.cli import run

pytestmark = pytest.mark.slow

TARGETS = ["imx8mp", "imx93", "imx95", "orin_nano", "cpu"]


def test_five_target_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run("--multirun", "+recipe=demo", f"target={','.join(TARGETS)}", "calibration.count=30",
               "validation.max_images=30", f"hydra.sweep.dir={sweep}", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    plans = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/plan.json"))]
    assert len(plans) == 5
    builds = Counter(s["name"] for p in plans for s in p["steps"] if not s["hit"])
    for shared in ("export", "calibset", "validate_float", "tfconvert"):
        assert builds[shared] == 1, builds  # built by the first job that needed it, hits after
    assert builds["tflite"] == 2, builds  # per-tensor (imx8mp) and per-channel (the other TFLite targets)
    assert builds["qdq"] == 1 and builds["report"] == 5, builds

    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert sorted(r["target"] for r in rows) == sorted(TARGETS)
    assert (sweep / "summary.html").is_file()

    jobs = {json.loads((d / "report.json").read_text())["config"]["target.name"]: d
            for d in (p.parent for p in sweep.glob("*/report.json"))}
    vela = json.loads((jobs["imx93"] / "artifacts" / "compile.json").read_text())["compiler"]
    assert vela["name"] == "vela" and vela["ran"] and vela["summary"]["npu_ops"] > 0
    assert (jobs["imx93"] / "artifacts" / "model_vela.tflite").is_file()
    neutron = json.loads((jobs["imx95"] / "artifacts" / "compile.json").read_text())["compiler"]
    assert not neutron["ran"] and "neutron-converter" in neutron["reason"]
    trt = jobs["orin_nano"] / "artifacts"
    assert (trt / "model_qdq.onnx").is_file() and (trt / "build_engine.sh").is_file()
    assert not (trt / "model.engine").exists(), "no engine without tensorrt: never a fake one"
