"""The demo recipe end to end through the real CLI, and what the cache does on rebuilds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli import run

pytestmark = pytest.mark.slow


def run_dir_of(proc, out_root: Path) -> Path:
    dirs = sorted(p.parent for p in out_root.glob("*/plan.json"))
    assert dirs, proc.stdout + proc.stderr
    return dirs[-1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One cold build of the demo recipe (the README's `make demo`), in its own cache."""
    base = tmp_path_factory.mktemp("demo")
    cache, outs = base / "cache", base / "outputs"
    proc = run("+recipe=demo", f"hydra.run.dir={outs}/cold", cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"cache": cache, "outs": outs, "run": outs / "cold", "proc": proc}


def build(demo, name, *overrides):
    proc = run("+recipe=demo", f"hydra.run.dir={demo['outs']}/{name}", *overrides, cache=demo["cache"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((demo["outs"] / name / "plan.json").read_text())


def built(plan) -> set[str]:
    return {s["name"] for s in plan["steps"] if not s["hit"]}


def test_demo_builds_int8_tflite_and_report(demo):
    run_dir = demo["run"]
    plan = json.loads((run_dir / "plan.json").read_text())
    assert {"export", "calibset", "tfconvert", "tflite", "compile", "validate_float", "validate", "report"} <= built(plan)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(run_dir / "artifacts" / "model.tflite"))
    inp = interp.get_input_details()[0]
    assert inp["dtype"] == np.uint8 and inp["shape"].tolist() == [1, 256, 256, 3]
    scale, zero = inp["quantization"]
    assert abs(scale - 1 / 255) < 1e-9 and zero == 0, "the board feeds raw pixels"
    assert all(o["dtype"] == np.int8 for o in interp.get_output_details())
    report = json.loads((run_dir / "report.json").read_text())
    f, q = report["float"]["bbox"]["map50_95"], report["quantized"]["bbox"]["map50_95"]
    assert 0.3 < f <= 1 and 0.3 < q <= 1, "the demo model detects its shapes, float and INT8"
    assert report["gate"]["passed"] and abs(report["gate"]["drop"] - (f - q) * 100) < 1e-6 + 1e-3
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    meta = json.loads((run_dir / "artifacts" / "meta.json").read_text())
    assert meta["layout"] == "split_ltrb" and len(meta["names"]) == meta["nc"]
    bundle = run_dir / "deploy"   # the deploy bundle (tests/test_deploy.py runs bundles)
    assert (bundle / "model.tflite").read_bytes() == (run_dir / "artifacts" / "model.tflite").read_bytes()
    assert json.loads((bundle / "meta.json").read_text())["deploy"]["model"] == "model.tflite"
    assert (run_dir / "deploy.tar.gz").is_file() and (bundle / "edgebuild" / "deploy" / "cli.py").is_file()


def test_cold_demo_piped_console_is_short_and_verbose_shows_third_party(demo):
    from tests.test_console_cli import THIRD_PARTY

    out = demo["proc"].stdout + demo["proc"].stderr
    assert out.count("\n") <= 40, out
    assert not THIRD_PARTY.search(out), out
    assert "XNNPACK" in (demo["run"] / "logs" / "validate.log").read_text()
    proc = run("+recipe=demo", f"hydra.run.dir={demo['outs']}/verbose", "validation.max_images=20",
               "build.verbose=true", cache=demo["cache"])  # re-runs the validate steps (LiteRT) only
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "XNNPACK" in proc.stdout + proc.stderr, "build.verbose=true shows third-party output live"


def test_second_build_is_all_hits(demo):
    plan = build(demo, "again")
    assert built(plan) == set()


def test_editing_the_gate_reruns_only_report(demo):
    assert built(build(demo, "gate", "validation.max_map_drop=2.5")) == {"report"}


def test_changing_the_method_keeps_export_calibset_and_conversion(demo):
    proc = run("+recipe=demo", "calibration=minmax", "calibration.count=100", "build.plan=true", cache=demo["cache"])
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[1]: line for line in proc.stdout.splitlines() if line.strip().startswith("[")}
    for name in ("export", "calibset", "tfconvert", "validate_float"):
        assert lines[name].rstrip().endswith("cached"), lines[name]
    assert "calibration.method: 'percentile' → 'minmax'" in lines["calibrate"]
    assert "build" in lines["tflite"] and "upstream calibrate re-runs" in lines["tflite"], lines["tflite"]
    for name in ("validate", "compile"):
        assert "build" in lines[name] and "upstream tflite re-runs" in lines[name], lines[name]
    assert "build" in lines["report"] and ("re-run" in lines["report"] or "calibration.method" in lines["report"]), \
        lines["report"]


def test_demo_resolves_to_the_projects_own_assets():
    proc = run("+recipe=demo", "--cfg", "job")
    assert "weights: builtin:demo-det" in proc.stdout and "path: builtin:demo" in proc.stdout
