"""NXP eIQ Neutron converter (i.MX 95 NPU). Ships with NXP's eIQ Toolkit, not on PyPI: run it when it is
installed (target.compiler_path, or `neutron-converter` on PATH), otherwise report why it did not run.

The converted model replaces each NPU-mapped run of ops with a `NeutronGraph` custom op; the ops left outside
those are what the i.MX 95 runs on its Cortex-A55 cores. Invocation (eIQ Neutron SDK docs):
`neutron-converter --input in.tflite --output out.tflite --target imx95`, plus target.compiler_args.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from edgebuild.errors import EdgebuildError
from edgebuild.targets.tflite_ops import op_counts

EXE_NAME = "neutron-converter"
DEFAULT_SOC = "imx95"
NPU_OP = "CUSTOM:NeutronGraph"
TIMEOUT_S = 3600
NOT_FOUND = "not run: neutron-converter not found (set target.compiler_path)"


def find_neutron(compiler_path: str | None) -> Path | None:
    if compiler_path:
        p = Path(compiler_path).expanduser()
        return p if p.is_file() else None
    hit = shutil.which(EXE_NAME)
    return Path(hit) if hit else None


def environment(compiler_path: str | None) -> dict:
    """What the cache key needs to know: whether (and which) converter exists here."""
    exe = find_neutron(compiler_path)
    if exe is None:
        return {"neutron-converter": None}
    st = exe.stat()
    return {"neutron-converter": {"path": str(exe.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}}


def command(exe: Path, model: Path, out: Path, extra: list[str]) -> list[str]:
    args = [str(exe), "--input", str(model), "--output", str(out)]
    if not any(a.split("=", 1)[0] == "--target" for a in extra):
        args += ["--target", DEFAULT_SOC]
    return args + list(extra)


def run_neutron(compiler_path: str | None, model: Path, out_dir: Path, extra: list[str]) -> dict:
    """{"ran": bool, "reason": str, "summary": {...}}; EdgebuildError when an installed converter fails."""
    exe = find_neutron(compiler_path)
    if exe is None:
        return {"ran": False, "reason": NOT_FOUND, "summary": {}}
    out = out_dir / "model_neutron.tflite"
    cmd = command(exe, model, out, extra)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    (out_dir / "neutron.log").write_text(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    if r.returncode != 0 or not out.is_file():
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise EdgebuildError("target.compiler", f"neutron-converter exited with code {r.returncode}: {tail}",
                             f"see {out_dir / 'neutron.log'}; check target.compiler_args (e.g. --target).")
    counts = op_counts(out)
    npu = counts.pop(NPU_OP, 0)
    return {"ran": True, "reason": "", "summary": {"npu_subgraphs": npu, "cpu_ops": sum(counts.values()),
                                                     "cpu_ops_by_name": counts, "compiled_model": out.name}}
