"""Find and load the model the recipe names, with every check that has a clear fix.

`resolve_weights(cfg)` and `check_config(cfg)` are plan-time: no torch import, only paths and config.
`load_checkpoint(path, task, imgsz)` is run-time: it loads an Ultralytics checkpoint with `ultralytics`.

SECURITY: a .pt checkpoint is a Python pickle. Loading it can execute code. We first try Ultralytics'
restricted loader (torch `weights_only=True` plus Ultralytics' allow-list of model classes); only if that
refuses the file do we fall back to a full unpickle, as `ultralytics.YOLO(path)` itself does. Point
model.weights only at checkpoints you trust (your own training runs or published Ultralytics weights).
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from edgebuild.errors import EdgebuildError

log = logging.getLogger("edgebuild")

CHECKPOINT_SUFFIXES = (".pt", ".pth")
ONNX_SUFFIX = ".onnx"


# ----------------------------------------------------------------------------------------- plan time
def resolve_weights(cfg: DictConfig) -> Path:
    """model.weights -> absolute path. `builtin:` names are resolved by edgebuild.demo (imported lazily)."""
    spec = str(cfg.model.weights)
    if spec.startswith("builtin:"):
        try:
            from edgebuild import demo
            resolver = getattr(demo, "resolve_weights")
        except (ImportError, AttributeError):
            raise EdgebuildError("model.weights", f"{spec} is not available in this installation "
                                 "(edgebuild.demo.resolve_weights is missing).",
                                 "set model.weights to an Ultralytics .pt checkpoint or a YOLO .onnx file.") from None
        return Path(resolver(cfg)).resolve()
    return Path(spec).expanduser().resolve()


def check_config(cfg: DictConfig) -> None:
    """Plan-time checks of the export inputs: the file exists, its kind fits model.onnx_layout, imgsz fits."""
    path = resolve_weights(cfg)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise EdgebuildError("model.weights", f"{path} {what} (relative paths are taken from the directory you "
                             f"run edgebuild in: {Path.cwd()}).",
                             "point model.weights at an Ultralytics .pt checkpoint or a YOLO .onnx file, "
                             "e.g. model.weights=runs/detect/train/weights/best.pt.")
    suffix = path.suffix.lower()
    layout = cfg.model.get("onnx_layout")
    if suffix == ONNX_SUFFIX:
        if layout is None:
            raise EdgebuildError("model.onnx_layout", f"model.weights is an ONNX file ({path.name}) but its output "
                                 "layout is not declared.",
                                 "set model.onnx_layout to split, split_ltrb or fused (fused = what "
                                 "`yolo export format=onnx` writes).")
        if layout != cfg.decoder.layout:
            raise EdgebuildError("decoder.layout", f"is {cfg.decoder.layout} but the given ONNX already has layout "
                                 f"{layout} (model.onnx_layout); an imported graph cannot change its outputs.",
                                 f"set decoder.layout={layout}, or export from the .pt checkpoint instead.")
    elif suffix in CHECKPOINT_SUFFIXES:
        if layout is not None:
            raise EdgebuildError("model.onnx_layout", f"is {layout} but model.weights is a checkpoint "
                                 f"({path.name}); onnx_layout only describes .onnx weights.",
                                 "remove model.onnx_layout (set it to null); decoder.layout picks the export layout.")
    else:
        raise EdgebuildError("model.weights", f"{path.name} has suffix {suffix or '(none)'!r}; edgebuild reads "
                             "Ultralytics checkpoints (.pt) and YOLO ONNX graphs (.onnx).",
                             "point model.weights at a .pt or .onnx file.")
    check_imgsz(int(cfg.model.imgsz), 32)
    inp = cfg.model.get("input")
    if suffix == ONNX_SUFFIX and inp is not None and (list(inp.mean) != [0, 0, 0] or list(inp.std) != [255] * 3):
        raise EdgebuildError("model.input", f"sets mean {list(inp.mean)} / std {list(inp.std)} but model.weights is "
                             f"an ONNX file ({path.name}); edgebuild folds the normalization into the first conv of "
                             "a checkpoint it exports, and cannot edit an imported graph.",
                             "export from the .pt checkpoint, or bake the normalization into your ONNX and keep the "
                             "defaults (mean [0,0,0], std [255,255,255]).")


def check_imgsz(imgsz: int, stride: int) -> None:
    if imgsz < stride or imgsz % stride:
        near = max(stride, round(imgsz / stride) * stride)
        raise EdgebuildError("model.imgsz", f"{imgsz} is not a multiple of the model's largest stride {stride}.",
                             f"use model.imgsz={near}.")


# ------------------------------------------------------------------------------------------ run time
@dataclass
class LoadedModel:
    model: Any              # ultralytics DetectionModel / SegmentationModel, fused, eval, float32
    head: Any               # its Detect / Segment head
    task: str               # detect | segment
    names: list[str]
    strides: list[int]


def load_checkpoint(path: Path, task: str, imgsz: int) -> LoadedModel:
    """Load an Ultralytics YOLOv8/YOLO11 detect or segment checkpoint and prepare it for export (see SECURITY above)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    import torch
    from ultralytics.nn.modules.head import Detect, Segment

    ckpt = _load_pickle(path)
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "model"):
        found = f"a dict with keys {sorted(ckpt)[:8]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise EdgebuildError("model.weights", f"{path} is a pickle but not an Ultralytics checkpoint: it holds "
                             f"{found}, with no YOLO model under 'model' or 'ema'.",
                             "use a checkpoint written by Ultralytics training (weights/best.pt or last.pt).")
    head = model.model[-1]
    kind = type(head).__name__
    if not isinstance(head, Detect) or kind not in ("Detect", "Segment"):
        raise EdgebuildError("model.weights", f"{path.name} has a {kind} head; edgebuild exports YOLOv8/YOLO11 "
                             "detect (Detect) and segment (Segment) models only.",
                             "use a detection or instance-segmentation checkpoint.")
    if getattr(head, "one2one_cv2", None) is not None or getattr(head, "end2end", False):
        raise EdgebuildError("model.weights", f"{path.name} has an NMS-free end-to-end head (YOLOv10/YOLO26 "
                             "style); its one-to-one outputs are not supported by edgebuild's layouts.",
                             "use a YOLOv8 or YOLO11 checkpoint (one-to-many head with DFL).")
    has = "segment" if isinstance(head, Segment) else "detect"
    if has != task:
        raise EdgebuildError("model.task", f"is {task} but {path.name} is a {has} model.",
                             f"set model.task={has} (e.g. model=yolov8n_{has[:3]}), or point model.weights at "
                             f"{task} weights.")
    strides = [int(s) for s in head.stride.tolist()]
    if not strides or min(strides) <= 0:
        raise EdgebuildError("model.weights", f"{path.name} has no strides recorded in its head.",
                             "use a checkpoint written by Ultralytics training.")
    check_imgsz(imgsz, max(strides))
    raw = getattr(model, "names", None)
    if isinstance(raw, (list, tuple)):
        raw = dict(enumerate(raw))
    names = [str((raw or {}).get(i, f"class{i}")) for i in range(head.nc)]

    for p in model.parameters():
        p.requires_grad = False
    model = model.float().eval()
    model = model.fuse(verbose=False)
    return LoadedModel(model, model.model[-1], has, names, strides)


def _load_pickle(path: Path) -> Any:
    """Ultralytics' restricted loader first; if its allow-list refuses the file, a full unpickle (trusted only)."""
    from ultralytics.nn.tasks import torch_safe_load

    def fail(detail: str) -> EdgebuildError:
        return EdgebuildError("model.weights", f"{path} is not a loadable Ultralytics checkpoint ({detail}).",
                              "point model.weights at a .pt written by Ultralytics (e.g. runs/*/weights/best.pt); "
                              "if the file was copied, copy it again.")

    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch zip archive / legacy pickle
        raise fail("it is not a PyTorch file: " + ("it is empty" if not head else f"it starts with {head!r}"))
    try:
        return torch_safe_load(str(path), safe_only=True)[0]
    except TypeError as e:
        if "outside the supported" not in str(e):
            raise fail(_first_line(e)) from None
    except Exception as e:  # noqa: BLE001 - any failure here means "not a checkpoint"
        raise fail(f"{type(e).__name__}: {_first_line(e)}") from None
    log.warning("%s uses types outside Ultralytics' safe-load allow-list; unpickling it fully "
                "(this can run code from the file: only load checkpoints you trust).", path)
    try:
        with _no_autoinstall():
            return torch_safe_load(str(path), safe_only=False)[0]
    except Exception as e:  # noqa: BLE001
        raise fail(f"{type(e).__name__}: {_first_line(e)}") from None


@contextlib.contextmanager
def _no_autoinstall():
    """Ultralytics pip-installs modules a pickle names; a build must never install anything."""
    from ultralytics.utils import checks

    before = checks.AUTOINSTALL
    checks.AUTOINSTALL = False
    try:
        yield
    finally:
        checks.AUTOINSTALL = before


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__).replace("ERROR ❌️ ", "").rstrip(".")
