"""Write a deploy bundle: deploy/ (model file(s), meta.json with a "deploy" section, labels.txt, README.md,
sample image, and the runner code) and deploy.tar.gz of the same tree (deterministic bytes).

The runner code is a byte copy of the package modules listed in RUNTIME_MODULES — the same files validation
imports, so the board runs exactly the preprocessing, decode, NMS and mask code that measured the accuracy
(docs/deploy.md says why a copy in the bundle and not a pip install on the board).
"""
from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

from edgebuild.deploy.bundle import SCHEMA_VERSION
from edgebuild.targets.delegates import delegate_for

PACKAGE = Path(__file__).resolve().parent
# numpy + OpenCV + a TFLite interpreter (onnxruntime / tensorrt only for those models), nothing else: the import
# graph is checked by tests/test_deploy.py
RUNTIME_MODULES = (
    "__init__.py", "errors.py", "layout.py", "postprocess.py",
    "data/__init__.py", "data/preprocess.py",
    "metrics/__init__.py", "metrics/nms.py", "metrics/masks.py",
    "runtime/__init__.py", "runtime/litert.py", "runtime/onnx.py", "runtime/tensorrt.py",
    "deploy/__init__.py", "deploy/__main__.py", "deploy/bundle.py", "deploy/cli.py", "deploy/draw.py",
    "deploy/model.py",
)


def runtime_sources() -> dict[str, Path]:
    """{"edgebuild/<module>": path in this installation} of every module the runner needs."""
    return {f"edgebuild/{m}": PACKAGE / m for m in RUNTIME_MODULES}


def deploy_meta(meta: dict, target: dict, model: str, nms: dict) -> dict:
    """meta.json of the bundle: the artifact's meta plus what the board needs to know to run it."""
    delegate = delegate_for(target["delegate"])
    return {**meta, "deploy": {
        "schema_version": SCHEMA_VERSION, "target": target["name"], "backend": target["backend"],
        "model": model, "delegate": delegate, "nms": {**nms, "multi_label": True},
        "requires": ["numpy", "opencv-python-headless",
                     "onnxruntime" if model.endswith(".onnx") else "ai-edge-litert or tflite-runtime"]}}


def write_bundle(out: Path, files: dict[str, Path], meta: dict, readme: str) -> tuple[Path, Path]:
    """out/deploy/ with `files` (bundle name -> source), meta.json, labels.txt, README.md and the runner code;
    out/deploy.tar.gz of it. -> (directory, archive)."""
    root = out / "deploy"
    root.mkdir(parents=True)
    for name, src in {**files, **runtime_sources()}.items():
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)   # keeps build_engine.sh executable
    (root / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    (root / "labels.txt").write_text("".join(f"{n}\n" for n in meta.get("names") or []))
    (root / "README.md").write_text(readme)
    archive = out / "deploy.tar.gz"
    archive.write_bytes(deterministic_tar(root))
    return root, archive


def deterministic_tar(root: Path) -> bytes:
    """gzip'd tar of root (as top-level directory root.name): sorted entries, zero mtimes and owners."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in [root, *sorted(root.rglob("*"))]:
                info = tar.gettarinfo(str(path), arcname=str(Path(root.name) / path.relative_to(root)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = 0o755 if path.is_dir() or path.suffix == ".sh" else 0o644
                if path.is_file():
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def readme(meta: dict, files: list[str], sample: str | None) -> str:
    """README.md of a bundle: what is in it and the exact lines to run it on the target's board."""
    d = meta["deploy"]
    dl = d.get("delegate")
    cpu, img = d["model"], sample or "image.jpg"
    onnx = cpu.endswith(".onnx")
    install = ("python3 -m pip install numpy opencv-python-headless onnxruntime" if onnx else
               "python3 -m pip install numpy opencv-python-headless ai-edge-litert   "
               "# or the BSP's python3-tflite-runtime + python3-opencv")
    lines = [
        f"# Deploy bundle: {meta.get('task', 'detect')} model for {d['target']}",
        "",
        f"Built by edgebuild from `{(meta.get('source') or {}).get('weights', 'the recipe weights')}`: input "
        f"{meta['imgsz']}x{meta['imgsz']}, {meta['nc']} classes (labels.txt), output layout `{meta['layout']}` "
        "(decoded on the host by the bundled runner).",
        "",
        "## Files",
        "",
        *[f"- `{f}`" for f in files],
        "- `meta.json`: classes, layout, strides, output roles and quantization; `deploy` names the model and delegate",
        "- `labels.txt`: one class name per line",
        "- `edgebuild/`: the runner — the same preprocessing, decode, NMS and mask code that validated this model "
        "(numpy + OpenCV + the interpreter; no torch, TensorFlow, Hydra or onnx)",
        "",
        "## Run it",
        "",
        "```",
        install,
        "cd deploy",
        f"python3 -m edgebuild.deploy infer . {img}      # {'onnxruntime' if onnx else 'CPU'}: {cpu}",
        f"python3 -m edgebuild.deploy infer . {img} --save out.jpg --json",
    ]
    if dl and dl.get("library"):
        npu = dl["model"] if dl["model"] in files else f"{cpu} ({dl['model']} is not in this bundle, see below)"
        lines += [
            f"python3 -m edgebuild.deploy infer . {img} --delegate {dl['library']}   # {dl['board']} NPU: {npu}",
            f"python3 -m edgebuild.deploy bench . --delegate {dl['library']}",
        ]
    elif dl and dl["name"] == "tensorrt":
        lines += ["./build_engine.sh      # on the Jetson: trtexec writes model.engine",
                  f"python3 -m edgebuild.deploy infer . {img} --model model.engine      # TensorRT"]
    lines += ["python3 -m edgebuild.deploy bench .      # latency per stage (median, p90)", "```", ""]
    if dl:
        lines += [f"{dl['board']}. {dl['note']}", ""]
    lines += [
        "From Python (run from this directory, or put it on PYTHONPATH):",
        "",
        "```python",
        "from edgebuild.deploy import load",
        "model = load('.')" + (f"                # or load('.', delegate='{dl['library']}')" if dl and dl.get("library")
                               else ""),
        f"r = model.predict('{img}', conf=0.25)   # r.boxes (original pixels, xyxy), r.scores, r.names"
        + (", r.masks" if meta.get("task") == "segment" else ""),
        "```",
        "",
        f"NMS: class-aware, multi-label, IoU {d['nms']['iou']}, at most {d['nms']['max_det']} detections "
        "(the validation settings). More: docs/deploy.md of edgebuild.",
        "",
    ]
    return "\n".join(lines)
