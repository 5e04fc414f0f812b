"""Arm Ethos-U `vela` (the i.MX 93 NPU compiler): locate, run from an argument list, parse what it measured."""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from edgebuild.errors import EdgebuildError
from edgebuild.targets.tflite_ops import op_counts

DEFAULT_ACCELERATOR = "ethos-u65-256"   # i.MX 93: Ethos-U65 with 256 MACs/cycle
NPU_OP = "CUSTOM:ethos-u"               # what vela replaces each NPU-mapped run of ops with
TIMEOUT_S = 3600
FORBIDDEN_ARGS = ("--output-dir", "--supported-ops-report", "--list-config-files", "--list-configs",
                  "--version", "-h", "--help")


def find_vela(compiler_path: str | None) -> Path | None:
    """target.compiler_path, else `vela` on PATH, else beside this Python (an unactivated venv)."""
    if compiler_path:
        p = Path(compiler_path).expanduser()
        return p if p.is_file() else None
    hit = shutil.which("vela")
    if hit:
        return Path(hit)
    beside = Path(sys.executable).with_name("vela")
    return beside if beside.is_file() else None


@lru_cache(maxsize=8)
def vela_version(exe: str) -> str:
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    return (r.stdout.strip() or r.stderr.strip()).splitlines()[-1] if r.returncode == 0 else f"error rc={r.returncode}"


def check_args(args: list[str]) -> None:
    for a in args:
        if a.split("=", 1)[0] in FORBIDDEN_ARGS:
            raise EdgebuildError("target.compiler_args", f"{a!r} is managed by edgebuild or makes vela exit early.",
                                 "remove it; vela writes into the compile step's own directory.")


def command(exe: Path, model: Path, out_dir: Path, extra: list[str]) -> list[str]:
    args = [str(exe), str(model), "--output-dir", str(out_dir)]
    if not any(a.split("=", 1)[0] == "--accelerator-config" for a in extra):
        args += ["--accelerator-config", DEFAULT_ACCELERATOR]
    return args + list(extra)


def run_vela(exe: Path, model: Path, out_dir: Path, extra: list[str]) -> dict:
    """Compile `model` into `out_dir`; returns the summary (see `parse`). EdgebuildError when vela fails."""
    check_args(extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = command(exe, model, out_dir, extra)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    (out_dir / "vela.log").write_text(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    if r.returncode != 0:
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise EdgebuildError("target.compiler", f"vela exited with code {r.returncode}: {tail}",
                             f"see {out_dir / 'vela.log'}; check target.compiler_args, or set target.compiler=none.")
    compiled = out_dir / f"{model.stem}_vela.tflite"
    csvs = sorted(out_dir.glob(f"{model.stem}_summary_*.csv"))
    return parse(r.stdout, csvs[0] if csvs else None, compiled if compiled.is_file() else None)


_COUNT = re.compile(r"^(CPU|NPU) operators = (\d+)", re.M)
_MEM = re.compile(r"^Total (SRAM|DRAM|On-chip Flash|Off-chip Flash) used\s+([\d.]+) KiB", re.M)


def parse(stdout: str, summary_csv: Path | None, compiled: Path | None) -> dict:
    """npu_ops/cpu_ops (vela's own counts), memory in KiB, estimated time and cycles, CPU ops by TFLite name."""
    s: dict = {}
    for kind, n in _COUNT.findall(stdout):
        s[f"{kind.lower()}_ops"] = int(n)
    mem = {k: float(v) for k, v in _MEM.findall(stdout)}
    s["sram_kib"], s["dram_kib"] = mem.get("SRAM"), mem.get("DRAM")
    s["flash_kib"] = (mem.get("On-chip Flash") or 0.0) + (mem.get("Off-chip Flash") or 0.0)
    if summary_csv is not None:
        with open(summary_csv, newline="") as f:
            row = next(csv.DictReader(f), {})
        num = lambda k: float(row[k]) if row.get(k) not in (None, "") else None  # noqa: E731
        s.update(accelerator=row.get("accelerator_configuration"), system_config=row.get("system_config"),
                 memory_mode=row.get("memory_mode"), sram_kib=num("sram_memory_used"),
                 dram_kib=num("dram_memory_used"),
                 flash_kib=(num("on_chip_flash_memory_used") or 0.0) + (num("off_chip_flash_memory_used") or 0.0),
                 est_ms=None if num("inference_time") is None else num("inference_time") * 1e3,
                 cycles_total=num("cycles_total"), cycles_npu=num("cycles_npu"), nn_macs=num("nn_macs"),
                 summary_csv=summary_csv.name)
    if compiled is not None:
        counts = op_counts(compiled)
        s["npu_subgraphs"] = counts.pop(NPU_OP, 0)
        s["cpu_ops_by_name"] = counts
        s["compiled_model"] = compiled.name
    return s


def supported_ops_report(exe: Path, section: str = "Ethos-U55 and Ethos-U65 TFLite Summary Table") -> list[str]:
    """The TFLite operators the installed vela can place on the NPU, from `vela --supported-ops-report`."""
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([str(exe), "--supported-ops-report"], cwd=d, capture_output=True, text=True, timeout=300)
        report = Path(d) / "SUPPORTED_OPS.md"
        if r.returncode != 0 or not report.is_file():
            raise RuntimeError(f"vela --supported-ops-report failed: {r.stderr.strip()[-500:]}")
        text = report.read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return sorted(m.group(1) for m in re.finditer(r"^\| ([A-Z0-9_]+) \|", body, re.M))
