"""Test-only step kinds for exercising the engine (real engine, real cache; the steps themselves are tiny).

Run as a script to build once in a separate process:  python tests/enginekit.py CACHE_DIR COUNTER_FILE [key=value ...]
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgebuild.engine import StepContext, StepKind  # noqa: E402


def _count(ctx: StepContext) -> None:
    counter = os.environ.get("ENGINEKIT_COUNTER")
    if counter:
        with open(counter, "a") as f:
            f.write(f"{ctx.name} {os.getpid()}\n")


def source(ctx: StepContext) -> None:
    _count(ctx)
    (ctx.out / "a.txt").write_text(f"a={ctx.cfg.model.imgsz} weights={Path(ctx.files['weights']).read_text()}")


def slow(ctx: StepContext) -> None:
    _count(ctx)
    (ctx.out / "started").write_text("1")
    marker = os.environ.get("ENGINEKIT_STARTED")
    if marker:
        Path(marker).write_text(str(os.getpid()))
    with open(ctx.out / "big.bin", "wb") as f:
        for _ in range(int(os.environ.get("ENGINEKIT_SLOW_STEPS", "1"))):
            f.write(os.urandom(1024))
            f.flush()
            time.sleep(float(os.environ.get("ENGINEKIT_SLOW_SLEEP", "0.01")))
    (ctx.out / "b.txt").write_text((ctx.inputs["t_source"] / "a.txt").read_text() + f" method={ctx.cfg.calibration.method}")


def sink(ctx: StepContext) -> None:
    _count(ctx)
    text = (ctx.inputs["t_slow"] / "b.txt").read_text()
    (ctx.out / "report.json").write_text('{"text": "%s", "drop": %s}' % (text, ctx.cfg.validation.max_map_drop))


def kinds(weights: Path) -> dict[str, StepKind]:
    return {
        # model.opset is an input of t_source that does not change its output (early cutoff tests)
        "t_source": StepKind("t_source", 1, source, config=("model.imgsz", "model.opset"),
                             files=lambda cfg: {"weights": weights}),
        "t_slow": StepKind("t_slow", 1, slow, config=("calibration.method",), upstream=("t_source",)),
        "t_sink": StepKind("t_sink", 1, sink, config=("validation.max_map_drop",), upstream=("t_slow",),
                           artifacts=("report.json",)),
    }


def config(*overrides: str):
    from edgebuild import schema

    return schema.validate(OmegaConf.from_dotlist(list(overrides)))


def build(cache_dir: Path, weights: Path, *overrides: str):
    from edgebuild.cache import Cache
    from edgebuild.resolve import make_plan
    from edgebuild.runner import execute

    from edgebuild.remote import attach

    cfg = config(*overrides)
    cache = Cache(cache_dir)
    attach(cache, cfg)
    plan = make_plan(cfg, cache, kinds(weights))
    return plan, execute(plan, cache, cfg, isolate=False)


if __name__ == "__main__":
    cache_dir, weights, *rest = sys.argv[1:]
    _, results = build(Path(cache_dir), Path(weights), *rest)
    print(" ".join(f"{r.name}:{'pulled' if r.pulled else 'hit' if r.hit else 'built'}" for r in results.values()))
