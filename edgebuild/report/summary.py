"""The closing lines of a build on the console, read from the run dir's report.json (the numbers are its numbers).

    done: demo on cpu in 72.3s, 10 steps (0 cached, 10 built)
      model:   outputs/2025-01-01/12-00-00/artifacts/model.tflite
      report:  outputs/2025-01-01/12-00-00/report.html
      bbox mAP50-95: float 0.6163 -> INT8 0.6207 (drop -0.44 pt)
      gate:    passed (max drop 3 pt)
      log:     outputs/2025-01-01/12-00-00/edgebuild.log, outputs/2025-01-01/12-00-00/logs/<step>.log
"""
from __future__ import annotations

import json
import os
from pathlib import Path

LABEL = {"int8": "INT8", "mixed": "mixed", "fp16": "FP16"}
METRICS = (("bbox", "bbox mAP50-95"), ("segm", "mask mAP50-95"))


def shown(path: Path) -> str:
    """A path as the user will type it: relative to the current directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "report.json").read_text())
    except (OSError, ValueError):
        return None


def artifact_paths(run_dir: Path, report: dict) -> list[tuple[str, Path]]:
    """(label, path) of the deployable files in the run dir: the validated artifact, and compiler output/engine."""
    arts = run_dir / "artifacts"
    out = []
    main = ((report.get("quantized") or {}).get("artifact") or {}).get("file")
    if main and (arts / main).is_file():
        out.append(("model", arts / main))
    for name, label in (("model_vela.tflite", "compiled"), ("model_neutron.tflite", "compiled"),
                        ("model.engine", "engine"), ("build_engine.sh", "engine")):
        if (arts / name).is_file() and label not in {lb for lb, _ in out}:
            out.append((label, arts / name))
    return out


def metric_lines(report: dict) -> list[str]:
    mode = (report.get("config") or {}).get("precision.mode", "int8")
    label = LABEL.get(mode, mode)
    lines = []
    for kind, name in METRICS:
        f = ((report.get("float") or {}).get(kind) or {}).get("map50_95")
        q = ((report.get("quantized") or {}).get(kind) or {}).get("map50_95")
        if f is None or q is None:
            continue
        drop = round((f - q) * 100.0, 2)
        lines.append(f"{name}: float {f:.4f} -> {label} {q:.4f} (drop {drop:.2f} pt)")
    return lines


def closing_lines(run_dir: Path, context: str, seconds: float, cached: int, built: int) -> list[str]:
    report = load(run_dir)
    head = f"done: {context} in {seconds:.1f}s, {cached + built} steps ({cached} cached, {built} built)"
    if report is None:
        return [head, f"  run dir: {shown(run_dir)}"]
    lines = [head]
    lines += [f"  {label + ':':<8} {shown(p)}" for label, p in artifact_paths(run_dir, report)]
    lines.append(f"  {'report:':<8} {shown(run_dir / 'report.html')}")
    lines += [f"  {m}" for m in metric_lines(report)]
    g = report.get("gate") or {}
    if g:
        lines.append(f"  {'gate:':<8} {'passed' if g.get('passed') else 'FAILED'} "
                     f"(drop {g.get('drop', 0):.2f} pt, allowed {g.get('max_map_drop')} pt)")
    logs = run_dir / "logs"
    lines.append(f"  {'log:':<8} {shown(run_dir / 'edgebuild.log')}"
                 + (f", {shown(logs)}{os.sep}<step>.log" if logs.is_dir() else ""))
    return lines


def job_line(run_dir: Path, seconds: float, label: str) -> str:
    """A multirun job, in one line, when it finishes."""
    report = load(run_dir)
    if report is None:
        return f"job {label}: no report ({shown(run_dir)})"
    g = report.get("gate") or {}
    lat = ((report.get("latency") or {}).get("quantized") or {}).get("median_ms")
    size = (report.get("size") or {}).get("quantized_bytes")
    parts = [f"drop {g.get('drop', 0):.2f} pt", f"gate {'pass' if g.get('passed') else 'FAIL'}"]
    if lat is not None:
        parts.append(f"{lat:.1f} ms")
    if size:
        parts.append(f"{size / 1e6:.2f} MB")
    return f"job {label}: " + ", ".join(parts) + f" ({seconds:.0f}s) -> {shown(run_dir)}"
