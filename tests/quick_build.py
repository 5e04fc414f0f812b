"""Build recipes with only the steps a test needs, in one process (heavy imports paid once).

    python -m tests.quick_build OUT CACHE STEPS RECIPE [RECIPE ...] -- OVERRIDE ...

STEPS: comma-separated step kinds wanted; their upstream steps are added. Each recipe's run dir is OUT/RECIPE with the
published artifacts and plan.json (as the CLI writes it). The same engine (make_plan, execute, publish_run_dir) as
`edgebuild`; only the step selection and in-process execution differ (torch's stack is imported before TensorFlow's).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> None:
    import torchvision  # noqa: F401  torch before TensorFlow (see tests/conftest.py)
    from hydra import compose, initialize_config_dir

    from edgebuild import schema
    from edgebuild.cache import Cache
    from edgebuild.engine import registry
    from edgebuild.resolve import applicable_kinds, make_plan
    from edgebuild.runner import execute, publish_run_dir

    out, cache_dir, wanted = Path(argv[0]), Path(argv[1]), set(argv[2].split(","))
    sep = argv.index("--") if "--" in argv else len(argv)
    recipes, overrides = argv[3:sep], argv[sep + 1:]
    for recipe in recipes:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
            raw = compose(config_name="config", overrides=[f"+recipe={recipe}", *overrides])
        cfg = schema.validate(raw, recipe=recipe)
        kinds = {k.name: k for k in applicable_kinds(cfg)}
        keep, todo = set(), [w for w in wanted if w in kinds]
        while todo:
            name = todo.pop()
            if name not in keep:
                keep.add(name)
                todo += [u for u in kinds[name].required_upstream() + kinds[name].optional_upstream() if u in kinds]
        cache = Cache(cache_dir)
        plan = make_plan(cfg, cache, {n: kinds[n] for n in keep})
        results = execute(plan, cache, cfg, isolate=False)
        run_dir = out / recipe
        run_dir.mkdir(parents=True, exist_ok=True)
        publish_run_dir(results, plan, run_dir)
        steps = [{"name": r.name, "key": r.key, "hit": r.hit, "seconds": round(r.seconds, 3), "entry": str(r.path)}
                 for r in results.values()]
        (run_dir / "plan.json").write_text(json.dumps({"recipe": recipe, "steps": steps}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
