"""Cache management behind `edgebuild-cache`: list entries, verify every manifest, and collect garbage.

gc removes least recently used entries first (last use = the mtime of the entry's MANIFEST.json, touched by every
build that uses it) and never one whose key lock a running build holds. An entry is moved out of steps/ in one
rename while its lock is held, then deleted, so a build never sees half an entry.
"""
from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from edgebuild.cache import HOST, MANIFEST, Cache
from edgebuild.errors import EdgebuildError


@dataclass
class Entry:
    kind: str
    key: str
    path: Path
    size: int
    last_used: float


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return total


def scan(cache: Cache) -> list[Entry]:
    """Every published entry with its size and last use, least recently used first."""
    out = []
    for kind, key, path in cache.entries():
        try:
            used = (path / MANIFEST).stat().st_mtime
        except OSError:
            used = path.stat().st_mtime
        out.append(Entry(kind, key, path, tree_size(path), used))
    return sorted(out, key=lambda e: (e.last_used, e.kind, e.key))


def verify_all(cache: Cache) -> tuple[int, list[Entry]]:
    """(number of entries checked, the entries whose files do not match their manifest)."""
    entries = scan(cache)
    return len(entries), [e for e in entries if not cache.verify(e.path)]


@dataclass
class GcResult:
    removed: list[Entry]
    kept: list[Entry]
    held: list[Entry]          # wanted for removal, but a running build holds their lock
    temp_removed: int
    freed: int


def gc(cache: Cache, max_size: int | None = None, older_than: float | None = None, dry_run: bool = False,
       now: float | None = None) -> GcResult:
    """Remove entries unused for `older_than` seconds, then least recently used ones until the entries total at
    most `max_size` bytes. Temp dirs of dead builds and quarantined entries go first."""
    now = time.time() if now is None else now
    temp_removed = 0 if dry_run else len(cache.clean_tmp())
    freed = 0
    if not dry_run:
        for q in (cache.root / "quarantine").iterdir():
            freed += tree_size(q)
            shutil.rmtree(q, ignore_errors=True)
    entries = scan(cache)
    total = sum(e.size for e in entries)
    removed, held, kept = [], [], []
    for e in entries:  # least recently used first
        stale = older_than is not None and now - e.last_used > older_than
        over = max_size is not None and total > max_size
        if not (stale or over):
            kept.append(e)
            continue
        if dry_run or _remove(cache, e):
            removed.append(e)
            total -= e.size
            freed += e.size
        else:
            held.append(e)
            kept.append(e)
    return GcResult(removed, kept, held, temp_removed, freed)


def _remove(cache: Cache, e: Entry) -> bool:
    """Move the entry out of steps/ under its key lock (False if a running build holds it), then delete it."""
    try:
        with FileLock(str(cache.root / "locks" / f"{e.key}.lock"), timeout=0):
            dest = cache.root / "tmp" / f"gc-{e.key[:12]}-{uuid.uuid4().hex[:6]}@{HOST}"
            os.rename(e.path, dest)
    except Timeout:
        return False
    except FileNotFoundError:  # removed meanwhile by another gc
        return True
    shutil.rmtree(dest, ignore_errors=True)
    return True


UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
         "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str, option: str = "--max-size") -> int:
    """'2GB', '500MB', '1.5GiB', '123456' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS:
        raise EdgebuildError(option, f"{text!r} is not a size.",
                             f"give a number with an optional unit, e.g. {option} 2GB, 500MB, 1.5GiB or 1000000.")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def parse_age(text: str, option: str = "--older-than") -> float:
    """'30d', '12h', '45m', '90s', '2w' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text).lower())
    if not m:
        raise EdgebuildError(option, f"{text!r} is not an age.",
                             f"give a number and a unit s, m, h, d or w, e.g. {option} 30d.")
    return float(m.group(1)) * AGES[m.group(2)]


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
