"""Hydra callback: after a --multirun sweep, summary.csv + summary.html in the sweep dir, one row per job.

Each row is read from the job's report.json (its run dir); a job that left no report is listed as such.
Registered in conf/config.yaml under hydra.callbacks.
"""
from __future__ import annotations

import csv
import html
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger("edgebuild")

COLUMNS = ("job", "recipe", "target", "backend", "calibration", "precision", "decoder",
           "float_map50", "quant_map50", "float_map50_95", "quant_map50_95", "delta_map50", "delta_map50_95",
           "float_mask_map50_95", "quant_mask_map50_95", "delta_mask_map50_95",
           "float_latency_ms", "quant_latency_ms", "float_bytes", "quant_bytes", "gate", "gate_drop", "status")


def _get(d: dict, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def row(job: str, report: dict | None) -> dict[str, Any]:
    """One summary row from one report.json (None: the job produced no report)."""
    if report is None:
        return {c: "" for c in COLUMNS} | {"job": job, "status": "no report.json (job failed; see its log)"}
    c = report.get("config", {})
    cal = c.get("calibration.method", "")
    amount = c.get("calibration.count") or c.get("calibration.fraction")
    g = report.get("gate", {})
    return {
        "job": job, "recipe": report.get("recipe", ""), "target": c.get("target.name", ""),
        "backend": c.get("target.backend", ""), "calibration": f"{cal} ({amount})" if amount else cal,
        "precision": c.get("precision.mode", ""), "decoder": c.get("decoder.layout", ""),
        "float_map50": _get(report, "float", "bbox", "map50"), "quant_map50": _get(report, "quantized", "bbox", "map50"),
        "float_map50_95": _get(report, "float", "bbox", "map50_95"),
        "quant_map50_95": _get(report, "quantized", "bbox", "map50_95"),
        "delta_map50": _get(report, "deltas", "bbox", "map50"), "delta_map50_95": _get(report, "deltas", "bbox", "map50_95"),
        "float_mask_map50_95": _get(report, "float", "segm", "map50_95", default=""),
        "quant_mask_map50_95": _get(report, "quantized", "segm", "map50_95", default=""),
        "delta_mask_map50_95": _get(report, "deltas", "segm", "map50_95", default=""),
        "float_latency_ms": _get(report, "latency", "float", "median_ms"),
        "quant_latency_ms": _get(report, "latency", "quantized", "median_ms"),
        "float_bytes": _get(report, "size", "float_bytes"), "quant_bytes": _get(report, "size", "quantized_bytes"),
        "gate": "pass" if g.get("passed") else "FAIL", "gate_drop": g.get("drop"), "status": "ok",
    }


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Run dirs of the sweep's jobs: direct children holding a report.json or Hydra's .hydra/ record."""
    dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and ((d / "report.json").is_file() or (d / ".hydra").is_dir())]
    return sorted(dirs, key=lambda d: (int(d.name.split("_")[0]) if d.name.split("_")[0].isdigit() else 1 << 30, d.name))


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_summary(sweep_dir: Path) -> list[dict]:
    sweep_dir = Path(sweep_dir)
    rows = [row(d.name, _load(d / "report.json")) for d in job_dirs(sweep_dir)]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (sweep_dir / "summary.html").write_text(_html(rows, sweep_dir), encoding="utf-8")
    return rows


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) <= 1 else f"{v:.2f}"
    return html.escape("" if v is None else str(v))


def _html(rows: list[dict], sweep_dir: Path) -> str:
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"fail" if c == "gate" and r[c] == "FAIL" else ""}">'
                         + (f'<a href="{html.escape(r["job"])}/report.html">{_cell(r[c])}</a>' if c == "job" else _cell(r[c]))
                         + "</td>" for c in COLUMNS) + "</tr>" for r in rows)
    css = ("body{font-family:system-ui,sans-serif;margin:20px}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}th{background:#f3f3f3}.fail{color:#b00020;font-weight:bold}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgebuild sweep</title><style>{css}</style></head>"
            f"<body><h1>Sweep {html.escape(str(sweep_dir))}</h1><p>{len(rows)} jobs; deltas in mAP points "
            f"(quantized − float).</p><table><tr>{head}</tr>{body}</table></body></html>")


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_summary(sweep_dir)
        print(console_table(rows, sweep_dir), flush=True)


def console_table(rows: list[dict], sweep_dir: Path) -> str:
    """The sweep at a glance (target, drop, gate, latency, size) and where the full summary is."""
    from edgebuild.report.summary import shown

    def num(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    head = f"{'job':<5} {'target':<10} {'drop pt':>8} {'gate':<5} {'latency ms':>10} {'size MB':>8}  status"
    lines = [f"sweep: {len(rows)} jobs", head]
    for r in rows:
        size = r["quant_bytes"] / 1e6 if isinstance(r["quant_bytes"], (int, float)) else None
        lines.append(f"{r['job'].split('_')[0]:<5} {r['target'] or '-':<10} {num(r['gate_drop'], '8.2f'):>8} "
                     f"{r['gate'] if r['status'] == 'ok' else '-':<5} {num(r['quant_latency_ms'], '10.1f'):>10} "
                     f"{num(size, '8.2f'):>8}  {r['status']}")
    lines.append(f"summary: {shown(sweep_dir / 'summary.csv')}, {shown(sweep_dir / 'summary.html')}")
    return "\n".join(lines)
