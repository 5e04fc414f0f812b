"""engine step: QDQ ONNX -> TensorRT engine where tensorrt and a GPU exist; otherwise the command to build it.

Always writes build_engine.sh (trtexec, from an argument list) and engine.json; model.engine only from a real
build. Never a placeholder engine. The environment key (TensorRT version, GPU presence) makes a Jetson build and
a CPU-only build different cache entries.
"""
from __future__ import annotations

import json
import os

from edgebuild.artifact import artifact_dir
from edgebuild.engine import StepContext, step
from edgebuild.tensorrt import engine_build as eb


def _applies(cfg) -> bool:
    return cfg.target.backend == "tensorrt"


@step("engine", version=1, upstream=("qdq", "?precision_search"), applies=_applies,
      artifacts=("build_engine.sh", "engine.json", eb.ENGINE), precheck=eb.require_engine_precheck,
      environment=eb.environment)
def engine(ctx: StepContext) -> None:
    src = artifact_dir(ctx.inputs)
    meta = json.loads((src / "meta.json").read_text())
    quant = meta.get("quantization", {})
    mode = quant.get("mode", "int8")
    float_nodes = list(quant.get("float_nodes", [])) if mode in ("mixed", "auto") else []
    if mode == "auto":  # precision_search's result: FP16 layers are a mixed engine, none is an int8 one
        mode = "mixed" if float_nodes else "int8"
    argv = eb.trtexec_argv(mode, float_nodes)
    script = ctx.out / "build_engine.sh"
    script.write_text(eb.build_script(argv))
    os.chmod(script, 0o755)
    env = eb.probe()
    status = {"onnx": eb.ONNX, "mode": mode, "command": argv, **env.as_dict()}
    if env.can_build:
        ctx.log.info("engine: building with TensorRT %s (%s)", env.tensorrt, mode)
        facts = eb.build_engine(src / eb.ONNX, ctx.out / eb.ENGINE, mode, float_nodes,
                                timing_cache=ctx.out / eb.TIMING_CACHE)
        status.update(facts, engine=eb.ENGINE)
    else:
        ctx.log.info("engine: %s; wrote build_engine.sh for the device", env.reason)
        status.update(built=False, reason=env.reason)
    (ctx.out / "engine.json").write_text(json.dumps(status, indent=1))
