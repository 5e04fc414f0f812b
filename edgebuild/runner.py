"""Execute a Plan: each step is looked up in the cache, or built into a temp dir and published atomically."""
from __future__ import annotations

import errno
import logging
import multiprocessing
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from edgebuild.cache import Cache, manifest_digest, no_space
from edgebuild.console import Console, ProgressRelay, QueueSink
from edgebuild.engine import StepContext, registry
from edgebuild.errors import EdgebuildError, StepFailed
from edgebuild.resolve import Plan, PlannedStep, plan_context, settle, slice_config, step_label

log = logging.getLogger("edgebuild")


@dataclass
class StepResult:
    name: str
    key: str
    path: Path
    hit: bool
    seconds: float
    reason: str
    pulled: bool = False     # the hit came from the remote cache


def execute(plan: Plan, cache: Cache, cfg: DictConfig, isolate: bool = True, console: Console | None = None,
            log_dir: Path | None = None) -> dict[str, StepResult]:
    """Run the plan. `console`: where step lines and progress go (default: plain lines on stderr); `log_dir`:
    each built step's own output (third-party logs included) goes to log_dir/<step>.log instead of the console."""
    console = console or Console(stream=sys.stderr, tty=False)
    results: dict[str, StepResult] = {}
    outputs: dict[str, str | None] = {}   # step -> digest of its entry's files: what dependents are keyed by
    total, context = len(plan.steps), plan_context(cfg)
    for i, ps in enumerate(plan.steps, 1):
        t0 = time.monotonic()
        settle(ps, outputs, cache, plan)   # early cutoff: the key from the upstream entries actually used
        if not ps.key:
            raise RuntimeError(f"step {ps.name!r}: an upstream entry has no readable manifest")
        with cache.lock(ps.key):
            path = cache.lookup(ps.name, ps.key)
            pulled = False
            if path is None and cache.remote is not None:  # a verified copy of the shared cache's entry
                path = cache.remote.pull(ps.name, ps.key, cache)
                pulled = path is not None
            hit = path is not None
            if not hit:
                ps.reason = ps.reason or "the cached entry did not verify (corrupt or partial): rebuilt"
                log.info("[%d/%d] %s: building (%s)", i, total, ps.name, ps.reason or "not cached")
                console.status(f"{step_label(i, total)} {ps.name:<15} building...")
                step_log = log_dir / f"{ps.name}.log" if log_dir is not None else None
                path = _build(ps, cache, cfg, results, isolate and ps.kind.isolate, console, step_log)
                if cache.remote is not None:
                    cache.remote.push(ps.name, ps.key, path)
        cache.touch(path)
        outputs[ps.name] = manifest_digest(path)
        cache.remember(ps.name, ps.inputs, context)
        seconds = time.monotonic() - t0
        results[ps.name] = StepResult(ps.name, ps.key, path, hit, seconds, "" if hit else ps.reason, pulled)
        state = "pulled" if pulled else "cached" if hit else "built"
        console.line(f"{step_label(i, total)} {ps.name:<15} {state:<6} {seconds:6.1f}s")
    return results


def _build(ps: PlannedStep, cache: Cache, cfg: DictConfig, done: dict[str, StepResult], isolate: bool,
           console: Console, step_log: Path | None = None) -> Path:
    inputs = {name: done[name].path for name in ps.upstream}
    tmp = cache.new_tmp(ps.name)
    ctx = StepContext(ps.name, slice_config(cfg, ps.kind.config), tmp, inputs, dict(ps.files),
                      progress_sink=console.progress)
    try:
        try:
            with console.capture(step_log):
                if isolate and not _in_daemon_worker():
                    _run_isolated(ps.name, ctx, console)
                else:
                    ps.kind.run(ctx)
        finally:
            console.end_progress()
        for name, up in inputs.items():
            if not cache.verify(up):
                raise RuntimeError(f"step {ps.name!r} modified its input {name!r} at {up}; steps must treat inputs as read-only")
        return cache.publish(ps.name, ps.key, tmp, ps.inputs)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise no_space(cache.root, ps.name) from None
        raise step_failed(ps.name, e, step_log) from e
    except (EdgebuildError, KeyboardInterrupt, SystemExit):
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise step_failed(ps.name, e, step_log) from e


NOISE = re.compile(r"cuInit|cuda drivers|absl::InitializeLog|oneDNN|cpu_feature_guard|XNNPACK delegate|"
                   r"experimental_preserve_all_tensors|TF_ENABLE_ONEDNN_OPTS|rebuild TensorFlow", re.I)
RELEVANT = re.compile(r"error|exception|failed|fatal|abort|killed|not supported|invalid", re.I)


def relevant_lines(text: str, n: int = 6) -> list[str]:
    """The last `n` lines of a log or traceback that look like the error (known startup noise left out); else the
    last `n` non-empty lines."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip() and not NOISE.search(ln)]
    hits = [ln for ln in lines if RELEVANT.search(ln) and not ln.lstrip().startswith("File ")]
    return (hits or lines)[-n:]


def step_failed(name: str, e: BaseException, step_log: Path | None) -> StepFailed:
    """The error for a crashed step: which step, its log, and the last lines of the underlying error."""
    detail = str(e).strip()
    summary = detail.splitlines()[-1] if detail else ""
    logged = ""
    if step_log is not None and step_log.is_file():
        logged = step_log.read_text(errors="replace")[-200_000:]
    lines = relevant_lines(logged + "\n" + detail)
    shown = "".join(f"\n  | {ln[:200]}" for ln in lines)
    where = f"step {name!r}" + (f" (its output: {step_log})" if step_log is not None else "")
    fix = (f"read {step_log} for the full output; " if step_log is not None else "") + \
        "rerun with build.verbose=true to see it live, and report it if the inputs are valid."
    return StepFailed(where, f"failed with {type(e).__name__}: {summary[:300]}. Last relevant lines:{shown}\n", fix)


def _in_daemon_worker() -> bool:
    """Daemonic processes (some sweep launchers' workers) may not start children: run in-process there."""
    return multiprocessing.current_process().daemon


def _run_isolated(name: str, ctx: StepContext, console: Console) -> None:
    """Run the step in a fresh spawned process so heavy frameworks (torch, TensorFlow) never share one. The child
    inherits fds 1/2 (the step's log while the console captures); its progress comes back through a queue."""
    payload = (name, OmegaConf.to_container(ctx.cfg), str(ctx.out), {k: str(v) for k, v in ctx.inputs.items()},
               ctx.files)
    # A spawned child re-applies the parent's default start method; inside joblib's loky workers that is "loky",
    # which a plain spawned interpreter does not know (it dies before running the step): use "spawn" meanwhile.
    method = multiprocessing.get_start_method(allow_none=True)
    foreign = method not in (None, "spawn", "fork", "forkserver")
    if foreign:
        multiprocessing.set_start_method("spawn", force=True)
    mp = multiprocessing.get_context("spawn")
    try:
        with ProgressRelay(mp, console.progress) as relay:
            pool = ProcessPoolExecutor(max_workers=1, mp_context=mp, initializer=_child_init,
                                       initargs=(relay.queue,))
            try:
                pool.submit(_child, payload).result()
            except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; only this process handles it
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if foreign:
            multiprocessing.set_start_method(method, force=True)


_CHILD_SINK: QueueSink | None = None  # set once per child process by _child_init


def _child_init(queue) -> None:
    """In the step's child: a terminal's Ctrl-C would otherwise land anywhere in the step (TensorFlow prints
    "Exception ignored ... KeyboardInterrupt" tracebacks from finalizers and carries on); the parent stops it.
    Progress and edgebuild's warnings go to the parent through `queue`."""
    import signal

    global _CHILD_SINK
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _CHILD_SINK = QueueSink(queue)
    logging.getLogger("edgebuild").addHandler(_CHILD_SINK.handler())


def _child(payload) -> None:
    name, cfg, out, inputs, files = payload
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    sub = OmegaConf.create(cfg)
    OmegaConf.set_readonly(sub, True)
    ctx = StepContext(name, sub, Path(out), {k: Path(v) for k, v in inputs.items()}, files, progress_sink=_CHILD_SINK)
    try:
        registry()[name].run(ctx)
    except EdgebuildError:
        raise
    except Exception as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:  # the cache disk filled up: a user error, not a crash
            raise no_space(Path(out).parents[1], name) from None
        import traceback  # keep the remote traceback readable in the parent (and in the step's log)

        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        raise RuntimeError(f"step {name!r} failed:\n{text}") from e
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


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
