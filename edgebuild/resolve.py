"""Typed config -> Plan: the DAG of steps that apply, each with its exact inputs and cache key."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from edgebuild.cache import Cache
from edgebuild.digest import DigestMemo, json_sha256
from edgebuild.engine import StepKind, registry


@dataclass
class PlannedStep:
    kind: StepKind
    key: str
    inputs: dict[str, Any]               # the document hashed into the key
    upstream: dict[str, str]             # upstream name -> its key
    files: dict[str, Any]                # declared input files (Path or list[Path])
    cached: bool = False
    reason: str = ""

    @property
    def name(self) -> str:
        return self.kind.name


@dataclass
class Plan:
    steps: list[PlannedStep] = field(default_factory=list)

    def __getitem__(self, name: str) -> PlannedStep:
        return next(s for s in self.steps if s.name == name)

    def names(self) -> list[str]:
        return [s.name for s in self.steps]


def config_slice(cfg: DictConfig, keys: tuple[str, ...]) -> dict:
    """{dotted key: plain value} for the declared keys."""
    out = {}
    for key in keys:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def slice_config(cfg: DictConfig, keys: tuple[str, ...]) -> DictConfig:
    """A read-only config holding only the declared keys, nested as in the full config."""
    sub = OmegaConf.create({})
    for key, value in config_slice(cfg, keys).items():
        OmegaConf.update(sub, key, value, force_add=True)
    OmegaConf.set_readonly(sub, True)
    return sub


def digest_files(files: dict[str, Any], memo: DigestMemo | None = None) -> dict[str, str]:
    """Single files are keyed by content only (moving weights does not rebuild); file lists by path + content."""
    sha = (memo or DigestMemo()).sha256
    out = {}
    for name, value in sorted(files.items()):
        if isinstance(value, (list, tuple)):
            out[name] = json_sha256([[str(p), sha(Path(p))] for p in value])
        else:
            out[name] = sha(Path(value))
    return out


def applicable_kinds(cfg: DictConfig, kinds: dict[str, StepKind] | None = None) -> list[StepKind]:
    kinds = {k.name: k for k in (kinds or registry()).values() if k.applies is None or k.applies(cfg)}
    ordered, seen = [], set()

    def visit(kind: StepKind, chain: tuple[str, ...]) -> None:
        if kind.name in seen:
            return
        if kind.name in chain:
            raise ValueError(f"step dependency cycle: {' -> '.join(chain + (kind.name,))}")
        for up in kind.required_upstream():
            if up not in kinds:
                raise ValueError(f"step {kind.name!r} needs {up!r}, which does not apply to this config")
            visit(kinds[up], chain + (kind.name,))
        for up in kind.optional_upstream():
            if up in kinds:
                visit(kinds[up], chain + (kind.name,))
        seen.add(kind.name)
        ordered.append(kind)

    for kind in sorted(kinds.values(), key=lambda k: k.name):
        visit(kind, ())
    return ordered


def make_plan(cfg: DictConfig, cache: Cache | None = None, kinds: dict[str, StepKind] | None = None) -> Plan:
    """Run every step's precheck, compute keys in dependency order, and mark what the cache already has.

    `kinds` restricts planning to those step kinds (tests); default: every registered kind."""
    kinds = applicable_kinds(cfg, kinds)
    for kind in kinds:
        if kind.precheck:
            kind.precheck(cfg)
    plan, keys = Plan(), {}
    memo = DigestMemo(cache.root / "digests.json" if cache is not None else None)
    for kind in kinds:
        ups = [u for u in kind.required_upstream()] + [u for u in kind.optional_upstream() if u in keys]
        upstream = {u: keys[u] for u in ups}
        files = kind.files(cfg) if kind.files else {}
        inputs = {
            "kind": kind.name,
            "version": kind.version,
            "config": config_slice(cfg, kind.config),
            "upstream": upstream,
            "files": digest_files(files, memo),
            "environment": kind.environment(cfg) if kind.environment else {},
        }
        key = json_sha256(inputs)
        keys[kind.name] = key
        step = PlannedStep(kind, key, inputs, upstream, files)
        if cache is not None:
            step.cached = cache.peek(kind.name, key)
            step.reason = "" if step.cached else why_rebuild(inputs, cache.last_inputs(kind.name))
        plan.steps.append(step)
    memo.save()
    return plan


def why_rebuild(now: dict, before: dict | None) -> str:
    """Which declared input differs from the last build of this step kind."""
    if before is None:
        return "never built in this cache"
    changes = []
    if now["version"] != before.get("version"):
        changes.append(f"step version {before.get('version')} -> {now['version']}")
    for key in sorted(set(now["config"]) | set(before.get("config", {}))):
        if now["config"].get(key) != before.get("config", {}).get(key):
            changes.append(f"{key}: {before.get('config', {}).get(key)!r} -> {now['config'].get(key)!r}")
    for up in sorted(set(now["upstream"]) | set(before.get("upstream", {}))):
        if now["upstream"].get(up) != before.get("upstream", {}).get(up):
            changes.append(f"upstream {up} changed")
    for name in sorted(set(now["files"]) | set(before.get("files", {}))):
        if now["files"].get(name) != before.get("files", {}).get(name):
            changes.append(f"file(s) {name} changed")
    if now["environment"] != before.get("environment", {}):
        changes.append("environment changed")
    return "; ".join(changes) or "entry missing or evicted"


def format_plan(plan: Plan) -> str:
    lines = ["edgebuild plan:"]
    for i, s in enumerate(plan.steps, 1):
        state = "cached" if s.cached else f"build  ({s.reason})"
        deps = ", ".join(s.upstream) or "-"
        lines.append(f"  [{i}/{len(plan.steps)}] {s.name:<15} {s.key[:12]}  <- {deps:<40} {state}")
    return "\n".join(lines)
