"""The console (fast): honest, short plan reasons; third-party output captured at the fd level; failing steps name
themselves and their log; progress on a pipe is a few plain lines."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from edgebuild import schema
from edgebuild.cache import Cache
from edgebuild.console import Console
from edgebuild.engine import StepContext, StepKind
from edgebuild.errors import StepFailed
from edgebuild.resolve import MAX_LINE, explain, format_plan, make_plan
from edgebuild.runner import execute
from tests import enginekit

ROOT = Path(__file__).resolve().parents[1]


def demo_config(*overrides: str):
    """The demo recipe, composed as the CLI does (planning only: nothing is built)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=["+recipe=demo", *overrides])
    return schema.validate(cfg, recipe="demo")


def remember(plan, cache: Cache) -> None:
    """What the runner records after a build, without building."""
    for s in plan.steps:
        cache.remember(s.name, s.inputs, plan.context)


def test_reasons_compare_with_the_same_recipe_and_target_only(tmp_path, cache_dir):
    cache = Cache(tmp_path / "c")
    imx93 = make_plan(demo_config("target=imx93", "calibration=minmax"), cache)
    remember(imx93, cache)  # another target built with minmax
    cpu = make_plan(demo_config(), cache)
    text = format_plan(cpu)
    assert "minmax" not in text, text  # the demo on cpu never used minmax: say what is true for it
    assert cpu["export"].reason == "not in cache: no earlier build of demo on cpu here"
    assert cpu["calibrate"].reason.startswith("not in cache: upstream"), cpu["calibrate"].reason
    remember(cpu, cache)
    again = make_plan(demo_config("calibration=minmax"), cache)
    assert again["calibrate"].reason == "calibration.method: 'percentile' → 'minmax'"
    assert again["tflite"].reason.startswith("upstream calibrate"), again["tflite"].reason  # the one that changed first
    assert again["tflite"].reason.endswith("(reused if unchanged)"), "early cutoff: may still be reused"


def test_plan_lines_stay_short_over_a_target_and_a_calibration_change(tmp_path, cache_dir):
    cache = Cache(tmp_path / "c")
    before = make_plan(demo_config("target=imx93"), cache)
    remember(before, cache)
    ops = list(OmegaConf.to_container(demo_config("target=imx93").target.supported_ops))
    fewer = "[" + ",".join(ops[:-3]) + "]"
    after = make_plan(demo_config("target=imx93", f"target.supported_ops={fewer}", "target.fail_on_fallback=true",
                                  "calibration=minmax", "calibration.count=50", "calibration.percentile=99.9"), cache)
    text = format_plan(after)
    assert all(len(line) <= MAX_LINE for line in text.splitlines()), text
    reason = after["compile"].reason
    assert f"target.supported_ops changed ({len(ops)} → {len(ops) - 3} entries)" in reason, reason
    assert ops[0] not in reason, "a changed list is summarized, not printed"
    full = explain(after, "compile")
    assert all(op in full for op in ops), "--explain keeps the full detail"
    assert "target.fail_on_fallback" in full


def test_explain_from_the_command_line_and_unknown_step(tmp_path):
    from tests.cli import error_paragraph, run

    proc = run("+recipe=demo", "target=imx93", "build.plan=true", "--explain", "compile", cwd=tmp_path,
               cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert "step compile (demo on imx93)" in proc.stdout and "target.supported_ops" in proc.stdout, proc.stdout
    bad = run("+recipe=demo", "build.plan=true", "--explain", "nosuch", cwd=tmp_path, cache=tmp_path / "cache")
    assert bad.returncode == 2 and "build.explain" in error_paragraph(bad) and "calibrate" in error_paragraph(bad)


def _noisy(ctx: StepContext) -> None:
    """A step whose 'C++' logging bypasses Python (writes to fd 2 directly), then reports progress."""
    os.write(2, b"E0000 00:00:1 cuda_platform.cc:52] failed call to cuInit: fake C++ line\n")
    print("third-party print on stdout")
    for i in range(1, 51):
        ctx.progress(i, 50, "images")
    (ctx.out / "x.txt").write_text("ok")


def _crash(ctx: StepContext) -> None:
    os.write(2, b"W0000 converter.cc:1] unrelated chatter\n")
    os.write(2, b"F0000 converter.cc:9] Check failed: tensor 'boxes' has no quantization\n")
    raise ValueError("conversion aborted")


def kinds(run):
    return {"t_noisy": StepKind("t_noisy", 1, run, config=("model.imgsz",))}


def test_third_party_output_goes_to_the_step_log_not_the_console(tmp_path, capfd):
    cfg = enginekit.config()
    cache, out = Cache(tmp_path / "c"), io.StringIO()
    plan = make_plan(cfg, cache, kinds(_noisy))
    execute(plan, cache, cfg, isolate=False, console=Console(stream=out, tty=False), log_dir=tmp_path / "logs")
    console = out.getvalue()
    captured = capfd.readouterr()
    assert "cuInit" not in console + captured.out + captured.err and "third-party" not in console + captured.out
    logged = (tmp_path / "logs" / "t_noisy.log").read_text()
    assert "failed call to cuInit: fake C++ line" in logged and "third-party print on stdout" in logged
    lines = console.splitlines()
    assert [ln for ln in lines if "images" in ln] == ["  t_noisy: images 50/50"], "one plain line per loop on a pipe"
    assert lines[-1].split()[:3] == ["[1/1]", "t_noisy", "built"], lines
    sys.stdout.write("")  # fds are restored: pytest still captures normally
    print("after")
    assert capfd.readouterr().out == "after\n"


def test_a_failing_step_names_itself_its_log_and_the_error(tmp_path):
    cfg = enginekit.config()
    cache = Cache(tmp_path / "c")
    plan = make_plan(cfg, cache, kinds(_crash))
    with pytest.raises(StepFailed) as err:
        execute(plan, cache, cfg, isolate=False, console=Console(stream=io.StringIO(), tty=False),
                log_dir=tmp_path / "logs")
    text = err.value.paragraph()
    assert text.startswith("error: step 't_noisy'") and str(tmp_path / "logs" / "t_noisy.log") in text
    assert "Check failed: tensor 'boxes' has no quantization" in text and "ValueError: conversion aborted" in text
    assert "unrelated chatter" not in text and "internal error" not in text
    assert err.value.exit_code == 1
    assert not list((tmp_path / "c" / "tmp").iterdir()), "nothing partial kept"


def test_progress_on_a_terminal_is_one_transient_bar():
    out = io.StringIO()
    c = Console(stream=out, tty=True)
    for i in range(1, 101):
        c.progress("calibrate", i, 100, "calibration images")
    c.line("[4/10] calibrate built")
    text = out.getvalue()
    assert "calibration images" in text and "/100" in text
    assert text.count("\n") == 1, "the bar leaves no line behind"
