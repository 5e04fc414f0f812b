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
    key: str                             # "" while an upstream is still to be built (see settle)
    inputs: dict[str, Any]               # the document hashed into the key
    upstream: dict[str, str | None]      # upstream name -> digest of its output (None until it is built)
    files: dict[str, Any]                # declared input files (Path or list[Path])
    cached: bool = False
    reason: str = ""                     # one short line: why it re-runs (empty when cached)
    changes: list["Change"] = field(default_factory=list)   # in full, for `edgebuild-plan --explain STEP`

    @property
    def name(self) -> str:
        return self.kind.name


@dataclass
class Plan:
    steps: list[PlannedStep] = field(default_factory=list)
    context: str = ""                    # "RECIPE on TARGET": whose previous builds the reasons compare with

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
            out[name] = json_sha256([[str(p), sha(p)] for p in value])
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

    Early cutoff (as in Shake and Bazel): a step's key covers its upstream steps' *outputs* (the digest of their
    manifests), not their input keys. So a step below one that must re-run has no key yet (`pending`): the runner
    settles it once the upstream is built, and if that upstream produced byte-identical files, the dependent is
    a cache hit. `kinds` restricts planning to those step kinds (tests); default: every registered kind."""
    kinds = applicable_kinds(cfg, kinds)
    for kind in kinds:
        if kind.precheck:
            kind.precheck(cfg)
    plan, outputs = Plan(context=plan_context(cfg)), {}
    memo = DigestMemo(cache.root / "digests.json" if cache is not None else None)
    for kind in kinds:
        ups = [u for u in kind.required_upstream()] + [u for u in kind.optional_upstream() if u in outputs]
        files = kind.files(cfg) if kind.files else {}
        inputs = {
            "kind": kind.name,
            "version": kind.version,
            "config": config_slice(cfg, kind.config),
            "upstream": {u: None for u in ups},
            "files": digest_files(files, memo),
            "environment": kind.environment(cfg) if kind.environment else {},
        }
        step = PlannedStep(kind, "", inputs, dict(inputs["upstream"]), files)
        plan.steps.append(step)
        outputs[kind.name] = settle(step, outputs, cache, plan)
    memo.save()
    return plan


def settle(step: PlannedStep, outputs: dict[str, str | None], cache: Cache | None, plan: Plan) -> str | None:
    """Key the step from its upstream outputs (`outputs`: name -> output digest, None while not built), mark it
    cached or say why it builds. Returns its own output digest when it is cached, else None (pending)."""
    ups = list(step.inputs["upstream"])
    step.upstream = {u: outputs[u] for u in ups}
    step.inputs["upstream"] = dict(step.upstream)
    waiting = sorted((u for u in ups if outputs[u] is None),  # those that changed themselves first
                     key=lambda u: not (u in plan.names() and plan[u].changes))
    before = cache.last_inputs(step.name, plan.context) if cache is not None else None
    if waiting:  # settled by the runner once those are built
        step.key, step.cached = "", False
        step.changes = [c for c in changes(step.inputs, before) if not (c.what == "upstream" and c.name in waiting)]
        if before is None:
            step.reason = why_rebuild([], False, waiting, plan.context, step.name)
            return None
        if step.changes:  # it re-runs whatever its upstream produces
            step.reason = why_rebuild(step.changes, True, [], plan.context, step.name)
        else:
            step.reason = "upstream " + ", ".join(waiting[:2]) + (
                " re-runs (reused if its output is unchanged)" if len(waiting) == 1 else " re-run (reused if unchanged)")
        return None
    step.key = json_sha256(step.inputs)
    if cache is None:
        return None
    step.cached = cache.peek(step.name, step.key)
    if step.cached:
        step.reason, step.changes = "", []
        return cache.output_digest(step.name, step.key)
    step.changes = changes(step.inputs, before)
    rebuilt = [u for u in ups if u in plan.names() and not plan[u].cached]
    step.reason = why_rebuild(step.changes, before is not None, rebuilt, plan.context, step.name)
    return None


def plan_context(cfg: DictConfig) -> str:
    """Whose previous builds a plan compares with: the recipe on its target."""
    recipe = OmegaConf.select(cfg, "recipe", default="") or "(no recipe)"
    return f"{recipe} on {OmegaConf.select(cfg, 'target.name', default='?')}"


@dataclass
class Change:
    """One input that differs from the previous build of the same recipe and target."""
    what: str            # "config" | "version" | "upstream" | "files" | "environment"
    name: str
    before: Any = None
    after: Any = None

    def short(self) -> str:
        if self.what == "config" and _is_collection(self.before, self.after):
            return f"{self.name} changed ({_size(self.before)} → {_size(self.after)} entries)"
        if self.what == "config":
            return f"{self.name}: {_short(self.before)} → {_short(self.after)}"
        if self.what == "version":
            return f"step version {self.before} → {self.after}"
        if self.what == "upstream":
            return f"upstream {self.name} changed"
        if self.what == "files":
            return f"input files {self.name!r} changed"
        keys = sorted(k for k in set(self.before or {}) | set(self.after or {})
                      if (self.before or {}).get(k) != (self.after or {}).get(k))
        return "environment changed (" + ", ".join(
            f"{k}: {_short((self.before or {}).get(k))} → {_short((self.after or {}).get(k))}" for k in keys[:2]) + ")"

    def full(self) -> str:
        import json

        dump = lambda v: json.dumps(v, sort_keys=True, default=str)  # noqa: E731
        return f"{self.what} {self.name}:\n      before: {dump(self.before)}\n      now:    {dump(self.after)}"


def _is_collection(*values) -> bool:
    return any(isinstance(v, (list, tuple, dict)) for v in values)


def _size(v) -> str:
    return str(len(v)) if isinstance(v, (list, tuple, dict)) else _short(v)


def _short(v: Any, width: int = 32) -> str:
    return _clip(repr(v), width)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def changes(now: dict, before: dict | None) -> list[Change]:
    """Every declared input that differs from `before` (the previous build of the same recipe and target)."""
    if before is None:
        return []
    out = []
    if now["version"] != before.get("version"):
        out.append(Change("version", "version", before.get("version"), now["version"]))
    for what in ("config", "upstream", "files"):
        a, b = before.get(what, {}), now[what]
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(Change(what, key, a.get(key), b.get(key)))
    if now["environment"] != before.get("environment", {}):
        out.append(Change("environment", "environment", before.get("environment", {}), now["environment"]))
    return out


MAX_REASON = 120  # characters of a plan line's reason; `edgebuild-plan --explain STEP` has it in full


def why_rebuild(found: list[Change], had_previous: bool, rebuilt_upstream: list[str], context: str,
                step: str) -> str:
    """One short, true line: what changed since this recipe's previous build on this target, else what is
    not in the cache."""
    if had_previous:
        if not found:
            return "entry missing or evicted from the cache"
        parts = [c.short() for c in found]
        reason = "; ".join(parts)
        if len(reason) <= MAX_REASON:
            return reason
        for n in range(len(parts) - 1, 0, -1):  # as many whole changes as fit, then a pointer to the rest
            more = f" (+{len(parts) - n} more: --explain {step})"
            if len("; ".join(parts[:n])) + len(more) <= MAX_REASON:
                return "; ".join(parts[:n]) + more
        more = f" (+{len(parts) - 1} more: --explain {step})" if len(parts) > 1 else ""
        return _clip(parts[0], MAX_REASON - len(more)) + more
    if rebuilt_upstream:
        return "not in cache: upstream " + ", ".join(rebuilt_upstream[:2]) + \
            (" re-run" if len(rebuilt_upstream) > 1 else " re-runs")
    return f"not in cache: no earlier build of {context} here"


MAX_LINE = 160


def format_plan(plan: Plan, *, list_cold: bool = True) -> str:
    """One line per step (at most MAX_LINE characters): cached, or built and why. A cold build (nothing cached,
    nothing built before here) is one line unless `list_cold`: each step's result line follows anyway."""
    n = len(plan.steps)
    head = f"plan ({plan.context}): {sum(s.cached for s in plan.steps)} of {n} steps cached"
    if not list_cold and all(not s.cached and s.reason.startswith("not in cache") for s in plan.steps):
        return f"{head}: a cold build of all {n} (build.plan=true lists them)"
    lines = [head]
    for i, s in enumerate(plan.steps, 1):
        state = "cached" if s.cached else f"build   {s.reason}"
        line = f"  {step_label(i, n)} {s.name:<15} {state}"
        lines.append(_clip(line, MAX_LINE))
    return "\n".join(lines)


def step_label(i: int, n: int) -> str:
    """"[3/10] " padded to one width, so the step names line up."""
    return f"[{i}/{n}]".ljust(len(f"[{n}/{n}]"))


def explain(plan: Plan, name: str) -> str:
    """Everything about one planned step: key, upstream, config slice, and each change in full."""
    import json

    s = plan[name]
    ups = ", ".join(f"{u} {k[:12] if k else 'to be built'}" for u, k in s.upstream.items())
    out = [f"step {name} ({plan.context}): {'cached' if s.cached else 'builds'}",
           f"  key: {s.key or 'settled when its upstream is built (early cutoff)'}",
           f"  upstream outputs: {ups or '-'}",
           f"  reason: {s.reason or '-'}", "  config:"]
    out += [f"    {k}: {json.dumps(v, default=str)}" for k, v in s.inputs["config"].items()]
    if s.inputs["environment"]:
        out.append(f"  environment: {json.dumps(s.inputs['environment'], default=str)}")
    out.append("  changed since the previous build of this recipe and target:" if s.changes else
               "  changes: none recorded (cached, or no previous build of this recipe and target)")
    out += [f"    {c.full()}" for c in s.changes]
    return "\n".join(out)
