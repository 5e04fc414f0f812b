"""edgebuild vs Ultralytics' own INT8 TFLite export, side by side (issue 8). `make bench` runs this.

    python bench/run_all.py                         # every case, then docs/benchmarks.md
    python bench/run_all.py --cases upstream,cold   # some cases (results merged into bench/results.json)
    python bench/run_all.py --doc-only              # regenerate docs/benchmarks.md from bench/results.json
    python bench/run_all.py --n 100,300,1000        # calibration sizes for the scaling cases

Every measured case is a fresh subprocess, run ONE at a time; wall time is the subprocess's, peak RSS is the largest
sum of RSS over the whole process tree (psutil, sampled every 0.2 s). Scoring of Ultralytics' TFLite files is a
separate subprocess (bench/_score_tflite.py: our evaluator), never counted in the export time.
Work dirs (caches, exports, run dirs) go under $EDGEBUILD_BENCH_WORK (default /tmp/edgebuild-bench/<stamp>).
Cases on ../shared/data shapes-hard det, imgsz 320, the 400 val images:
  upstream_N   Ultralytics YOLO.export(format="saved_model", int8=True, data=<N train images>) + scores
  litert       Ultralytics format="tflite" int8 (8.4 routes it to the LiteRT/litert-torch exporter)
  cold_N       edgebuild +recipe=cpu_det precision=int8 calibration=minmax calibration.count=N, fresh cache
  shipped      edgebuild +recipe=cpu_det as shipped (percentile + mixed), fresh cache
  noop         the shipped build again, all cached (x3) + a rebuild after changing only validation.max_map_drop
  sweep        edgebuild --multirun +recipe=cpu_det target=cpu,imx8mp,imx93, fresh cache
  calsweep     edgebuild --multirun +recipe=cpu_det calibration=minmax,entropy,percentile calibration.correction=none
               vs one cold build with calibration.correction=none, fresh caches
  psweep, pcalsweep   the same two sweeps with hydra/launcher=joblib (3 local processes; shared steps are built
               once under their lock, the per-target / per-method tails run side by side)
  scale        warm no-op rebuilds of +recipe=demo on a generated 20,000-image calibration split vs a 240-image one
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"
KEEP = "<!-- measured by other bench scripts: kept as is when make bench regenerates the part above -->"
PY = sys.executable
EDGEBUILD = str(Path(PY).parent / "edgebuild")
SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
ALL_CASES = ("upstream", "litert", "cold", "shipped", "noop", "sweep", "calsweep", "psweep", "pcalsweep", "scale",
             "hot")
PARALLEL = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]  # the README's parallel sweep: 3 local processes
TARGETS = {"drop_pt": 1.0, "cold_ratio": 0.5, "rss_mib": 1536, "noop_s": 2.0}


# ---------------------------------------------------------------- measuring

def measure(argv: list[str], cwd: Path, log: Path, env: dict | None = None, timeout: float = 1800,
            watch: Path | None = None) -> dict:
    """Run argv in a fresh process; wall seconds, peak RSS of the process tree (0.2 s samples), exit code.
    `watch`: a directory whose *.tflite files are noted when first seen (seconds after start)."""
    import psutil

    e = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "TF_CPP_MIN_LOG_LEVEL": "2",
         "PYTHONUNBUFFERED": "1", **(env or {})}
    log.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    peak, procs, seen = 0, 0, {}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = psutil.Popen(argv, cwd=str(cwd), env=e, stdout=f, stderr=subprocess.STDOUT)
        while True:
            try:
                tree = [p] + p.children(recursive=True)
            except psutil.NoSuchProcess:
                tree = []
            rss = 0
            for q in tree:
                try:
                    rss += q.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak, procs = max(peak, rss), max(procs, len(tree))
            if watch is not None and watch.is_dir():
                for fp in watch.rglob("*.tflite"):
                    seen.setdefault(fp.name, round(time.perf_counter() - t0, 1))
            try:
                rc = p.wait(timeout=0.2)
                break
            except psutil.TimeoutExpired:
                if time.perf_counter() - t0 > timeout:
                    p.kill()
                    rc = "timeout"
                    break
    wall = time.perf_counter() - t0
    return {"argv": argv[1:] if argv[0] == PY else argv, "cwd": str(cwd), "rc": rc, "wall_s": round(wall, 2),
            "peak_rss_mib": round(peak / 2**20, 1), "max_processes": procs,
            "loadavg_before": [round(x, 2) for x in load], "log": str(log),
            **({"tflite_first_seen_s": seen} if watch is not None else {})}


def last_json(log: Path) -> dict | None:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def tail(log: Path, n: int = 6) -> list[str]:
    return [ln[-300:] for ln in log.read_text(errors="replace").splitlines()[-n:]]


# ---------------------------------------------------------------- cases

def case_upstream(work: Path, n: int, logs: Path) -> dict:
    d = fresh(work / f"upstream_{n}")  # a left-over export would look "first seen at 0 s"
    r = measure([PY, str(BENCH / "_upstream_export.py"), "--work", str(d), "--n", str(n)], ROOT, logs / f"upstream_{n}.log",
                watch=d)
    out = last_json(Path(r["log"])) or {}
    r["files"] = out.get("files", [])
    if r["rc"] != 0:
        r["error_tail"] = tail(Path(r["log"]))
    r["scores"] = {}
    for f in r["files"]:
        kind = ("int8_full_integer_quant" if f.endswith("_full_integer_quant.tflite") else
                "float32" if f.endswith("_float32.tflite") else None)
        if kind is None:
            continue
        s = measure([PY, str(BENCH / "_score_tflite.py"), f], ROOT, logs / f"upstream_{n}_score_{kind}.log")
        s["result"] = last_json(Path(s["log"]))
        if s["result"] is None:
            s["error_tail"] = tail(Path(s["log"]))
        r["scores"][kind] = s
    return r


LITERT_PACKAGES = ("litert-torch", "ai-edge-quantizer")


def litert_venv(work: Path, logs: Path) -> tuple[Path, dict]:
    """A private venv for Ultralytics' LiteRT route: the project's venv is visible through a .pth (torch, ultralytics,
    TensorFlow are not reinstalled) but LITERT_PACKAGES and whatever they pull land only here, never in the project's
    pinned environment. Returns (its python, the install record)."""
    import site

    venv = work / "litert-venv"
    py = venv / "bin" / "python"
    t0 = time.perf_counter()
    subprocess.run([getattr(sys, "_base_executable", PY), "-m", "venv", str(venv)], check=True)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "_edgebuild_project_venv.pth").write_text(site.getsitepackages()[0] + "\n")
    log = logs / "litert_pip.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        rc = subprocess.run([str(py), "-m", "pip", "install", *LITERT_PACKAGES], stdout=f, stderr=subprocess.STDOUT,
                            timeout=1800).returncode
    versions = subprocess.run([str(py), "-m", "pip", "list", "--path", purelib, "--format", "json"],
                              capture_output=True, text=True).stdout
    return py, {"rc": rc, "wall_s": round(time.perf_counter() - t0, 1), "log": str(log), "tail": tail(log, 3),
                "installed": {p["name"]: p["version"] for p in json.loads(versions or "[]")
                              if p["name"] in LITERT_PACKAGES or p["name"].startswith(("litert", "ai-edge"))}}


def case_litert(work: Path, n: int, logs: Path, weights: Path | None = None) -> dict:
    """Ultralytics' export(format="tflite", int8=True) in its own venv (litert_venv), scored in our evaluator."""
    d = fresh(work / f"upstream_litert_{weights.stem if weights else 'default'}")
    py, install = litert_venv(work, logs)
    argv = [str(py), str(BENCH / "_upstream_export.py"), "--work", str(d), "--n", str(n), "--format", "tflite"]
    r = measure(argv + (["--weights", str(weights)] if weights else []), ROOT, logs / f"{d.name}.log", timeout=1800)
    r["install"] = install
    text = Path(r["log"]).read_text(errors="replace")
    r["files"] = (last_json(Path(r["log"])) or {}).get("files", [])
    missing = [m for m in ("litert_torch", "litert-torch", "ai-edge-quantizer", "ai_edge_quantizer") if m in text
               and ("not found" in text or "No module named" in text)]
    r["missing_dependencies"] = sorted(set(m.replace("_", "-") for m in missing))
    r["error_tail"] = tail(Path(r["log"]), 8)
    r["scores"] = {}
    for f in r["files"]:
        kind = Path(f).stem
        s = measure([PY, str(BENCH / "_score_tflite.py"), f], ROOT, logs / f"{d.name}_score_{kind}.log")
        s["result"] = last_json(Path(s["log"]))
        if s["result"] is None:
            s["error_tail"] = tail(Path(s["log"]))
        r["scores"][kind] = s
    return r


def edgebuild_run(name: str, overrides: list[str], cache: Path, run_dir: Path, logs: Path, multirun=False,
                  recipe: str = "cpu_det") -> dict:
    argv = [EDGEBUILD] + (["--multirun"] if multirun else []) + [f"+recipe={recipe}", *overrides,
                                                                   f"hydra.{'sweep' if multirun else 'run'}.dir={run_dir}"]
    r = measure(argv, ROOT, logs / f"{name}.log", env={"EDGEBUILD_CACHE": str(cache)})
    r["run_dir"] = str(run_dir)
    return r


def read_run(run_dir: Path) -> dict:
    """report.json + plan.json of one run dir -> the numbers the tables need."""
    out: dict = {}
    plan_p, rep_p = run_dir / "plan.json", run_dir / "report.json"
    if plan_p.is_file():
        plan = json.loads(plan_p.read_text())
        out["plan_seconds"] = plan.get("seconds")
        out["steps"] = {s["name"]: {"hit": s["hit"], "seconds": s.get("seconds"), "key": s["key"][:12],
                                    "reason": s.get("reason")} for s in plan["steps"]}
        out["built"] = [s["name"] for s in plan["steps"] if not s["hit"]]
    if rep_p.is_file():
        rep = json.loads(rep_p.read_text())
        fl, q = rep["float"]["bbox"], rep["quantized"]["bbox"]
        out.update({"float_map50_95": fl["map50_95"], "int8_map50_95": q["map50_95"], "float_map50": fl["map50"],
                    "int8_map50": q["map50"], "drop_pt": round(100 * (fl["map50_95"] - q["map50_95"]), 2),
                    "gate": rep.get("gate"), "images": rep["quantized"].get("images"),
                    "artifact": rep["quantized"]["artifact"]["file"],
                    "artifact_bytes": rep["quantized"]["artifact"]["size_bytes"],
                    "int8_latency_ms": rep["quantized"].get("latency", {}).get("median_ms"),
                    "float_latency_ms": rep["float"].get("latency", {}).get("median_ms"),
                    "config": {k: rep["config"].get(k) for k in ("target.name", "calibration.method", "calibration.count",
                                                                 "precision.mode", "decoder.layout")}})
    return out


def fresh(path: Path) -> Path:
    """A cold case must start from an empty cache (and sweep dir): remove what an earlier bench run left."""
    shutil.rmtree(path, ignore_errors=True)
    return path


def case_cold(work: Path, n: int, logs: Path) -> dict:
    r = edgebuild_run(f"cold_{n}", ["precision=int8", "calibration=minmax", f"calibration.count={n}"],
                      fresh(work / f"cache_cold_{n}"), work / f"run_cold_{n}", logs)
    r.update(read_run(Path(r["run_dir"])))
    return r


def case_shipped(work: Path, logs: Path) -> dict:
    r = edgebuild_run("shipped", [], fresh(work / "cache_shipped"), work / "run_shipped", logs)
    r.update(read_run(Path(r["run_dir"])))
    return r


def case_noop(work: Path, logs: Path) -> dict:
    cache = work / "cache_shipped"
    if not (cache / "steps").is_dir():  # needs the shipped build's cache
        return {"skipped": "run the 'shipped' case first (it fills the cache this case rebuilds from)"}
    runs = []
    for i in range(3):
        r = edgebuild_run(f"noop_{i}", [], cache, work / f"run_noop_{i}", logs)
        r.update(read_run(Path(r["run_dir"])))
        runs.append(r)
    fresh_gate = f"validation.max_map_drop={1 + time.time() % 1:.6f}"  # a value this cache has not seen: report must re-run
    g = edgebuild_run("gate_change", [fresh_gate], cache, work / "run_gate_change", logs)
    g.update(read_run(Path(g["run_dir"])))
    return {"runs": runs, "median_wall_s": statistics.median(x["wall_s"] for x in runs),
            "built_in_noop": sorted({b for x in runs for b in x.get("built", [])}), "gate_change": g}


def case_calsweep(work: Path, logs: Path, n: int, name: str = "calsweep", launcher: list[str] = ()) -> dict:
    """calibration=minmax,entropy,percentile with calibration.correction=none (the method groups otherwise pick
    different corrections: weights / finetune / weights), against one cold build with the same override."""
    base = edgebuild_run(f"{name}_base", ["calibration.correction=none", f"calibration.count={n}"],
                         fresh(work / f"cache_{name}_base"), work / f"run_{name}_base", logs)
    r = case_sweep(work, logs, n, name, "calibration=minmax,entropy,percentile",
                   ["calibration.correction=none", *launcher])
    r["baseline_wall_s"], r["baseline_rc"] = base["wall_s"], base["rc"]
    return r


def case_sweep(work: Path, logs: Path, n: int, name: str = "sweep", sweep: str = "target=cpu,imx8mp,imx93",
               extra: list[str] = ()) -> dict:
    sweep_dir = fresh(work / name)
    r = edgebuild_run(name, [sweep, *extra, f"calibration.count={n}"], fresh(work / f"cache_{name}"), sweep_dir,
                      logs, multirun=True)
    jobs = {}
    built_count: dict[str, int] = {}
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / "plan.json").is_file()) if sweep_dir.is_dir() else []:
        info = read_run(d)
        jobs[d.name] = {k: info.get(k) for k in ("config", "built", "float_map50_95", "int8_map50_95", "drop_pt", "gate",
                                                   "plan_seconds")}
        jobs[d.name]["step_seconds"] = {k: v["seconds"] for k, v in info.get("steps", {}).items()}
        for s, v in info.get("steps", {}).items():
            built_count[s] = built_count.get(s, 0) + (0 if v["hit"] else 1)
    r["jobs"] = jobs
    r["built_count_per_step"] = built_count  # number of jobs in which the step was built ("hit": false)
    return r


def case_scale(work: Path, logs: Path) -> dict:
    """Warm no-op rebuilds of the demo recipe on a 20,000-image calibration split vs a 240-image one: plan time
    (plan.json seconds: plan + all-cached execute), wall and peak RSS of the whole CLI process."""
    sys.path.insert(0, str(ROOT))
    from edgebuild.demo.synth import generate

    out = {}
    for n in (240, 20000):
        ds = work / f"ds_{n}"
        data = ds / "data.yaml" if (ds / "data.yaml").is_file() else generate(ds, n_train=n, n_val=40, imgsz=96)
        cache = fresh(work / f"cache_scale_{n}")
        over = [f"dataset.path={data}", "calibration.count=100", "validation.max_images=40"]
        cold = edgebuild_run(f"scale_{n}_cold", over, cache, work / f"run_scale_{n}_cold", logs, recipe="demo")
        runs = []
        for i in range(3):
            r = edgebuild_run(f"scale_{n}_noop{i}", over, cache, work / f"run_scale_{n}_noop{i}", logs, recipe="demo")
            r.update(read_run(Path(r["run_dir"])))
            runs.append(r)
        out[str(n)] = {"cold_wall_s": cold["wall_s"], "cold_rc": cold["rc"],
                       "noop_plan_s": statistics.median(r.get("plan_seconds") or float("nan") for r in runs),
                       "noop_wall_s": statistics.median(r["wall_s"] for r in runs),
                       "noop_peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                       "built_in_noop": sorted({b for r in runs for b in r.get("built", [])})}
    return out


def case_hot(logs: Path) -> dict:
    r = measure([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(BENCH / "test_hot_paths.py"),
                 "--benchmark-json", str(BENCH / "hot_paths.json")], ROOT, logs / "hot_paths.log")
    r["benchmarks"] = {}
    p = BENCH / "hot_paths.json"
    if p.is_file():
        for b in json.loads(p.read_text())["benchmarks"]:
            st = b["stats"]
            r["benchmarks"][b["name"]] = {"median_us": round(st["median"] * 1e6, 1), "mean_us": round(st["mean"] * 1e6, 1),
                                          "min_us": round(st["min"] * 1e6, 1), "rounds": st["rounds"]}
    return r


# ---------------------------------------------------------------- machine

def machine() -> dict:
    import psutil

    vers = {}
    for mod in ("torch", "tensorflow", "onnx2tf", "ultralytics", "onnxruntime", "ai_edge_litert", "onnx", "numpy"):
        try:
            out = subprocess.run([PY, "-c", f"import importlib.metadata as m; print(m.version({mod.replace('_', '-')!r}))"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
            vers[mod] = out or "?"
        except Exception:  # noqa: BLE001
            vers[mod] = "?"
    try:
        vers["edgebuild"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True).stdout.strip()
    except OSError:
        pass
    return {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "nproc": os.cpu_count(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": vers}


# ---------------------------------------------------------------- driver

def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"cases": {}}


def save(res: dict) -> None:
    RESULTS.write_text(json.dumps(res, indent=1, default=str))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(ALL_CASES))
    ap.add_argument("--n", default="100,300", help="calibration sizes for upstream/cold (first 300 is the headline)")
    ap.add_argument("--doc-only", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="forget previous bench/results.json")
    a = ap.parse_args(argv)
    res = {"cases": {}} if a.fresh else load_results()
    if not a.doc_only:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        work = Path(os.environ.get("EDGEBUILD_BENCH_WORK", f"/tmp/edgebuild-bench/{stamp}"))
        work.mkdir(parents=True, exist_ok=True)
        logs = work / "logs"
        res["machine"] = machine()
        res["work_dir"] = str(work)
        ns = [int(x) for x in a.n.split(",") if x]
        head = 300 if 300 in ns else ns[0]
        cases = [c.strip() for c in a.cases.split(",") if c.strip()]
        plan = []
        for c in cases:
            if c in ("upstream", "cold"):
                plan += [(f"{c}_{n}", c, n) for n in ([head] + [m for m in ns if m != head])]
            else:
                plan.append((c, c, head))
        for name, kind, n in plan:
            print(f"[bench] {dt.datetime.now():%H:%M:%S} {name} ...", flush=True)
            if kind == "upstream":
                r = case_upstream(work, n, logs)
            elif kind == "litert":
                r = case_litert(work, n, logs)
            elif kind == "cold":
                r = case_cold(work, n, logs)
            elif kind == "shipped":
                r = case_shipped(work, logs)
            elif kind == "noop":
                r = case_noop(work, logs)
            elif kind == "sweep":
                r = case_sweep(work, logs, n)
            elif kind == "calsweep":
                r = case_calsweep(work, logs, n)
            elif kind == "psweep":  # against the shipped cold build, as `sweep`
                r = case_sweep(work, logs, n, "psweep", extra=PARALLEL)
            elif kind == "pcalsweep":
                r = case_calsweep(work, logs, n, "pcalsweep", PARALLEL)
            elif kind == "scale":
                r = case_scale(work, logs)
            elif kind == "hot":
                r = case_hot(logs)
            else:
                raise SystemExit(f"unknown case {kind!r}; known: {', '.join(ALL_CASES)}")
            r["measured_at"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            res["cases"][name] = r
            save(res)
            print(f"[bench]   wall {r.get('wall_s', r.get('median_wall_s'))} s, peak RSS {r.get('peak_rss_mib')} MiB, "
                  f"rc {r.get('rc')}", flush=True)
    from bench_doc import write_doc  # noqa: E402  (bench/ is on sys.path when run as a script)

    old = DOC.read_text() if DOC.is_file() else ""
    DOC.write_text(write_doc(res).rstrip("\n") + "\n\n" + (old[old.index(KEEP):] if KEEP in old else ""))
    print(f"[bench] wrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
