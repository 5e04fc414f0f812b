"""Content-addressed step store.

Layout under the cache root:
    steps/<kind>/<key>/            a published entry: the step's files + MANIFEST.json (digests of all files)
    steps/<kind>/latest.json       inputs of the last entry used for <kind>
    steps/<kind>/last/<ctx>.json   inputs of the last entry used for <kind> by one recipe on one target, so the plan
                                   can say what changed for *this* recipe
    tmp/                           entries being built (renamed into place when complete), named
                                   <kind>-<pid>-<rand>@<host> so a dead owner's temp dir is removed at once
    locks/<key>.lock               one builder per key across processes
    quarantine/                    corrupt entries moved aside
An entry without a valid MANIFEST.json is never treated as complete.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from edgebuild.digest import json_sha256, tree_digests
from edgebuild.errors import EdgebuildError

MANIFEST = "MANIFEST.json"
KEY = re.compile(r"[0-9a-f]{64}")                                  # an entry dir's name
HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"  # owner of temp dirs, with the pid


def cache_root(cfg=None) -> Path:
    """build.cache_dir > $EDGEBUILD_CACHE > $XDG_CACHE_HOME/edgebuild (~/.cache/edgebuild)."""
    configured = cfg.build.cache_dir if cfg is not None and "build" in cfg else None
    if configured:
        return Path(configured).expanduser().resolve()
    if os.environ.get("EDGEBUILD_CACHE"):
        return Path(os.environ["EDGEBUILD_CACHE"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgebuild"


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.remote = None   # edgebuild.remote.Remote when build.remote_cache is set (edgebuild.remote.attach)
        try:
            for sub in ("steps", "tmp", "locks", "quarantine"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            probe = self.root / "tmp" / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise EdgebuildError("build.cache_dir", f"the cache directory {self.root} is not writable ({e.strerror}).",
                                 "point build.cache_dir or $EDGEBUILD_CACHE at a writable directory.") from None

    def entry(self, kind: str, key: str) -> Path:
        return self.root / "steps" / kind / key

    def lookup(self, kind: str, key: str) -> Path | None:
        """The entry if published and intact; a corrupt entry is quarantined and None returned."""
        path = self.entry(kind, key)
        if not path.is_dir():
            return None
        if self.verify(path):
            return path
        self._quarantine(path)
        return None

    def peek(self, kind: str, key: str) -> bool:
        """Cheap existence check for planning, here or on the remote (the hit is verified when the step runs)."""
        return (self.entry(kind, key) / MANIFEST).is_file() or (self.remote is not None and self.remote.has(kind, key))

    def output_digest(self, kind: str, key: str) -> str | None:
        """Digest of a published entry's files (what its dependents are keyed by); None if it has no manifest."""
        local = manifest_digest(self.entry(kind, key))
        if local is None and self.remote is not None and self.remote.has(kind, key):
            return json_sha256(self.remote.manifest(kind, key)["files"])
        return local

    @staticmethod
    def verify(path: Path) -> bool:
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            files = tree_digests(path)
            files.pop(MANIFEST, None)
            return files == manifest["files"]
        except (OSError, ValueError, KeyError):
            return False

    @contextmanager
    def lock(self, key: str):
        with FileLock(str(self.root / "locks" / f"{key}.lock")):
            yield

    def new_tmp(self, kind: str) -> Path:
        """A temp dir named for its owner (`<kind>-<pid>-<rand>@<host>`), so a dead owner's is removed at once."""
        path = self.root / "tmp" / f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}@{HOST}"
        path.mkdir(parents=True)
        return path

    def entries(self):
        """Every published entry as (kind, key, path): only 64-hex dirs under steps/<kind>/ (latest.json and last/
        hold plan reasons, not entries)."""
        steps = self.root / "steps"
        for kind_dir in sorted(p for p in steps.iterdir() if p.is_dir()) if steps.is_dir() else []:
            for path in sorted(kind_dir.iterdir()):
                if KEY.fullmatch(path.name) and path.is_dir():
                    yield kind_dir.name, path.name, path

    @staticmethod
    def touch(path: Path) -> None:
        """Record a use of an entry (its MANIFEST.json's mtime is its last use, for `edgebuild-cache ls` and gc)."""
        try:
            os.utime(path / MANIFEST)
        except OSError:
            pass

    def publish(self, kind: str, key: str, tmp: Path, inputs: dict) -> Path:
        """Write the manifest and atomically rename tmp into place. Caller holds the key's lock."""
        final = self.entry(kind, key)
        try:
            manifest = {"kind": kind, "key": key, "files": tree_digests(tmp), "inputs": inputs,
                        "created": time.time()}
            _write_json(tmp / MANIFEST, manifest)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # a corrupt leftover: move it aside first
                self._quarantine(final)
            os.rename(tmp, final)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno == errno.ENOSPC:
                raise no_space(self.root, kind) from None
            raise
        return final

    def adopt(self, kind: str, key: str, tmp: Path) -> Path:
        """Move a complete, verified entry (with its MANIFEST.json, e.g. pulled from a remote) into place. Caller
        holds the key's lock."""
        final = self.entry(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            self._quarantine(final)
        os.rename(tmp, final)
        return final

    def remember(self, kind: str, inputs: dict, context: str | None = None) -> None:
        """Record the inputs of the entry just used (per kind, and per context: recipe + target)."""
        try:
            _write_json(self.root / "steps" / kind / "latest.json", inputs)
            if context is not None:
                _write_json(self._context_file(kind, context), {"context": context, "inputs": inputs})
        except OSError:
            pass  # advisory only

    def last_inputs(self, kind: str, context: str | None = None) -> dict | None:
        """Inputs of the last entry used for `kind` (by `context` when given: None if that context never built it)."""
        try:
            if context is None:
                return json.loads((self.root / "steps" / kind / "latest.json").read_text())
            doc = json.loads(self._context_file(kind, context).read_text())
            return doc["inputs"] if doc.get("context") == context else None
        except (OSError, ValueError, KeyError):
            return None

    def _context_file(self, kind: str, context: str) -> Path:
        return self.root / "steps" / kind / "last" / f"{hashlib.sha256(context.encode()).hexdigest()[:20]}.json"

    def _quarantine(self, path: Path) -> None:
        dest = self.root / "quarantine" / f"{path.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, dest)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)

    def clean_tmp(self, max_age_s: float = 3600) -> list[Path]:
        """Remove temp dirs of builds that died: at once when their owner was a process of this host that is gone,
        else (another host, or an unnamed dir) when older than max_age_s. Returns what was removed."""
        now, removed = time.time(), []
        for p in (self.root / "tmp").iterdir():
            try:
                dead = owner_gone(p.name)
                if dead is None:
                    dead = now - p.stat().st_mtime > max_age_s
                if dead:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                    removed.append(p)
            except OSError:
                pass
        return removed


def owner_gone(name: str) -> bool | None:
    """For a temp dir named by new_tmp: True if its owner process (on this host) no longer exists, False if it
    does, None when unknown (another host, or not our naming)."""
    rest, at, host = name.rpartition("@")
    parts = rest.rsplit("-", 2)
    if not at or host != HOST or len(parts) != 3 or not parts[1].isdigit():
        return None
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        return False
    return False


def manifest_digest(entry: Path) -> str | None:
    """sha256 of the file digests an entry's MANIFEST.json lists: equal for byte-identical outputs, whatever the
    inputs were (early cutoff)."""
    try:
        return json_sha256(json.loads((Path(entry) / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def no_space(root: Path, step: str) -> EdgebuildError:
    return EdgebuildError(str(root), f"no space left on the device while building step {step!r}.",
                          "free disk space or point build.cache_dir at a larger disk; nothing partial was kept.")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)
