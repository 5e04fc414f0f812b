"""Execute a Plan: each step is looked up in the cache, or built into a temp dir and published atomically."""
from __future__ import annotations

import errno
import logging
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from edgebuild.cache import Cache, no_space
from edgebuild.engine import StepContext, registry
from edgebuild.errors import EdgebuildError
from edgebuild.resolve import Plan, PlannedStep, slice_config

log = logging.getLogger("edgebuild")


@dataclass
class StepResult:
    name: str
    key: str
    path: Path
    hit: bool
    seconds: float
    reason: str


def execute(plan: Plan, cache: Cache, cfg: DictConfig, isolate: bool = True) -> dict[str, StepResult]:
    results: dict[str, StepResult] = {}
    total = len(plan.steps)
    for i, ps in enumerate(plan.steps, 1):
        t0 = time.monotonic()
        with cache.lock(ps.key):
            path = cache.lookup(ps.name, ps.key)
            hit = path is not None
            if not hit:
                log.info("[%d/%d] %s: building (%s)", i, total, ps.name, ps.reason or "not cached")
                path = _build(ps, cache, cfg, results, isolate and ps.kind.isolate)
        cache.remember(ps.name, ps.inputs)
        seconds = time.monotonic() - t0
        results[ps.name] = StepResult(ps.name, ps.key, path, hit, seconds, "" if hit else ps.reason)
        log.info("[%d/%d] %s: %s in %.1fs", i, total, ps.name, "cached" if hit else "built", seconds)
    return results


def _build(ps: PlannedStep, cache: Cache, cfg: DictConfig, done: dict[str, StepResult], isolate: bool) -> Path:
    inputs = {name: done[name].path for name in ps.upstream}
    tmp = cache.new_tmp(ps.name)
    ctx = StepContext(ps.name, slice_config(cfg, ps.kind.config), tmp, inputs, dict(ps.files))
    try:
        if isolate and not _in_daemon_worker():
            _run_isolated(ps.name, ctx)
        else:
            ps.kind.run(ctx)
        for name, up in inputs.items():
            if not cache.verify(up):
                raise RuntimeError(f"step {ps.name!r} modified its input {name!r} at {up}; steps must treat inputs as read-only")
        return cache.publish(ps.name, ps.key, tmp, ps.inputs)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise no_space(cache.root, ps.name) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _in_daemon_worker() -> bool:
    """Daemonic processes (some sweep launchers' workers) may not start children: run in-process there."""
    return multiprocessing.current_process().daemon


def _run_isolated(name: str, ctx: StepContext) -> None:
    """Run the step in a fresh spawned process so heavy frameworks (torch, TensorFlow) never share one."""
    payload = (name, OmegaConf.to_container(ctx.cfg), str(ctx.out), {k: str(v) for k, v in ctx.inputs.items()},
               ctx.files)
    # A spawned child re-applies the parent's default start method; inside joblib's loky workers that is "loky",
    # which a plain spawned interpreter does not know (it dies before running the step): use "spawn" meanwhile.
    method = multiprocessing.get_start_method(allow_none=True)
    foreign = method not in (None, "spawn", "fork", "forkserver")
    if foreign:
        multiprocessing.set_start_method("spawn", force=True)
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_sigint)
    try:
        pool.submit(_child, payload).result()
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; only this process handles it
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if foreign:
            multiprocessing.set_start_method(method, force=True)


def _ignore_sigint() -> None:
    """In the step's child: a terminal's Ctrl-C would otherwise land anywhere in the step (TensorFlow prints
    "Exception ignored ... KeyboardInterrupt" tracebacks from finalizers and carries on); the parent stops it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _child(payload) -> None:
    name, cfg, out, inputs, files = payload
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    sub = OmegaConf.create(cfg)
    OmegaConf.set_readonly(sub, True)
    ctx = StepContext(name, sub, Path(out), {k: Path(v) for k, v in inputs.items()}, files)
    try:
        registry()[name].run(ctx)
    except EdgebuildError:
        raise
    except Exception as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:  # the cache disk filled up: a user error, not a crash
            raise no_space(Path(out).parents[1], name) from None
        import traceback  # keep the remote traceback readable in the parent

        raise RuntimeError(f"step {name!r} failed:\n{traceback.format_exc()}") from e


TOP_LEVEL = ("deploy", "deploy.tar.gz")   # besides report.*: what a user picks up first goes at the top


def publish_run_dir(results: dict[str, StepResult], plan: Plan, run_dir: Path) -> list[Path]:
    """Copy each step's declared artifacts into the run dir (report.* and the deploy bundle at the top, the rest
    under artifacts/). A directory artifact is copied whole under a .partial name, then renamed into place."""
    copied = []
    for ps in plan.steps:
        for name in ps.kind.artifacts:
            src = results[ps.name].path / name
            top = name.startswith("report.") or name in TOP_LEVEL
            dest = run_dir / name if top else run_dir / "artifacts" / name
            partial = dest.with_name(dest.name + ".partial")
            if src.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(src, partial)
                shutil.rmtree(dest, ignore_errors=True)
            elif src.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, partial)
            else:
                continue
            partial.replace(dest)
            copied.append(dest)
    return copied
