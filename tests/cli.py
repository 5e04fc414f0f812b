"""Run the real `edgebuild` console script in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGEBUILD = Path(sys.executable).with_name("edgebuild")


def run(*args: str, cwd: Path | None = None, cache: Path | None = None, timeout: float = 1800,
        env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, YOLO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    if cache is not None:
        e["EDGEBUILD_CACHE"] = str(cache)
    return subprocess.run([str(EDGEBUILD), *args], cwd=cwd or ROOT, env=e, capture_output=True, text=True,
                          timeout=timeout)


def error_paragraph(proc: subprocess.CompletedProcess) -> str:
    """The single `error:` paragraph; asserts there is exactly one and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return lines[0]


def run_tty(*args: str, cwd: Path | None = None, cache: Path | None = None, timeout: float = 1800,
            env: dict | None = None) -> tuple[int, str]:
    """The real `edgebuild` with stdout and stderr on a pseudo-terminal (what a person at a terminal sees).
    Returns (exit code, everything written, with the terminal's \\r\\n turned into \\n)."""
    import pty
    import select
    import time

    e = dict(os.environ, YOLO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", COLUMNS="120", LINES="40", **(env or {}))
    if cache is not None:
        e["EDGEBUILD_CACHE"] = str(cache)
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(EDGEBUILD), *args], cwd=cwd or ROOT, env=e, stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
    os.close(master)
    code = proc.wait(timeout=60)
    return code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
