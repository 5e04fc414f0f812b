"""docs/your-model.md, run as written: its recipes go into a fresh "product repository" with a checkpoint and a
data.yaml from ../shared/data, and its build commands run verbatim there (cwd recipe lookup), with only a small
calibration/validation budget appended so CI stays quick."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import EDGEBUILD, ROOT

pytestmark = pytest.mark.slow

DOC = ROOT / "docs" / "your-model.md"
CHEAP = ("calibration.count=16", "calibration.correction=none", "validation.max_images=16",
         "validation.latency_runs=2", "validation.layer_error_images=1", "validation.max_map_drop=100")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), re.M | re.S)


def test_the_walkthrough_runs_as_written(shared_data, tmp_path):
    product = tmp_path / "my-product"
    (product / "weights").mkdir(parents=True)
    shutil.copyfile(shared_data / "weights" / "shapes-hard-yolov8n-det.pt", product / "weights" / "best.pt")
    (product / "data").symlink_to(shared_data / "shapes-hard", target_is_directory=True)  # data/data.yaml + images
    recipes = {}
    for text in blocks("yaml"):
        name = next(ln[2:].strip() for ln in text.splitlines() if ln.startswith("# recipes/"))
        (product / name).parent.mkdir(exist_ok=True)
        (product / name).write_text(text)
        recipes[Path(name).stem] = text
    assert set(recipes) == {"my_imx93", "my_jetson"}
    commands = [shlex.split(line) for block in blocks("sh") for line in block.splitlines()
                if line.strip() and not line.startswith("#")]
    assert [c[0] for c in commands] == ["edgebuild", "edgebuild", "edgebuild-plan"]
    runs = {}
    for argv in commands:
        exe = str(EDGEBUILD.with_name(argv[0]))
        out = tmp_path / "runs" / f"{len(runs)}"
        proc = subprocess.run([exe, *argv[1:], *CHEAP, f"hydra.run.dir={out}"], cwd=product, capture_output=True,
                              text=True, timeout=1800, env=run_env(tmp_path / "cache"))
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        runs[" ".join(argv)] = (proc, out)

    imx93_proc, imx93 = runs["edgebuild +recipe=my_imx93"]
    report = json.loads((imx93 / "report.json").read_text())
    assert report["recipe"] == "my_imx93" and report["config"]["target.name"] == "imx93"
    assert report["compile"]["compiler"]["ran"] and (imx93 / "artifacts" / "model_vela.tflite").is_file()
    assert f"model:   {imx93 / 'artifacts' / 'model.tflite'}" in imx93_proc.stdout, imx93_proc.stdout
    _, jetson = runs["edgebuild +recipe=my_jetson"]
    for name in ("model_qdq.onnx", "calibration.cache", "build_engine.sh"):
        assert (jetson / "artifacts" / name).is_file(), name
    assert json.loads((jetson / "report.json").read_text())["config"]["target.name"] == "orin_nano"
    plan, _ = runs["edgebuild-plan +recipe=my_imx93 calibration=minmax"]
    assert "plan (my_imx93 on imx93)" in plan.stdout and "calibration.method: 'percentile' → 'minmax'" in plan.stdout


def run_env(cache: Path) -> dict:
    return dict(os.environ, YOLO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", EDGEBUILD_CACHE=str(cache))
