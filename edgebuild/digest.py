"""Content digests for cache keys and manifests."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    """{relative posix path: sha256} for every file under root."""
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def json_sha256(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


class DigestMemo:
    """File digests remembered by (size, mtime_ns, inode), as DVC's state db does: an unchanged stat is not re-read.

    Keeps no-op rebuilds fast when a step declares thousands of dataset files. Stored as JSON in the cache root."""

    def __init__(self, path: Path | None = None):
        self.path, self.dirty = path, False
        try:
            self.entries: dict[str, list] = json.loads(path.read_text()) if path else {}
        except (OSError, ValueError):
            self.entries = {}

    def sha256(self, path: Path | str) -> str:
        st = os.stat(path)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        key = os.path.abspath(path)  # not resolve(): its per-component lstat costs a second per 20,000 files
        hit = self.entries.get(key)
        if hit and hit[:3] == stamp:
            return hit[3]
        digest = file_sha256(path)
        self.entries[key] = stamp + [digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if not (self.path and self.dirty):
            return
        import uuid

        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:6]}")
        try:
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # advisory: the next plan re-hashes
