"""Checks on the command line before Hydra composes anything, so mistakes get one clear paragraph.

Covers: recipe names (unknown, path traversal, YAML syntax), config group choices, unknown keys and `_target_`.
Types and values are checked after composition by schema.validate.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from edgebuild.errors import EdgebuildError
from edgebuild.schema import allowed_keys, schema_field
from hydra_plugins.edgebuild_recipes import recipe_dirs

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "dataset", "target", "calibration", "decoder", "precision", "validation")
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                    "--config-dir", "-cd", "--experimental-rerun"}
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}  # `--info [TOPIC]`
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def override_args(argv: list[str]) -> list[str]:
    out, skip, prev = [], False, None
    for arg in argv:
        if skip:
            skip = False
        elif prev in ("--info", "-i") and arg in INFO_TOPICS:
            pass
        elif arg in FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
        prev = arg
    return out


def check(argv: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = override_args(argv)
    output_key = "hydra.sweep.dir" if {"-m", "--multirun"} & set(argv) else "hydra.run.dir"
    builds = not {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--version"} & set(argv)
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        raise EdgebuildError("command line", f"cannot parse the overrides ({str(e).splitlines()[0]}).",
                             "use key=value, +recipe=NAME, group=a,b for sweeps (see `edgebuild --help`).") from None
    for o in overrides:
        key = o.key_or_group
        if key in ("hydra.run.dir", "hydra.sweep.dir") and not o.is_sweep_override() and not o.is_delete():
            check_output_dir(key, str(o.value()))
            builds = builds and key != output_key  # checked here
        if "_target_" in key:
            raise EdgebuildError(key, "recipes and overrides may not name Python objects to instantiate (_target_).",
                                 "remove the _target_ override; edgebuild only builds the steps it ships.")
        if key.startswith("hydra") or o.is_delete():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        if key == "recipe":
            for v in values:
                find_recipe(str(v))
        elif key in GROUPS:
            for v in values:
                check_group_choice(key, str(v))
        elif schema_field(key) is None:
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            raise EdgebuildError(key, "unknown key.", f"use one of the keys of {parent or 'the top level'}: "
                                 f"{', '.join(allowed_keys(parent)) or '(none)'}; print them with `edgebuild --cfg job`.")
    if builds:  # the default run/sweep dir is outputs/... under the current directory
        check_output_dir(output_key, "outputs/")


def check_output_dir(key: str, value: str) -> None:
    """Hydra creates the run dir before edgebuild runs: refuse one that cannot be created (else a traceback)."""
    import os

    static = value.split("${", 1)[0]  # the part before interpolations such as ${now:...}
    p = Path(static or ".").expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    problem = ("is a regular file, not a directory" if not p.is_dir() else
               "is not writable" if not os.access(p, os.W_OK | os.X_OK) else "")
    if problem:
        raise EdgebuildError(key, f"{value} cannot be created: {p} {problem}.",
                             f"point {key} at a directory you can write, e.g. {key}=/tmp/edgebuild-run.")


def available_recipes() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in recipe_dirs():
        for p in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            found.setdefault(p.stem, p)
    return found


def find_recipe(name: str) -> Path:
    dirs = " and ".join(str(d) for d in recipe_dirs())
    if not NAME.match(name) or ".." in name or "/" in name:
        raise EdgebuildError(f"+recipe={name}", "a recipe is a file name in a recipes/ directory, not a path.",
                             f"use one of: {', '.join(available_recipes())} (looked in {dirs}).")
    recipes = available_recipes()
    if name not in recipes:
        raise EdgebuildError(f"+recipe={name}", f"no recipe named {name!r}.",
                             f"use one of: {', '.join(recipes) or '(none)'} (looked in {dirs}), "
                             f"or add recipes/{name}.yaml in the current directory.")
    try:
        yaml.safe_load(recipes[name].read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{recipes[name]}:{mark.line + 1}" if mark else str(recipes[name])
        raise EdgebuildError(where, f"the recipe is not valid YAML ({getattr(e, 'problem', e)}).",
                             "fix the YAML at that line (indentation, a missing colon or quote).") from None
    return recipes[name]


def check_group_choice(group: str, value: str) -> None:
    choices = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    if value not in choices:
        raise EdgebuildError(group, f"{value!r} is not a {group} choice.", f"use one of: {', '.join(choices)}.")
