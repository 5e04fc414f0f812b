"""deploy: the bundle the board runs — the deployable model(s), meta.json, labels, README.md, a sample image and the
runner code (edgebuild.deploy) — as deploy/ and deploy.tar.gz in the run dir (edgebuild/packaging.py)."""
from __future__ import annotations

import json
from pathlib import Path

from edgebuild.artifact import artifact_dir
from edgebuild.engine import StepContext, step

CONFIG = ("target.name", "target.backend", "target.delegate", "validation.iou", "validation.max_det")


def _files(cfg) -> dict:
    from edgebuild.data.dataset import open_dataset
    from edgebuild.packaging import runtime_sources

    files = {f"runner:{name}": path for name, path in runtime_sources().items()}  # content only: rebuilt on code change
    images = open_dataset(cfg).image_files(cfg.validation.split, "validation.split")
    if images:
        files["sample"] = images[0]
    return files


def _models(inputs: dict[str, Path]) -> tuple[dict[str, Path], str, Path]:
    """({bundle name: source file}, the CPU-runnable model's name, its meta.json)."""
    src = artifact_dir(inputs)   # precision_search's artifact when precision=auto
    if "tflite" in inputs:
        files = {"model.tflite": src / "model.tflite"}
        for name in ("model_vela.tflite", "model_neutron.tflite"):
            if "compile" in inputs and (inputs["compile"] / name).is_file():
                files[name] = inputs["compile"] / name
        return files, "model.tflite", src / "meta.json"
    files = {"model_qdq.onnx": src / "model_qdq.onnx"}
    for name in ("calibration.cache",):
        if (src / name).is_file():
            files[name] = src / name
    for name in ("build_engine.sh", "model.engine"):
        if "engine" in inputs and (inputs["engine"] / name).is_file():
            files[name] = inputs["engine"] / name
    return files, "model_qdq.onnx", src / "meta.json"


@step("deploy", version=1, config=CONFIG, upstream=("export", "?tflite", "?qdq", "?precision_search", "?compile", "?engine"),
      files=_files, applies=lambda cfg: cfg.target.backend in ("tflite", "tensorrt"),
      artifacts=("deploy", "deploy.tar.gz"))
def deploy(ctx: StepContext) -> None:
    from edgebuild.packaging import deploy_meta, readme, write_bundle

    files, model, meta_path = _models(ctx.inputs)
    t, v = ctx.cfg.target, ctx.cfg.validation
    meta = deploy_meta(json.loads(meta_path.read_text()), {"name": t.name, "backend": t.backend, "delegate": t.delegate},
                       model, {"iou": v.iou, "max_det": v.max_det})
    sample = None
    if "sample" in ctx.files:
        sample = "sample" + Path(ctx.files["sample"]).suffix.lower()
        files[sample] = Path(ctx.files["sample"])
    runner = {k: Path(p) for k, p in ctx.files.items() if k.startswith("runner:")}
    root, archive = write_bundle(ctx.out, files, meta, readme(meta, sorted(files), sample))
    ctx.log.info("deploy: %s (%s) with %d runner modules, %.1f MB packed", root.name, ", ".join(sorted(files)),
                 len(runner), archive.stat().st_size / 1e6)
