"""Remote step cache on any fsspec filesystem (`build.remote_cache`: a shared directory, s3://bucket/prefix, ...).

Layout under the remote root:
    blobs/<sha[:2]>/<sha256>             file contents, addressed by their digest (shared between entries)
    steps/<kind>/<key>/MANIFEST.json     an entry: the same manifest as the local cache (relative path -> sha256)
    tmp/                                 uploads in flight

Before building a step the runner pulls it if the remote has its manifest: every file is downloaded into a local
temp dir and checked against the manifest; a corrupt or partial remote entry is ignored (the step is rebuilt and
the remote repaired), never trusted. After building, the entry is pushed (unless build.remote_cache_push=false):
each blob is uploaded under a temp name and moved into place, and the manifest goes last, so a reader sees a
complete entry or none. Pushers of the same key from different hosts write the same blobs and a manifest each:
harmless. A remote that fails mid-build is dropped for the rest of the run with one warning: steps build locally.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

from edgebuild.errors import EdgebuildError

log = logging.getLogger("edgebuild")
MANIFEST = "MANIFEST.json"
KEY = "build.remote_cache"


class Remote:
    def __init__(self, url: str, push: bool = True):
        self.url, self.push_enabled, self.down = url, push, False
        self._manifests: dict[tuple[str, str], dict | None] = {}
        self.fs, self.root = _open(url)
        self._probe()

    # ------------------------------------------------------------------ paths
    def _manifest_path(self, kind: str, key: str) -> str:
        return f"{self.root}/steps/{kind}/{key}/{MANIFEST}"

    def _blob(self, sha: str) -> str:
        return f"{self.root}/blobs/{sha[:2]}/{sha}"

    # ------------------------------------------------------------------ reads
    def manifest(self, kind: str, key: str) -> dict | None:
        """The remote entry's manifest, or None (absent, unreadable, or the remote is down)."""
        if (kind, key) not in self._manifests:
            self._manifests[(kind, key)] = self._guard(lambda: self._read_manifest(kind, key), "read")
        return self._manifests[(kind, key)]

    def _read_manifest(self, kind: str, key: str) -> dict | None:
        try:
            doc = json.loads(self.fs.cat_file(self._manifest_path(kind, key)))
        except FileNotFoundError:
            return None
        except ValueError:  # a garbled manifest is a corrupt entry: rebuilt and repaired
            return {"kind": kind, "key": key, "files": None}
        return doc if isinstance(doc, dict) and doc.get("key") == key else {"kind": kind, "key": key, "files": None}

    def has(self, kind: str, key: str) -> bool:
        m = self.manifest(kind, key)
        return m is not None and isinstance(m.get("files"), dict)

    def pull(self, kind: str, key: str, cache) -> Path | None:
        """Download the entry into the local cache (caller holds the key's lock); None if the remote does not have
        it or it does not match its manifest (then it is rebuilt and pushed again)."""
        manifest = self.manifest(kind, key)
        if manifest is None:
            return None
        tmp = cache.new_tmp(kind)
        ok = isinstance(manifest.get("files"), dict) and self._guard(lambda: self._download(manifest, tmp), "pull")
        if ok:
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            ok = cache.verify(tmp)
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.down:
                log.warning("remote cache: entry %s %s on %s does not match its manifest (corrupt or partial): "
                            "ignored, building the step here", kind, key[:12], self.url)
                self._manifests[(kind, key)] = {"kind": kind, "key": key, "files": None, "bad": True}
            return None
        return cache.adopt(kind, key, tmp)

    def _download(self, manifest: dict, tmp: Path) -> bool:
        for rel, sha in manifest["files"].items():
            dest = tmp / rel
            if not dest.resolve().is_relative_to(tmp.resolve()):
                return False  # a manifest naming paths outside the entry is not trusted
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get_file(self._blob(sha), str(dest))
            except FileNotFoundError:
                return False
        return True

    # ------------------------------------------------------------------ writes
    def push(self, kind: str, key: str, entry: Path) -> None:
        """Upload a local entry: blobs first, the manifest last (a no-op if the remote has an intact one)."""
        if not self.push_enabled or self.down:
            return
        known = self.manifest(kind, key)
        repair = known is not None and known.get("bad", False) or (known is not None and known.get("files") is None)
        if known is not None and not repair:
            return
        manifest = json.loads((entry / MANIFEST).read_text())

        def upload() -> bool:
            for rel, sha in sorted(manifest["files"].items()):
                if repair or not self.fs.exists(self._blob(sha)):
                    self._put(entry / rel, self._blob(sha))
            self._put(entry / MANIFEST, self._manifest_path(kind, key))
            return True

        if self._guard(upload, "push"):
            self._manifests[(kind, key)] = manifest
            log.info("remote cache: pushed %s %s", kind, key[:12])

    def _put(self, local: Path, dest: str) -> None:
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        self.fs.put_file(str(local), tmp)
        self.fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
        self.fs.mv(tmp, dest)

    # ------------------------------------------------------------------ failures
    def _probe(self) -> None:
        """At start: the remote must be reachable and readable (and writable when pushing)."""
        try:
            if self.push_enabled:
                self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
                probe = f"{self.root}/tmp/.probe-{uuid.uuid4().hex}"
                self.fs.pipe_file(probe, b"")
                self.fs.rm_file(probe)
            else:
                self.fs.exists(f"{self.root}/steps/{MANIFEST}")
        except Exception as e:  # noqa: BLE001  (network and auth errors come in many types)
            what = "unauthorised" if _auth_error(e) else "unreachable"
            raise EdgebuildError(KEY, f"the remote cache {self.url} is {what} ({_describe(e)}).",
                                 "check the URL and your credentials (for s3: AWS_ACCESS_KEY_ID/AWS_PROFILE, and "
                                 "FSSPEC_S3_ENDPOINT_URL for a non-AWS server), set build.remote_cache_push=false "
                                 "for read-only access, or unset build.remote_cache to build with the local cache "
                                 "only.") from None

    def _guard(self, fn, what: str):
        """Run a remote operation; on failure, warn once and build locally from here on."""
        if self.down:
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            self.down = True
            log.warning("remote cache %s failed during %s (%s): building locally from here on; nothing is lost",
                        self.url, what, _describe(e))
            return None


# An unreachable remote should cost seconds, not the minute of S3's default retries (a build falls back to local).
FAIL_FAST = {"s3": {"config_kwargs": {"connect_timeout": 5, "read_timeout": 60,
                                      "retries": {"max_attempts": 2, "mode": "standard"}}}}


def _open(url: str):
    import fsspec

    protocol = url.split("://", 1)[0] if "://" in url else "file"
    try:
        fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **FAIL_FAST.get(protocol, {}))
    except ValueError as e:
        known = ", ".join(p for p in ("file", "s3", "gcs", "az", "sftp", "ssh", "memory") if p in fsspec.available_protocols())
        raise EdgebuildError(KEY, f"{url!r} has a scheme fsspec does not know ({e}).",
                             f"use a directory path or a URL of a known filesystem (e.g. {known}).") from None
    except ImportError as e:
        raise EdgebuildError(KEY, f"{url!r} needs a package that is not installed ({e}).",
                             "install it (for s3://: pip install s3fs), or use a shared directory path.") from None
    if protocol in FAIL_FAST and hasattr(fs, "retries"):
        fs.retries = 1  # s3fs' own retry loop, on top of botocore's
    return fs, root.rstrip("/") if root not in ("/", "") else root


def _auth_error(e: Exception) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return isinstance(e, PermissionError) or any(w in text for w in ("accessdenied", "access denied", "forbidden",
                                                                       "invalidaccesskeyid", "signature", "403"))


def _describe(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def attach(cache, cfg) -> None:
    """Give the cache the remote of cfg.build.remote_cache (if set)."""
    url = cfg.build.get("remote_cache") if "build" in cfg else None
    if url:
        if "://" not in str(url):
            url = str(Path(os.path.expanduser(str(url))).resolve())
        cache.remote = Remote(str(url), bool(cfg.build.get("remote_cache_push", True)))
