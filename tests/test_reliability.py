"""Issue 9: reliability and security of the real `edgebuild` CLI.

One cold demo build (`shared`, its own cache) is shared by the tests that need a reference; extra builds use
validation.max_images=20 calibration.count=20 like it. Plan-time input errors run in ~2 s each.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgebuild.cache import Cache
from tests.cli import EDGEBUILD, ROOT, error_paragraph, run

SHARED = ROOT.parent / "shared" / "data"
SMALL = ("validation.max_images=20", "calibration.count=20")
DEMO = ("+recipe=demo", *SMALL)


# ------------------------------------------------------------------------------------------------ helpers
def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metrics(run_dir: Path) -> dict:
    """The accuracy numbers of a report (latency and timestamps excluded)."""
    r = json.loads((run_dir / "report.json").read_text())
    return {"float": r["float"]["bbox"], "quantized": r["quantized"]["bbox"], "deltas": r["deltas"],
            "gate": {k: r["gate"].get(k) for k in ("passed", "drop")}}


def entries(cache: Path) -> list[Path]:
    """Every published-looking entry: steps/<kind>/<key>/ (a key is 64 hex digits; `last/` holds plan reasons)."""
    return sorted(p for p in (cache / "steps").glob("*/*") if p.is_dir() and len(p.name) == 64)


def steps_of(run_dir: Path) -> dict[str, bool]:
    return {s["name"]: s["hit"] for s in json.loads((run_dir / "plan.json").read_text())["steps"]}


def popen(*args: str, cache: Path, cwd: Path = ROOT) -> tuple[subprocess.Popen, list[str]]:
    """Start edgebuild in its own process group, with a terminal's default Ctrl-C (a background shell starts its
    jobs with SIGINT ignored, and pytest may run under one); a thread collects its merged output lines."""
    env = dict(os.environ, YOLO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", EDGEBUILD_CACHE=str(cache))
    proc = subprocess.Popen([str(EDGEBUILD), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, lines


def wait_for(proc: subprocess.Popen, lines: list[str], pattern: str, timeout: float = 300) -> bool:
    """True once a line matches; False if the process ended first."""
    rx, end = re.compile(pattern), time.monotonic() + timeout
    while time.monotonic() < end:
        if any(rx.search(line) for line in list(lines)):
            return True
        if proc.poll() is not None:
            time.sleep(0.2)  # let the reader thread drain
            return any(rx.search(line) for line in list(lines))
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {pattern!r}:\n{''.join(lines[-40:])}")


def assert_cache_consistent(cache: Path) -> None:
    """Every entry under steps/ is complete and intact (an interrupted build never publishes a partial one)."""
    bad = [str(p) for p in entries(cache) if not Cache.verify(p)]
    assert not bad, f"entries that do not verify: {bad}"


def assert_run_dir_honest(run_dir: Path, cache: Path) -> None:
    """Every final-named artifact in a run dir is byte-identical to a file of a verified cache entry."""
    published = {sha(f) for e in entries(cache) for f in e.iterdir() if f.is_file()}
    finals = [p for p in [*run_dir.glob("report.*"), *(run_dir / "artifacts").glob("*")]
              if p.is_file() and not p.name.endswith(".partial")]
    for p in finals:
        assert sha(p) in published, f"{p} is not a complete copy of a published artifact"


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    """One cold demo build with its own cache: the reference for reproducibility, crash and corruption tests."""
    base = tmp_path_factory.mktemp("shared")
    cache, run_dir = base / "cache", base / "run"
    t0 = time.monotonic()
    proc = run(*DEMO, f"hydra.run.dir={run_dir}", cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"cache": cache, "run": run_dir, "base": base, "seconds": time.monotonic() - t0,
            "tflite": (run_dir / "artifacts" / "model.tflite").read_bytes(), "metrics": metrics(run_dir)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Bad inputs on disk: small YOLO datasets (copied from ../shared/data/shapes) broken in one way each."""
    d = tmp_path_factory.mktemp("inputs")
    src = SHARED / "shapes"

    def dataset(name: str, n_train: int = 5) -> Path:
        root = d / name
        for split, n in (("train", n_train), ("val", 5)):
            (root / "images" / split).mkdir(parents=True)
            (root / "labels" / split).mkdir(parents=True)
            for img in sorted((src / "images" / split).glob("*.jpg"))[:n]:
                shutil.copy(img, root / "images" / split / img.name)
                shutil.copy(src / "labels" / split / f"{img.stem}.txt", root / "labels" / split / f"{img.stem}.txt")
        shutil.copy(src / "data.yaml", root / "data.yaml")
        return root

    dataset("ok")
    dataset("empty", n_train=0)
    (dataset("corrupt") / "images" / "train" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    first = lambda root: sorted((root / "labels" / "train").glob("*.txt"))[0]  # noqa: E731
    first(dataset("badclass")).write_text("99 0.5 0.5 0.1 0.1\n")
    first(dataset("badcoord")).write_text("0 1.45 0.5 0.1 0.1\n")
    (d / "notackpt.pt").write_text("this is a text file, not a checkpoint\n")
    (d / "regular_file").write_text("a file, not a directory\n")

    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 256, 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 256, 256])
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["y"])], "not_yolo", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), d / "not_yolo.onnx")
    return d


# ------------------------------------------------------------------------------------------------ 1. bad inputs
D = "{d}"  # replaced by the inputs dir
DET = str(SHARED / "weights" / "shapes-hard-yolov8n-det.pt")
YOLO_DS = ("dataset=yolo", "calibration.count=5")
# (id, args, plan_only, where (paragraph prefix), phrases)
BAD = [
    ("missing-weights", ["model.weights=nope.pt"], True, "model.weights", ["nope.pt does not exist"]),
    ("weights-not-checkpoint", [f"model.weights={D}/notackpt.pt"], False, "model.weights",
     ["notackpt.pt", "not a loadable Ultralytics checkpoint"]),
    ("det-weights-for-seg", ["model.task=segment", f"model.weights={DET}"], False, "model.task",
     ["segment", "shapes-hard-yolov8n-det.pt is a detect model"]),
    ("non-yolo-onnx", [f"model.weights={D}/not_yolo.onnx", "model.onnx_layout=split_ltrb"], False, "model.weights",
     ["not_yolo.onnx does not look like", "YOLO graph"]),
    ("missing-data-yaml", [*YOLO_DS, f"dataset.path={D}/nowhere/data.yaml"], True, "dataset.path",
     ["nowhere/data.yaml does not exist"]),
    ("empty-split", [*YOLO_DS, f"dataset.path={D}/empty/data.yaml"], True, "calibration.split",
     ["'train'", "has no images"]),
    ("corrupt-jpeg", ["dataset=yolo", "calibration.count=6", f"dataset.path={D}/corrupt/data.yaml",
                      "dataset.on_corrupt=error"], False, f"{D}/corrupt/images/train/broken.jpg", ["cannot be read"]),
    ("label-class-range", [*YOLO_DS, f"dataset.path={D}/badclass/data.yaml", "calibration.stratified=true"], False,
     f"{D}/badclass/labels/train/", ["class 99 is out of range", "0..4"]),
    ("label-coord-range", [*YOLO_DS, f"dataset.path={D}/badcoord/data.yaml", "calibration.stratified=true"], False,
     f"{D}/badcoord/labels/train/", ["coordinate 1.4", "is outside the image"]),
    ("calibration-count-too-big", ["dataset=yolo", f"dataset.path={D}/ok/data.yaml", "calibration.count=50"], True,
     "calibration.count", ["50 is larger than split 'train'", "5 usable images"]),
    ("unwritable-output-dir", [f"hydra.run.dir={D}/regular_file/run"], True, "hydra.run.dir",
     ["regular_file", "cannot be created"]),
    ("unwritable-cache-dir", [f"build.cache_dir={D}/regular_file/cache"], True, "build.cache_dir",
     ["regular_file/cache is not writable"]),
    ("missing-compiler", ["target=imx95", "target.compiler_path=/nonexistent"], True, "target.compiler_path",
     ["/nonexistent does not exist"]),
    ("tensorrt-absent", ["target=orin_nano", "target.require_engine=true"], True, "target.require_engine",
     ["tensorrt", "not importable"]),
]


@pytest.mark.parametrize("args,plan_only,where,phrases", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_gives_one_clear_error(args, plan_only, where, phrases, inputs, tmp_path):
    args = [a.replace(D, str(inputs)) for a in args]
    where = where.replace(D, str(inputs))
    run_dir = [] if any(a.startswith("hydra.run.dir=") for a in args) else [f"hydra.run.dir={tmp_path / 'run'}"]
    cache = inputs / "cache"  # one cache for the matrix: the demo dataset is generated once
    proc = run("+recipe=demo", *args, *(["build.plan=true"] if plan_only else []), *run_dir,
               cwd=tmp_path, cache=cache)
    assert proc.returncode == 2, proc.stderr[-3000:]
    msg = error_paragraph(proc)
    assert msg.startswith(f"error: {where}"), msg
    assert "Fix:" in msg, msg
    for phrase in phrases:
        assert phrase in msg, msg
    if (cache / "steps").is_dir():
        assert_cache_consistent(cache)
        assert not list((cache / "tmp").glob("*")), "a failed step left its temp dir behind"


def test_relative_weights_resolve_against_cwd(tmp_path):
    """model.weights=rel/path is taken from the directory edgebuild runs in, not from the project or Hydra's run dir."""
    (tmp_path / "w").mkdir()
    shutil.copy(SHARED / "weights" / "shapes-yolov8n-det.pt", tmp_path / "w" / "best.pt")
    ok = run("+recipe=cpu_det", "model.weights=w/best.pt", f"dataset.path={SHARED}/shapes/data.yaml",
             "build.plan=true", cwd=tmp_path, cache=tmp_path / "cache")
    assert ok.returncode == 0, ok.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = run("+recipe=cpu_det", "model.weights=w/best.pt", f"dataset.path={SHARED}/shapes/data.yaml",
                  "build.plan=true", cwd=elsewhere, cache=tmp_path / "cache")
    assert missing.returncode == 2
    assert f"{elsewhere}/w/best.pt does not exist" in error_paragraph(missing)


@pytest.mark.slow
def test_gate_failure_of_over_quantized_build(shared, tmp_path):
    """Fused outputs (pixel boxes and scores in one tensor) quantized per-tensor with minmax ranges lose the scores."""
    proc = run(*DEMO, "decoder=fused", "precision=int8", "calibration=minmax", f"hydra.run.dir={tmp_path / 'run'}",
               cache=shared["cache"])
    assert proc.returncode == 3, proc.stderr[-3000:]
    msg = error_paragraph(proc)
    assert msg.startswith("error: validation.max_map_drop:") and "exceeds the allowed 3" in msg and "Fix:" in msg, msg
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["gate"]["passed"] is False
    assert (tmp_path / "run" / "artifacts" / "model.tflite").is_file()  # the rejected model is kept to inspect


@pytest.mark.slow
def test_full_disk_while_building(tmp_path):
    """A 10 MB tmpfs cache: the demo dataset fits, export's 12 MB ONNX does not -> one error, nothing partial kept."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    cache = tmp_path / "small"
    cache.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(cache)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount is not permitted here: {mounted.stderr.decode().strip()}")
    try:
        proc = run("+recipe=demo", f"build.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}")
        assert proc.returncode == 2, proc.stderr[-3000:]
        msg = error_paragraph(proc)
        assert msg.startswith(f"error: {cache}:") and "no space left" in msg and "'export'" in msg, msg
        assert "Fix:" in msg and "nothing partial was kept" in msg
        assert not (cache / "steps" / "export").exists() or not any((cache / "steps" / "export").iterdir())
        assert not list((cache / "tmp").iterdir())
        assert_cache_consistent(cache)
    finally:
        subprocess.run(["umount", str(cache)], check=False)


@pytest.mark.slow
def test_sigint_stops_cleanly_and_resumes(shared, tmp_path):
    """Ctrl-C during tflite: exit 130, a resume hint, no entry for the interrupted step; the re-run resumes."""
    args = ("+recipe=demo", "validation.max_images=20", "calibration.count=21")  # new calibset/tflite, rest cached
    proc, lines = popen(*args, f"hydra.run.dir={tmp_path / 'run'}", cache=shared["cache"])
    assert wait_for(proc, lines, r"calibrate\s+built"), "".join(lines)  # tflite builds next
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130, "".join(lines[-40:])
    time.sleep(0.2)
    out = "".join(lines)
    assert "interrupted" in out and "run the same command to resume" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert_cache_consistent(shared["cache"])
    assert not list((shared["cache"] / "tmp").iterdir()), "the interrupted step left its temp dir"
    plan = run(*args, "build.plan=true", cache=shared["cache"])
    assert plan.returncode == 0, plan.stderr
    state = {m.group(1): m.group(2) for m in re.finditer(r"\]\s+(\w+)\s+(cached|build)\b", plan.stdout)}
    assert state["calibset"] == "cached" and state["export"] == "cached" and state["tfconvert"] == "cached", plan.stdout
    assert state["tflite"] == "build", plan.stdout


# ------------------------------------------------------------------------------------------------ 2. crash safety
@pytest.mark.slow
def test_kill9_at_random_moments_then_resume(shared, tmp_path):
    """kill -9 (the whole process group) at 10 seeded-random moments over successive resumed builds of one cache."""
    rng = random.Random(9)
    step_names = ["calibset", "export", "tfconvert", "calibrate", "tflite", "compile", "layer_error", "validate_float",
                  "validate", "report"]
    # a moment = (the step whose result line, built or cached, triggers it, the delay after that line): the next
    # step is then building (a piped console prints no "building" lines); the last step's line is excluded, so each
    # moment lands while the build is still running even on a fast, idle machine
    moments = sorted((rng.randrange(len(step_names) - 1), rng.uniform(0, 0.5)) for _ in range(10))
    cache, killed = tmp_path / "cache", 0
    for i, (step_i, delay) in enumerate(moments):
        run_dir = tmp_path / f"run{i}"
        proc, lines = popen(*DEMO, f"hydra.run.dir={run_dir}", cache=cache)
        if wait_for(proc, lines, rf"\]\s+{step_names[step_i]}\s+(built|cached)"):
            time.sleep(delay)
        if proc.poll() is None:
            killed += 1
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        time.sleep(0.3)
        assert_cache_consistent(cache)
        if run_dir.is_dir():
            assert_run_dir_honest(run_dir, cache)
    assert killed >= 8, f"only {killed} of the 10 kills hit a running build"
    final = tmp_path / "final"
    proc = run(*DEMO, f"hydra.run.dir={final}", cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_cache_consistent(cache)
    assert (final / "artifacts" / "model.tflite").read_bytes() == shared["tflite"]
    assert metrics(final) == shared["metrics"]


# ------------------------------------------------------------------------------------------------ 3. concurrency
@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    """4 joblib jobs that share every step but the report, on one fresh cache, run from another directory."""
    base = tmp_path_factory.mktemp("sweep")
    cwd, cache, sweep_dir = base / "product", base / "cache", base / "sweep"
    cwd.mkdir()
    proc = run("--multirun", *DEMO, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
               "validation.max_map_drop=1,2,3,4", f"hydra.sweep.dir={sweep_dir}", cwd=cwd, cache=cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"cache": cache, "dir": sweep_dir, "proc": proc}


@pytest.mark.slow
def test_parallel_sweep_builds_each_shared_step_once(sweep):
    plans = sorted(sweep["dir"].glob("*/plan.json"))
    assert len(plans) == 4, list(sweep["dir"].iterdir())
    built: dict[tuple[str, str], int] = {}
    for p in plans:
        for s in json.loads(p.read_text())["steps"]:
            built.setdefault((s["name"], s["key"]), 0)
            built[(s["name"], s["key"])] += 0 if s["hit"] else 1
    assert all(n == 1 for n in built.values()), built  # every distinct step built by exactly one job
    shared_steps = {name for (name, _key) in built} - {"report"}
    assert {name for (name, _key) in built if name in shared_steps} == shared_steps
    assert len([k for k in built if k[0] == "tflite"]) == 1 and len([k for k in built if k[0] == "export"]) == 1
    assert_cache_consistent(sweep["cache"])
    rows = list(csv.DictReader((sweep["dir"] / "summary.csv").open()))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows


# ------------------------------------------------------------------------------------------------ 4. corruption
@pytest.mark.slow
def test_truncated_cache_entry_is_detected_and_rebuilt(shared, tmp_path):
    cache = shared["cache"]
    run_dir = shared["run"]
    key = next(s["key"] for s in json.loads((run_dir / "plan.json").read_text())["steps"] if s["name"] == "tflite")
    victim = cache / "steps" / "tflite" / key / "model.tflite"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    again = tmp_path / "run"
    proc = run(*DEMO, f"hydra.run.dir={again}", cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hits = steps_of(again)
    assert hits.pop("tflite") is False
    assert all(hits.values()), hits  # keys did not change: only the corrupt entry is rebuilt
    assert (again / "artifacts" / "model.tflite").read_bytes() == shared["tflite"]
    assert any((cache / "quarantine").iterdir())
    assert_cache_consistent(cache)


# ------------------------------------------------------------------------------------------------ 5. reproducibility
@pytest.mark.slow
def test_clean_builds_in_other_cwd_and_cache_are_identical(shared, sweep):
    """The sweep ran in another directory with another cache: same model bytes, same accuracy."""
    job = sorted(p.parent for p in sweep["dir"].glob("*/plan.json"))[0]
    assert (job / "artifacts" / "model.tflite").read_bytes() == shared["tflite"]
    got, want = metrics(job), shared["metrics"]
    assert got["float"] == want["float"] and got["quantized"] == want["quantized"] and got["deltas"] == want["deltas"]


# ------------------------------------------------------------------------------------------------ 6. safety
def test_no_shell_execution_in_edgebuild():
    pattern = re.compile(r"shell\s*=\s*True|os\.system\s*\(|os\.popen\s*\(|subprocess\.getoutput|subprocess\.getstatusoutput")
    offenders = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
                 for p in sorted((ROOT / "edgebuild").rglob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
