"""A cold `make demo` at a terminal, through the real CLI in a pseudo-terminal: a short console with no third-party
lines (all of them in the run's logs), and a closing summary whose paths exist and whose numbers are report.json's."""
from __future__ import annotations

import json
import re

import pytest

from tests.cli import run_tty

pytestmark = pytest.mark.slow

THIRD_PARTY = re.compile(r"TensorSpec|absl|cuda|cuInit|XNNPACK|LiteRT|litert|tensorflow|oneDNN|"
                         r"experimental_preserve_all_tensors|fully_quantize|Ultralytics|^[IWEF]\d{4} ", re.I | re.M)


@pytest.fixture(scope="module")
def tty_demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("ttydemo")
    code, out = run_tty("+recipe=demo", f"hydra.run.dir={base / 'run'}", cwd=base, cache=base / "cache")
    assert code == 0, out[-3000:]
    return {"out": out, "run": base / "run", "cwd": base}


def test_cold_demo_console_is_short_and_quiet(tty_demo):
    out = tty_demo["out"]
    assert out.count("\n") <= 30, out
    assert not THIRD_PARTY.search(out), THIRD_PARTY.search(out).group(0) + "\n" + out
    logs = "\n".join(p.read_text(errors="replace") for p in (tty_demo["run"] / "logs").glob("*.log"))
    for expected in ("TensorSpec", "cuda", "XNNPACK", "experimental_preserve_all_tensors"):
        assert expected in logs, f"{expected!r} is kept in the run's logs"
    assert "calibration images" in out, "a progress bar for calibration"


def test_closing_summary_matches_report_json(tty_demo):
    out, run = tty_demo["out"], tty_demo["run"]
    fields = dict(re.findall(r"^  (model|report|log):\s+(\S+?),?(?:\s|$)", out, re.M))
    assert (tty_demo["cwd"] / fields["model"]).resolve() == (run / "artifacts" / "model.tflite").resolve()
    assert (tty_demo["cwd"] / fields["report"]).is_file() and (tty_demo["cwd"] / fields["log"]).is_file()
    report = json.loads((run / "report.json").read_text())
    m = re.search(r"bbox mAP50-95: float (\S+) -> INT8 (\S+) \(drop (\S+) pt\)", out)
    f, q = report["float"]["bbox"]["map50_95"], report["quantized"]["bbox"]["map50_95"]
    assert (m.group(1), m.group(2)) == (f"{f:.4f}", f"{q:.4f}"), m.group(0)
    assert float(m.group(3)) == pytest.approx(report["gate"]["drop"], abs=0.006)
    gate = re.search(r"gate:\s+(passed|FAILED) \(drop (\S+) pt, allowed (\S+) pt\)", out)
    assert gate.group(1) == ("passed" if report["gate"]["passed"] else "FAILED")
    assert float(gate.group(3)) == report["gate"]["max_map_drop"]
    plan = json.loads((run / "plan.json").read_text())
    head = re.search(r"^done: demo on cpu in \S+s, (\d+) steps \((\d+) cached, (\d+) built\)", out, re.M)
    assert int(head.group(1)) == len(plan["steps"]) and int(head.group(3)) == sum(not s["hit"] for s in plan["steps"])
