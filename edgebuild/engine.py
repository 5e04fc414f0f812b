"""Step kinds and the registry they register into.

A step is a pure function of its declared inputs:

    @step("export", version=1, config=("model.task", "model.imgsz"), upstream=("calibset",),
          files=lambda cfg: {"weights": Path(cfg.model.weights)}, artifacts=("model.onnx",))
    def export(ctx: StepContext) -> None:
        ctx.cfg.model.imgsz          # only the declared config keys are visible
        ctx.files["weights"]         # declared input files (their digests are part of the key)
        ctx.inputs["calibset"]       # upstream output directory (read-only)
        (ctx.out / "model.onnx").write_bytes(...)   # outputs go here, published atomically

Upstream names starting with "?" are optional: used when that step is in the plan, ignored otherwise.
Step modules live in `edgebuild.steps` and are discovered automatically.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

FilesFn = Callable[[DictConfig], dict[str, "Path | list[Path]"]]


@dataclass(frozen=True)
class StepKind:
    name: str
    version: int
    run: Callable[["StepContext"], Any]
    config: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()
    files: FilesFn | None = None
    applies: Callable[[DictConfig], bool] | None = None
    artifacts: tuple[str, ...] = ()
    precheck: Callable[[DictConfig], None] | None = None
    environment: Callable[[DictConfig], dict] | None = None
    isolate: bool = False

    def required_upstream(self) -> tuple[str, ...]:
        return tuple(u for u in self.upstream if not u.startswith("?"))

    def optional_upstream(self) -> tuple[str, ...]:
        return tuple(u[1:] for u in self.upstream if u.startswith("?"))


_REGISTRY: dict[str, StepKind] = {}


def step(name: str, *, version: int, config: tuple[str, ...] = (), upstream: tuple[str, ...] = (),
         files: FilesFn | None = None, applies: Callable[[DictConfig], bool] | None = None,
         artifacts: tuple[str, ...] = (), precheck: Callable[[DictConfig], None] | None = None,
         environment: Callable[[DictConfig], dict] | None = None, isolate: bool = False):
    """Register a step kind. See the module docstring."""

    def register(fn):
        if name in _REGISTRY and _REGISTRY[name].run.__qualname__ != fn.__qualname__:
            raise ValueError(f"step kind {name!r} registered twice")
        _REGISTRY[name] = StepKind(name, version, fn, tuple(config), tuple(upstream), files, applies,
                                   tuple(artifacts), precheck, environment, isolate)
        return fn

    return register


def registry() -> dict[str, StepKind]:
    """All step kinds: those in edgebuild.steps plus any registered by the caller (e.g. tests)."""
    import edgebuild.steps  # noqa: F401  (imports every step module, which registers it)

    return dict(_REGISTRY)


def unregister(name: str) -> None:
    """For tests that define their own step kinds."""
    _REGISTRY.pop(name, None)


@dataclass
class StepContext:
    name: str
    cfg: DictConfig
    out: Path
    inputs: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("edgebuild"))
    progress_sink: Callable[[str, int, int, str], None] | None = None   # edgebuild.console; None: plain lines
    _last_progress: float = 0.0

    def progress(self, done: int, total: int, what: str = "") -> None:
        """Progress of a long loop (a bar on a terminal, edgebuild.console); reported at most 5 times a second,
        and always at the end."""
        now = time.monotonic()
        if done < total and now - self._last_progress < 0.2:
            return
        self._last_progress = now
        from edgebuild.console import plain_sink

        (self.progress_sink or plain_sink)(self.name, done, total, what)
