"""compile: lint the quantized TFLite against the target (fallback ops, quantization) and run its compiler.

Writes compile.json = {"target", "ops", "fallback_ops", "fallback_source", "lint_fallback_ops",
"quantization_checks", "memory", "compiler": {"name", "ran", "reason", "summary"}} and, when a compiler ran,
its output model (model_vela.tflite / model_neutron.tflite).
"""
from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from edgebuild.artifact import artifact_dir
from edgebuild.engine import StepContext, step
from edgebuild.errors import EdgebuildError
from edgebuild.targets import neutron, oplint, vela
from edgebuild.targets.tflite_ops import builtin_op_names, read_model

CONFIG = ("target.name", "target.compiler", "target.compiler_path", "target.compiler_args",
          "target.supported_ops", "target.per_channel", "target.input_dtype", "target.fail_on_fallback",
          "target.memory_limit_kib", "precision.mode")


def _precheck(cfg: DictConfig) -> None:
    t = cfg.target
    bad = oplint.unknown_op_names(_ops(t.supported_ops), builtin_op_names())
    if bad:
        raise EdgebuildError("target.supported_ops", f"{', '.join(bad)} are not TFLite builtin operator names.",
                             "use names as in the TFLite schema (CONV_2D, LOGISTIC, ...) or CUSTOM:<code>.")
    if t.compiler_path and not Path(t.compiler_path).expanduser().is_file():
        raise EdgebuildError("target.compiler_path", f"{t.compiler_path} does not exist.",
                             "point it at the compiler executable, or set target.compiler_path=null to search PATH.")
    if t.compiler == "vela":
        vela.check_args(list(t.compiler_args))
        if vela.find_vela(t.compiler_path) is None:
            raise EdgebuildError("target.compiler", "vela is not installed here.",
                                 "pip install 'edgebuild[tflite]' (ethos-u-vela), or set target.compiler=none.")


def _environment(cfg: DictConfig) -> dict:
    t = cfg.target
    if t.compiler == "vela":
        exe = vela.find_vela(t.compiler_path)
        if exe is not None and not t.compiler_path:
            try:
                return {"vela": importlib.metadata.version("ethos-u-vela")}
            except importlib.metadata.PackageNotFoundError:
                pass
        return {"vela": vela.vela_version(str(exe)) if exe else None}
    if t.compiler == "neutron":
        return neutron.environment(t.compiler_path)
    return {}


def _ops(value) -> list[str] | None:
    if value is None:
        return None
    return list(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


@step("compile", version=1, config=CONFIG, upstream=("tflite", "?precision_search"),
      applies=lambda cfg: cfg.target.backend == "tflite",
      artifacts=("compile.json", "model_vela.tflite", "model_neutron.tflite"),
      precheck=_precheck, environment=_environment)
def compile_step(ctx: StepContext) -> None:
    t = ctx.cfg.target
    src = artifact_dir(ctx.inputs) / "model.tflite"
    model = read_model(src)
    counts = model.op_counts()
    lint = oplint.fallback_ops(counts, _ops(t.supported_ops))
    checks = oplint.quantization_checks(model, per_channel=t.per_channel, input_dtype=t.input_dtype,
                                        precision_mode=ctx.cfg.precision.mode)
    compiler = run_compiler(t, src, ctx.out)
    measured = compiler["summary"].get("cpu_ops_by_name") if compiler["ran"] else None
    fallback, source = (measured, t.compiler) if measured is not None else (lint, "supported_ops")
    memory = _memory(t, compiler["summary"])
    report = {"target": t.name, "ops": counts, "fallback_ops": fallback, "fallback_source": source,
              "lint_fallback_ops": lint, "quantization_checks": checks, "memory": memory, "compiler": compiler}
    (ctx.out / "compile.json").write_text(json.dumps(report, indent=2) + "\n")
    for c in checks:
        if c["ok"] is False:
            ctx.log.warning("compile: quantization check %s failed: %s", c["name"], c["detail"])
    if fallback:
        ctx.log.warning("compile: %s falls back to the CPU: %s", t.name, _fmt(fallback))
    if memory.get("ok") is False:
        raise EdgebuildError("target.memory_limit_kib",
                             f"{t.compiler} reports {memory['used_kib']:.1f} KiB of SRAM, above the "
                             f"{memory['limit_kib']} KiB budget of {t.name}.",
                             "use a smaller imgsz or model, or raise target.memory_limit_kib if the board has more.")
    if fallback and t.fail_on_fallback:
        raise EdgebuildError("target.fail_on_fallback",
                             f"{sum(fallback.values())} op(s) would run on the CPU of {t.name} "
                             f"(per {source}): {_fmt(fallback)}.",
                             "change the model so these ops are not emitted, or set "
                             "target.fail_on_fallback=false to accept CPU fallback.")


def run_compiler(t: DictConfig, src: Path, out: Path) -> dict:
    extra = [str(a) for a in t.compiler_args]
    if t.compiler == "vela":
        exe = vela.find_vela(t.compiler_path)
        if exe is None:
            raise EdgebuildError("target.compiler", "vela is not installed here.",
                                 "pip install 'edgebuild[tflite]' (ethos-u-vela), or set target.compiler=none.")
        summary = vela.run_vela(exe, src, out, extra)
        return {"name": "vela", "ran": True, "reason": "", "summary": summary}
    if t.compiler == "neutron":
        return {"name": "neutron", **neutron.run_neutron(t.compiler_path, src, out, extra)}
    return {"name": "none", "ran": False, "reason": "target.compiler=none: op lint only", "summary": {}}


def _memory(t: DictConfig, summary: dict) -> dict:
    used = summary.get("sram_kib")
    if t.memory_limit_kib is None:
        return {"limit_kib": None, "used_kib": used, "ok": None}
    if used is None:
        return {"limit_kib": t.memory_limit_kib, "used_kib": None, "ok": None, "detail": "not measured"}
    return {"limit_kib": t.memory_limit_kib, "used_kib": used, "ok": used <= t.memory_limit_kib}


def _fmt(ops: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(ops.items()))
