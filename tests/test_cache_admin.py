"""`edgebuild-cache` ls / verify / gc and temp-dir cleanup, on a real cache filled by real (tiny) test steps."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from edgebuild.cache import Cache
from edgebuild.cache_gc import human, parse_age, parse_size, scan
from tests import enginekit

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("minmax", "entropy", "percentile")


@pytest.fixture()
def weights(tmp_path) -> Path:
    p = tmp_path / "w.bin"
    p.write_text("weights-v1")
    return p


def cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "edgebuild.cache_cli", "--cache-dir", str(cache), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def fill(cache: Path, weights: Path, monkeypatch) -> dict[str, dict]:
    """Three builds that share t_source; each one's entries a little older than the next's."""
    monkeypatch.setenv("ENGINEKIT_SLOW_STEPS", "50")  # t_slow entries of ~50 KB
    monkeypatch.setenv("ENGINEKIT_SLOW_SLEEP", "0")
    built = {}
    for age, method in zip((3000, 2000, 1000), METHODS):
        _, results = enginekit.build(cache, weights, f"calibration.method={method}")
        for r in results.values():
            t = time.time() - age
            os.utime(r.path / "MANIFEST.json", (t, t))
        built[method] = results
    return built


def test_ls_lists_entries_only(tmp_path, weights, monkeypatch):
    built = fill(tmp_path / "c", weights, monkeypatch)
    assert (tmp_path / "c" / "steps" / "t_slow" / "latest.json").is_file()
    proc = cli(tmp_path / "c", "ls")
    assert proc.returncode == 0, proc.stderr
    rows = [ln.split() for ln in proc.stdout.splitlines()[1:-1]]
    assert sorted(r[0] for r in rows) == sorted(["t_source"] + ["t_slow"] * 3 + ["t_sink"] * 3)
    assert proc.stdout.splitlines()[-1].startswith("7 entries")
    slow = built["entropy"]["t_slow"]
    size = sum(f.stat().st_size for f in slow.path.rglob("*") if f.is_file())
    assert f"t_slow {slow.key[:12]} {human(size)} 33m ago" in " ".join(proc.stdout.split()), proc.stdout


def test_verify_names_bad_entries_and_exits_1(tmp_path, weights, monkeypatch):
    built = fill(tmp_path / "c", weights, monkeypatch)
    assert cli(tmp_path / "c", "verify").returncode == 0
    bad = built["entropy"]["t_slow"]
    (bad.path / "b.txt").write_text("tampered")
    proc = cli(tmp_path / "c", "verify")
    assert proc.returncode == 1
    assert bad.key in proc.stderr and proc.stderr.count("bad:") == 1, proc.stderr
    assert "7 entries checked, 1 bad" in proc.stdout


def test_gc_max_size_keeps_newest_and_next_build_is_cached(tmp_path, weights, monkeypatch):
    cache = tmp_path / "c"
    fill(cache, weights, monkeypatch)
    entries = scan(Cache(cache))
    total = sum(e.size for e in entries)
    limit = total // 2
    proc = cli(cache, "gc", "--max-size", str(limit))
    assert proc.returncode == 0, proc.stderr
    left = scan(Cache(cache))
    assert sum(e.size for e in left) <= limit
    kept_methods = {(e.path / "b.txt").read_text().split("method=")[1] for e in left if e.kind == "t_slow"}
    assert kept_methods == {"percentile"}, "least recently used go first"
    counter = tmp_path / "count.txt"
    monkeypatch.setenv("ENGINEKIT_COUNTER", str(counter))
    _, again = enginekit.build(cache, weights, "calibration.method=percentile")
    assert all(r.hit for r in again.values()) and not counter.exists()


def test_gc_older_than_and_held_lock(tmp_path, weights, monkeypatch):
    cache = tmp_path / "c"
    built = fill(cache, weights, monkeypatch)
    held = built["minmax"]["t_sink"]
    with FileLock(str(cache / "locks" / f"{held.key}.lock")):  # a running build holds it
        proc = cli(cache, "gc", "--older-than", "25m")
    assert proc.returncode == 0, proc.stderr
    assert f"kept t_sink {held.key[:12]}: a running build holds it" in proc.stdout
    left = {(e.kind, e.key) for e in scan(Cache(cache))}
    assert ("t_sink", held.key) in left
    assert ("t_slow", built["minmax"]["t_slow"].key) not in left and ("t_slow", built["entropy"]["t_slow"].key) not in left
    assert ("t_slow", built["percentile"]["t_slow"].key) in left  # used 1000 s ago < 25 min


def test_temp_dir_of_a_dead_process_goes_at_once(tmp_path):
    cache = Cache(tmp_path / "c")
    code = f"from edgebuild.cache import Cache; print(Cache({str(tmp_path / 'c')!r}).new_tmp('t_slow'))"
    dead = Path(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout.strip())
    (dead / "partial.bin").write_bytes(b"x" * 100)
    mine = cache.new_tmp("t_sink")
    unnamed = tmp_path / "c" / "tmp" / "something-else"
    unnamed.mkdir()
    assert dead.is_dir()
    removed = cache.clean_tmp()
    assert removed == [dead] and not dead.exists()
    assert mine.is_dir() and unnamed.is_dir(), "live owners and unknown dirs are left to the age rule"


@pytest.mark.parametrize("args, where", [
    (("gc", "--max-size", "lots"), "--max-size"),
    (("gc", "--max-size", "2XB"), "--max-size"),
    (("gc", "--older-than", "soon"), "--older-than"),
    (("gc",), "edgebuild-cache gc"),
])
def test_bad_options_give_one_error_paragraph(tmp_path, args, where):
    Cache(tmp_path / "c")
    proc = cli(tmp_path / "c", *args)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: {where}:") and "Fix:" in lines[0]


def test_size_and_age_parsing():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("100") == 100
    assert parse_age("30d") == 30 * 86400 and parse_age("12h") == 43200
