"""Remote cache (build.remote_cache) against a real S3-compatible server (moto's standalone server, started here on
127.0.0.1) and against a shared directory, with each "machine" a separate process with its own local cache."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests import enginekit
from tests.cli import error_paragraph, run

pytest.importorskip("s3fs")
pytest.importorskip("moto")
ROOT = Path(__file__).resolve().parents[1]
KIT = Path(enginekit.__file__)
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's standalone S3 server in its own process."""

    def __init__(self, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto server did not start")

    def env(self) -> dict:
        return dict(CREDS, FSSPEC_S3_ENDPOINT_URL=self.url)

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=self.url, skip_instance_cache=True)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    server.fs().mkdir("team")
    yield server
    server.stop()


@pytest.fixture()
def weights(tmp_path) -> Path:
    p = tmp_path / "w.bin"
    p.write_text("weights-v1")
    return p


def machine(cache: Path, weights: Path, env: dict, *overrides: str) -> tuple[dict[str, str], str]:
    """One build in its own process with its own local cache: {step: built|hit|pulled}, stderr."""
    proc = subprocess.run([sys.executable, str(KIT), str(cache), str(weights), *overrides], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT), **env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(item.split(":") for item in proc.stdout.split()), proc.stderr


def entry_files(cache: Path) -> dict[str, bytes]:
    return {f"{p.parent.parent.name}/{p.name}": p.read_bytes() for p in sorted(cache.glob("steps/*/*/*.txt")) +
            sorted(cache.glob("steps/*/*/*.json")) + sorted(cache.glob("steps/*/*/*.bin")) if p.name != "MANIFEST.json"}


def test_second_machine_pulls_everything_byte_identical(s3, tmp_path, weights):
    remote = f"build.remote_cache=s3://team/{uuid.uuid4().hex[:8]}"
    first, _ = machine(tmp_path / "a", weights, s3.env(), remote)
    assert set(first.values()) == {"built"}
    second, _ = machine(tmp_path / "b", weights, s3.env(), remote)
    assert set(second.values()) == {"pulled"}, second
    assert entry_files(tmp_path / "a") == entry_files(tmp_path / "b") != {}
    third, _ = machine(tmp_path / "b", weights, s3.env(), remote)
    assert set(third.values()) == {"hit"}, "pulled entries are local from then on"


def test_tampered_remote_entry_is_rebuilt_said_and_repaired(s3, tmp_path, weights):
    prefix = f"team/{uuid.uuid4().hex[:8]}"
    remote = f"build.remote_cache=s3://{prefix}"
    machine(tmp_path / "a", weights, s3.env(), remote)
    fs = s3.fs()
    manifest = next(p for p in fs.find(f"{prefix}/steps/t_slow") if p.endswith("MANIFEST.json"))
    import json

    sha = json.loads(fs.cat_file(manifest))["files"]["b.txt"]
    fs.pipe_file(f"{prefix}/blobs/{sha[:2]}/{sha}", b"tampered")
    states, err = machine(tmp_path / "b", weights, s3.env(), remote)
    assert states["t_source"] == "pulled" and states["t_slow"] == "built", states
    assert "t_slow" in err and "does not match its manifest" in err, err
    again, _ = machine(tmp_path / "c", weights, s3.env(), remote)
    assert set(again.values()) == {"pulled"}, f"the rebuilt entry replaced the bad one: {again}"


def test_concurrent_pushers_of_the_same_keys_are_harmless(s3, tmp_path, weights):
    remote = f"build.remote_cache=s3://team/{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), ENGINEKIT_SLOW_STEPS="30", **s3.env())
    procs = [subprocess.Popen([sys.executable, str(KIT), str(tmp_path / host), str(weights), remote], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for host in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    states, err = machine(tmp_path / "c", weights, s3.env(), remote)
    assert set(states.values()) == {"pulled"} and "does not match" not in err, (states, err)


def test_read_only_remote_pushes_nothing(s3, tmp_path, weights):
    prefix = f"team/{uuid.uuid4().hex[:8]}"
    states, _ = machine(tmp_path / "a", weights, s3.env(), f"build.remote_cache=s3://{prefix}",
                        "build.remote_cache_push=false")
    assert set(states.values()) == {"built"}
    assert not s3.fs().exists(f"{prefix}/steps")


def test_shared_directory_as_remote(tmp_path, weights):
    remote = f"build.remote_cache={tmp_path / 'shared'}"
    machine(tmp_path / "a", weights, {}, remote)
    states, _ = machine(tmp_path / "b", weights, {}, remote)
    assert set(states.values()) == {"pulled"}
    assert not list((tmp_path / "shared" / "tmp").iterdir()), "no upload left half-done"


def test_remote_that_disappears_mid_build_falls_back_to_local(tmp_path, weights, caplog, monkeypatch):
    import fsspec

    from edgebuild.cache import Cache
    from edgebuild.remote import attach
    from edgebuild.resolve import make_plan
    from edgebuild.runner import execute

    server = S3Server()
    try:
        server.fs().mkdir("gone")
        for k, v in CREDS.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": server.url})
        cfg = enginekit.config("build.remote_cache=s3://gone/x")
        cache = Cache(tmp_path / "c")
        attach(cache, cfg)  # reachable at start
        plan = make_plan(cfg, cache, enginekit.kinds(weights))
    finally:
        server.stop()
    with caplog.at_level(logging.WARNING, logger="edgebuild"):
        results = execute(plan, cache, cfg, isolate=False)
    assert [r.hit for r in results.values()] == [False, False, False]
    warnings = [r.getMessage() for r in caplog.records if "building locally" in r.getMessage()]
    assert len(warnings) == 1 and "s3://gone/x" in warnings[0], caplog.text
    assert all(Cache.verify(r.path) for r in results.values())


@pytest.mark.parametrize("url, phrase", [("foo://bucket/x", "scheme"), ("s3://team/x", "unreachable"),
                                         ("s3://team/x", "unauthorised")])
def test_bad_remote_gives_one_error_paragraph(url, phrase, tmp_path):
    env = dict(CREDS, FSSPEC_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    server = S3Server(INITIAL_NO_AUTH_ACTION_COUNT="0") if phrase == "unauthorised" else None
    try:
        if server:
            env["FSSPEC_S3_ENDPOINT_URL"] = server.url
        proc = run("+recipe=demo", f"build.remote_cache={url}", "build.plan=true", cache=tmp_path / "c", env=env,
                   timeout=120)
    finally:
        if server:
            server.stop()
    assert proc.returncode == 2
    line = error_paragraph(proc)
    assert line.startswith("error: build.remote_cache:") and phrase in line and "Fix:" in line, line
