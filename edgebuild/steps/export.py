"""Step `export`: weights -> model.onnx + meta.json in the layout decoder.layout names (docs/CONTRACTS.md)."""
from __future__ import annotations

import shutil
from pathlib import Path

from edgebuild.digest import file_sha256
from edgebuild.engine import StepContext, step
from edgebuild.export.load import check_config, resolve_weights
from edgebuild.export.meta import build_meta, dumps


@step("export", version=1,
      config=("model.task", "model.imgsz", "model.opset", "model.onnx_layout", "decoder.layout", "model.input.mean",
              "model.input.std", "model.input.order"),
      files=lambda cfg: {"weights": resolve_weights(cfg)},
      artifacts=("model.onnx", "meta.json"),
      precheck=check_config,
      isolate=True)
def export(ctx: StepContext) -> None:
    m, layout = ctx.cfg.model, ctx.cfg.decoder.layout
    weights = Path(ctx.files["weights"])
    norm = {"order": m.input.order, "mean": list(m.input.mean), "std": list(m.input.std)}
    common = dict(task=m.task, layout=layout, imgsz=int(m.imgsz), source_name=weights.name,
                  source_sha256=file_sha256(weights), normalization=norm)
    if weights.suffix.lower() == ".onnx":
        from edgebuild.export.onnx_input import inspect_onnx

        names, strides, nm = inspect_onnx(weights, m.task, layout, int(m.imgsz))
        meta = build_meta(names=names, strides=strides, nm=nm, **common)
        shutil.copyfile(weights, ctx.out / "model.onnx")
    else:
        from edgebuild.export.load import load_checkpoint
        from edgebuild.export.onnx_export import export_onnx

        loaded = load_checkpoint(weights, m.task, int(m.imgsz))
        meta = build_meta(names=loaded.names, strides=loaded.strides, **common)
        ctx.log.info("export: %s %s, %d classes, layout %s, imgsz %d", weights.name, loaded.task, len(loaded.names),
                     layout, m.imgsz)
        export_onnx(loaded, layout, int(m.imgsz), int(m.opset), meta, ctx.out / "model.onnx", norm)
    (ctx.out / "meta.json").write_text(dumps(meta))
