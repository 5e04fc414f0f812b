"""`edgebuild` and `edgebuild-plan`: Hydra entry points.

    edgebuild +recipe=imx95_seg calibration=entropy          build one product
    edgebuild --multirun +recipe=demo target=imx8mp,cpu      sweep; shared steps run once
    edgebuild-plan +recipe=demo                              (or build.plan=true) show the DAG and what is cached
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


def build(cfg: DictConfig, run_dir: Path | None, recipe: str = "") -> dict:
    """Validate, plan and run one composed config. Returns a summary; raises EdgebuildError on any user error."""
    from edgebuild import schema
    from edgebuild.cache import Cache, cache_root
    from edgebuild.resolve import format_plan, make_plan
    from edgebuild.runner import execute, publish_run_dir

    typed = schema.validate(cfg, recipe=recipe)
    cache = Cache(cache_root(typed))
    cache.clean_tmp()
    t0 = time.monotonic()
    plan = make_plan(typed, cache)
    print(format_plan(plan), flush=True)
    if typed.build.plan:
        return {"plan": plan}
    results = execute(plan, cache, typed, isolate=typed.build.isolate)
    summary = {
        "recipe": recipe,
        "cache": str(cache.root),
        "seconds": round(time.monotonic() - t0, 3),
        "steps": [{"name": r.name, "key": r.key, "hit": r.hit, "seconds": round(r.seconds, 3), "reason": r.reason,
                   "entry": str(r.path)} for r in results.values()],
    }
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        publish_run_dir(results, plan, run_dir)
        (run_dir / "plan.json").write_text(json.dumps(summary, indent=1))
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

    hc = HydraConfig.get()
    recipe = hc.runtime.choices.get("recipe") or ""
    verbose = bool(cfg.get("build", {}).get("verbose", False))
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        build(cfg, Path(hc.runtime.output_dir), recipe)
    except EdgebuildError as e:
        _report_error(e, verbose)
        if not (multirun and isinstance(e, GateFailed)):  # a sweep keeps going; its summary shows the gate
            sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted: finished steps are cached and nothing partial was kept; run the same command to resume.",
              file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug, not a user error: say so, traceback on request
        if verbose:
            traceback.print_exc()
        print(f"error: internal error ({type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}). "
              "Fix: rerun with build.verbose=true for the traceback and report it.", file=sys.stderr)
        sys.exit(1)


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
