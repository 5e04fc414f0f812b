"""A deploy bundle on disk: meta.json (export meta + a "deploy" section), the model file(s), labels.txt.

    read_meta(bundle_dir) -> dict        one error paragraph for a missing, unreadable or newer meta.json
    model_file(bundle_dir, meta, delegate, model) -> Path   which file to run
"""
from __future__ import annotations

import json
from pathlib import Path

from edgebuild.errors import EdgebuildError

SCHEMA_VERSION = 1   # of meta.json's "deploy" section; a runner refuses bundles written for a newer one
REBUILD = "rebuild the bundle with `edgebuild +recipe=...` (it writes deploy/ and deploy.tar.gz in the run dir)"


def read_meta(bundle: str | Path) -> dict:
    bundle = Path(bundle)
    if bundle.is_file() and bundle.name.endswith((".tar.gz", ".tgz")):
        raise EdgebuildError(str(bundle), "this is the packed bundle, not a bundle directory.",
                             f"extract it first (tar xzf {bundle.name}) and pass the extracted deploy/ directory.")
    path = bundle / "meta.json"
    if not bundle.is_dir():
        raise EdgebuildError(str(bundle), "no such bundle directory.", "pass the deploy/ directory of a run.")
    if not path.is_file():
        raise EdgebuildError(str(path), "the bundle has no meta.json, so its outputs cannot be decoded.",
                             f"copy the whole deploy/ directory, or {REBUILD}.")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EdgebuildError(str(path), f"meta.json is not readable JSON ({e}).", f"{REBUILD}.") from None
    deploy = meta.get("deploy") if isinstance(meta, dict) else None
    if not isinstance(deploy, dict) or not isinstance(deploy.get("schema_version"), int):
        raise EdgebuildError(str(path), "meta.json has no deploy section (it is not from a deploy bundle).",
                             f"{REBUILD}.")
    if deploy["schema_version"] > SCHEMA_VERSION:
        raise EdgebuildError(str(path), f"the bundle uses deploy schema {deploy['schema_version']}, newer than this "
                             f"runner's {SCHEMA_VERSION}.",
                             "run it with the edgebuild/ runner copied inside the same bundle (python -m "
                             "edgebuild.deploy from the bundle directory), or upgrade edgebuild.")
    return meta


def model_file(bundle: str | Path, meta: dict, delegate: str | None = None, model: str | None = None) -> Path:
    """The model to run: `model` if given (a file name in the bundle or a path), else the delegate's model when
    a delegate is used and the bundle has one (e.g. model_vela.tflite for the Ethos-U), else the CPU model."""
    bundle, deploy = Path(bundle), meta["deploy"]
    if model:
        path = Path(model) if Path(model).is_file() else bundle / model
    else:
        npu = (deploy.get("delegate") or {}).get("model")
        name = npu if delegate and npu and (bundle / npu).is_file() else deploy["model"]
        path = bundle / name
    if not path.is_file():
        raise EdgebuildError(str(path), "the model file is not in the bundle.",
                             f"copy the whole deploy/ directory, or pick one of {available(bundle)} with --model.")
    return path


def available(bundle: Path) -> list[str]:
    return sorted(p.name for p in Path(bundle).iterdir() if p.suffix in (".tflite", ".onnx", ".engine", ".plan"))
