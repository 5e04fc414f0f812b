"""The engine under test is real (resolver, cache, runner); only the step kinds are test-defined."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgebuild.cache import Cache
from edgebuild.resolve import make_plan
from tests import enginekit

KIT = Path(enginekit.__file__)


@pytest.fixture()
def weights(tmp_path) -> Path:
    p = tmp_path / "w.bin"
    p.write_text("weights-v1")
    return p


def keys(weights, *overrides):
    """Step keys of a build (keys below the first step depend on upstream outputs, so they exist once built)."""
    _, results = enginekit.build(weights.parent / "keys-cache", weights, *overrides)
    return {r.name: r.key for r in results.values()}


def test_keys_change_only_with_declared_inputs(weights):
    base = keys(weights)
    assert keys(weights) == base, "keys must be deterministic"
    # validation.* feeds only the sink
    k = keys(weights, "validation.max_map_drop=9")
    assert k["t_source"] == base["t_source"] and k["t_slow"] == base["t_slow"] and k["t_sink"] != base["t_sink"]
    # calibration.method invalidates the calibration-dependent step and what follows, not the source
    k = keys(weights, "calibration.method=entropy")
    assert k["t_source"] == base["t_source"] and k["t_slow"] != base["t_slow"] and k["t_sink"] != base["t_sink"]
    # a key no step declares changes nothing
    assert keys(weights, "target.delegate=vx") == base
    # input file content is part of the key; its path is not
    weights.write_text("weights-v2")
    assert keys(weights)["t_source"] != base["t_source"]
    moved = weights.with_name("moved.bin")
    moved.write_text("weights-v1")
    assert keys(moved) == base


def test_second_build_is_all_hits_and_plan_says_why(tmp_path, weights, monkeypatch):
    counter = tmp_path / "count.txt"
    monkeypatch.setenv("ENGINEKIT_COUNTER", str(counter))
    plan, results = enginekit.build(tmp_path / "c", weights)
    assert [r.hit for r in results.values()] == [False, False, False]
    assert plan["t_source"].reason == "not in cache: no earlier build of (no recipe) on cpu here"
    assert plan["t_slow"].reason == "not in cache: upstream t_source re-runs"
    plan, results = enginekit.build(tmp_path / "c", weights)
    assert all(r.hit for r in results.values()) and all(s.cached for s in plan.steps)
    assert len(counter.read_text().splitlines()) == 3
    plan = make_plan(enginekit.config("calibration.method=percentile"), Cache(tmp_path / "c"), enginekit.kinds(weights))
    assert plan["t_source"].cached and not plan["t_slow"].cached
    assert "calibration.method: 'minmax' → 'percentile'" in plan["t_slow"].reason
    assert plan["t_sink"].reason == "upstream t_slow re-runs (reused if its output is unchanged)"


def test_early_cutoff_identical_output_keeps_dependents(tmp_path, weights, monkeypatch):
    """A step that re-runs and writes byte-identical files does not invalidate its dependents (Shake/Bazel)."""
    counter = tmp_path / "count.txt"
    monkeypatch.setenv("ENGINEKIT_COUNTER", str(counter))
    _, first = enginekit.build(tmp_path / "c", weights)
    plan = make_plan(enginekit.config("model.opset=13"), Cache(tmp_path / "c"), enginekit.kinds(weights))
    assert not plan["t_source"].cached and "model.opset" in plan["t_source"].reason
    assert plan["t_slow"].key == "" and "re-runs (reused if its output is unchanged)" in plan["t_slow"].reason
    _, again = enginekit.build(tmp_path / "c", weights, "model.opset=13")
    assert [r.hit for r in again.values()] == [False, True, True]
    assert again["t_slow"].key == first["t_slow"].key and again["t_sink"].key == first["t_sink"].key
    # an output that does change still invalidates them
    _, changed = enginekit.build(tmp_path / "c", weights, "model.imgsz=64")
    assert [r.hit for r in changed.values()] == [False, False, False]
    assert [ln.split()[0] for ln in counter.read_text().splitlines()].count("t_slow") == 2


def test_corrupt_entry_is_detected_and_rebuilt(tmp_path, weights, monkeypatch):
    counter = tmp_path / "count.txt"
    monkeypatch.setenv("ENGINEKIT_COUNTER", str(counter))
    _, results = enginekit.build(tmp_path / "c", weights)
    entry = results["t_slow"].path
    good = (entry / "b.txt").read_bytes()
    data = bytearray((entry / "big.bin").read_bytes())
    data[0] ^= 0xFF
    (entry / "big.bin").write_bytes(bytes(data))
    _, results = enginekit.build(tmp_path / "c", weights)
    assert not results["t_slow"].hit and results["t_source"].hit
    assert (results["t_slow"].path / "b.txt").read_bytes() == good
    assert list((tmp_path / "c" / "quarantine").iterdir()), "the corrupt entry is moved aside"
    (results["t_sink"].path / "report.json").write_text("")  # truncation
    _, results = enginekit.build(tmp_path / "c", weights)
    assert not results["t_sink"].hit
    assert [line.split()[0] for line in counter.read_text().splitlines()].count("t_slow") == 2


def _spawn(cache, weights, env_extra, *overrides):
    env = dict(os.environ, **env_extra)
    return subprocess.Popen([sys.executable, str(KIT), str(cache), str(weights), *overrides], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_mid_step_leaves_no_complete_entry(tmp_path, weights):
    cache, started = tmp_path / "c", tmp_path / "started"
    proc = _spawn(cache, weights, {"ENGINEKIT_STARTED": str(started), "ENGINEKIT_SLOW_STEPS": "3000",
                                   "ENGINEKIT_SLOW_SLEEP": "0.01"})
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert started.exists(), proc.communicate()
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    slow_dir = cache / "steps" / "t_slow"
    assert not any(p.is_dir() for p in slow_dir.glob("*")) if slow_dir.exists() else True
    assert list((cache / "tmp").iterdir()), "the killed build's temp dir is what remains"
    assert Cache(cache).lookup("t_source", make_plan(enginekit.config(), None, enginekit.kinds(weights))["t_source"].key)
    out = _spawn(cache, weights, {}).communicate(timeout=60)[0]
    assert out.split() == ["t_source:hit", "t_slow:built", "t_sink:built"]


def test_two_processes_build_a_key_once(tmp_path, weights):
    cache, counter = tmp_path / "c", tmp_path / "count.txt"
    env = {"ENGINEKIT_COUNTER": str(counter), "ENGINEKIT_SLOW_STEPS": "100", "ENGINEKIT_SLOW_SLEEP": "0.01"}
    procs = [_spawn(cache, weights, env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    names = [line.split()[0] for line in counter.read_text().splitlines()]
    assert sorted(names) == ["t_sink", "t_slow", "t_source"], "each key built exactly once"
    assert sorted(o[0].split()[1] for o in outs) == ["t_slow:built", "t_slow:hit"]
