"""`edgebuild` and `edgebuild-plan`: Hydra entry points.

    edgebuild +recipe=imx95_seg calibration=entropy          build one product
    edgebuild --multirun +recipe=demo target=imx8mp,cpu      sweep; shared steps run once
    edgebuild-plan +recipe=demo                              (or build.plan=true) show the DAG and what is cached
    edgebuild-plan +recipe=demo --explain tflite             one step's inputs and what changed, in full
"""
from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig

from edgebuild.errors import EdgebuildError, GateFailed

CONF = Path(__file__).resolve().parents[1] / "conf"
log = logging.getLogger("edgebuild")


def build(cfg: DictConfig, run_dir: Path | None, recipe: str = "", console=None) -> dict:
    """Validate, plan and run one composed config. Returns a summary; raises EdgebuildError on any user error."""
    from edgebuild import remote, schema
    from edgebuild.cache import Cache, cache_root
    from edgebuild.console import Console
    from edgebuild.resolve import explain, format_plan, make_plan
    from edgebuild.runner import execute, publish_run_dir

    console = console or Console(stream=sys.stdout, tty=False)
    typed = schema.validate(cfg, recipe=recipe)
    cache = Cache(cache_root(typed))
    cache.clean_tmp()
    remote.attach(cache, typed)
    t0 = time.monotonic()
    plan = make_plan(typed, cache)
    if typed.build.explain:
        if typed.build.explain not in plan.names():
            raise EdgebuildError("build.explain", f"{typed.build.explain!r} is not a step of this plan.",
                                 f"use one of: {', '.join(plan.names())}.")
        console.lines(explain(plan, typed.build.explain), always=True)
        return {"plan": plan}
    console.lines(format_plan(plan, list_cold=typed.build.plan), always=typed.build.plan)
    if typed.build.plan:
        return {"plan": plan}
    log_dir = run_dir / "logs" if run_dir is not None else None
    results = execute(plan, cache, typed, isolate=typed.build.isolate, console=console, log_dir=log_dir)
    summary = {
        "recipe": recipe,
        "cache": str(cache.root),
        "seconds": round(time.monotonic() - t0, 3),
        "steps": [{"name": r.name, "key": r.key, "hit": r.hit, "seconds": round(r.seconds, 3), "reason": r.reason,
                   "pulled": r.pulled, "entry": str(r.path)} for r in results.values()],
    }
    if run_dir is not None:
        from edgebuild.report.summary import closing_lines

        run_dir.mkdir(parents=True, exist_ok=True)
        publish_run_dir(results, plan, run_dir)
        (run_dir / "plan.json").write_text(json.dumps(summary, indent=1))
        hits = sum(r.hit for r in results.values())
        console.lines("\n".join(closing_lines(run_dir, plan.context, time.monotonic() - t0, hits, len(results) - hits)))
        gate = _gate(run_dir / "report.json")
        if gate and not gate.get("passed", True):
            raise GateFailed("validation.max_map_drop", gate.get("message", "accuracy gate failed."),
                             "raise validation.max_map_drop, or change calibration/decoder/precision (see report.html).")
    return summary


def _gate(report: Path) -> dict | None:
    try:
        return json.loads(report.read_text()).get("gate")
    except (OSError, ValueError):
        return None


def _task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from edgebuild.console import Console, attach_logging

    hc = HydraConfig.get()
    recipe = hc.runtime.choices.get("recipe") or ""
    verbose = bool(cfg.get("build", {}).get("verbose", False))
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    console = Console(verbose=verbose, quiet=multirun and not verbose)  # a sweep job: one line when it ends
    attach_logging(console)
    t0 = time.monotonic()
    try:
        build(cfg, run_dir, recipe, console)
        if multirun:
            _job_line(console, run_dir, t0, hc)
    except EdgebuildError as e:
        console.end_progress()
        _report_error(e, verbose)
        if multirun and isinstance(e, GateFailed):  # a sweep keeps going; its summary shows the gate
            _job_line(console, run_dir, t0, hc)
        else:
            sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.end_progress()
        print("interrupted: finished steps are cached and nothing partial was kept; run the same command to resume.",
              file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug, not a user error: say so, traceback on request
        console.end_progress()
        if verbose:
            traceback.print_exc()
        print(f"error: internal error ({type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}). "
              "Fix: rerun with build.verbose=true for the traceback and report it.", file=sys.stderr)
        sys.exit(1)
    finally:
        console.close()


def _job_line(console, run_dir: Path, t0: float, hc) -> None:
    from edgebuild.report.summary import job_line

    label = f"{hc.job.num} {hc.job.override_dirname}".strip()
    console.line(job_line(run_dir, time.monotonic() - t0, label), always=True)


def _report_error(e: EdgebuildError, verbose: bool) -> None:
    if verbose:
        traceback.print_exc()
    print(e.paragraph(), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    import hydra

    from edgebuild import preflight

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:
        argv = [a for a in argv if a != "--verbose"] + ["build.verbose=true"]
    if "--explain" in argv:  # edgebuild-plan --explain STEP: that step's inputs and changes in full
        i = argv.index("--explain")
        step = argv[i + 1] if i + 1 < len(argv) else ""
        argv = argv[:i] + argv[i + 2:] + [f"build.explain={step}", "build.plan=true"]
    verbose = "build.verbose=true" in argv
    try:
        preflight.check(argv)
    except EdgebuildError as e:
        _report_error(e, verbose)
        sys.exit(e.exit_code)
    sys.argv = [sys.argv[0]] + argv
    hydra.main(config_path=str(CONF), config_name="config", version_base=None)(_task)()


def plan_main() -> None:
    main(sys.argv[1:] + ["build.plan=true"])


if __name__ == "__main__":
    main()
