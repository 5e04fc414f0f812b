"""Typed schema of a composed recipe. Every key is declared here with its type and meaning.

`validate(cfg)` merges the composed Hydra config into these dataclasses: unknown keys, wrong types,
values outside `choices` and inconsistent combinations become one EdgebuildError naming the key.
"""
from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from edgebuild.errors import EdgebuildError


def doc(text: str, default: Any = MISSING, choices: tuple = (), factory: Any = MISSING):
    meta = {"doc": text, "choices": choices}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class InputConfig:
    mean: list[float] = doc("Per-channel mean in pixel units (0-255), in `order`: the network sees (pixel - mean) / "
                            "std. Folded into the exported graph, so the board feeds raw bytes.",
                     factory=lambda: [0., 0., 0.])
    std: list[float] = doc("Per-channel std in pixel units (> 0), in `order`; YOLO's default 255 is x / 255.",
                           factory=lambda: [255., 255., 255.])
    order: str = doc("Channel order the network consumes and the board feeds: rgb (Ultralytics) or bgr (OpenCV).",
                     "rgb", ("rgb", "bgr"))
    dtype: Optional[str] = doc("Input type of the quantized model; null = target.input_dtype. Must be one the target "
                               "accepts (target.input_dtypes).", None, (None, "uint8", "int8", "float32"))


@dataclass
class ModelConfig:
    name: str = doc("Short model name used in reports.", "model")
    arch: str = doc("Architecture and task tag of the model group (yolov8n-det, yolo11n-seg, ...); recipes name "
                    "their weights file with it (shapes-hard-${model.arch}.pt), so model=GROUP swaps both.", "")
    weights: str = doc("Ultralytics .pt checkpoint or YOLO .onnx (relative to the cwd), or builtin:demo-det.",
                       "builtin:demo-det")
    task: str = doc("detect or segment; must match the weights.", "detect", ("detect", "segment"))
    imgsz: int = doc("Square input size in pixels, a multiple of the model stride (32).", 320)
    opset: int = doc("ONNX opset of the exported float model.", 17)
    onnx_layout: Optional[str] = doc("For .onnx weights: the layout the file already has.", None,
                                     (None, "split", "split_ltrb", "split_dfl", "fused"))
    input: InputConfig = field(default_factory=InputConfig)


@dataclass
class DatasetConfig:
    name: str = doc("Short dataset name used in reports.", "dataset")
    path: str = doc("YOLO data.yaml, COCO instances json, or builtin:demo (generated on first use).", "builtin:demo")
    format: str = doc("yolo or coco.", "yolo", ("yolo", "coco"))
    images: Optional[str] = doc("COCO only: directory the json's file_name entries are relative to.", None)
    on_corrupt: str = doc("skip (warn and count) or error when an image cannot be decoded.", "skip", ("skip", "error"))


@dataclass
class TargetConfig:
    name: str = doc("Board name.", "cpu")
    backend: str = doc("tflite (NXP / CPU) or tensorrt (Jetson).", "tflite", ("tflite", "tensorrt"))
    delegate: str = doc("Runtime delegate on the board (informational; used by the op lint).", "xnnpack")
    compiler: str = doc("Ahead-of-time compiler run after quantization.", "none", ("none", "vela", "neutron"))
    compiler_path: Optional[str] = doc("Compiler executable; default: looked up on PATH.", None)
    compiler_args: list[str] = doc("Extra compiler arguments (argument list, never a shell string).", factory=list)
    per_channel: bool = doc("Per-channel weight quantization (false = per-tensor).", True)
    input_dtype: str = doc("Quantized model input type.", "uint8", ("uint8", "int8", "float32"))
    input_dtypes: list[str] = doc("Input types the board's runtime accepts (model.input.dtype must be one).",
                                  factory=lambda: ["uint8", "int8", "float32"])
    supported_ops: Optional[list[str]] = doc("TFLite builtin ops the NPU runs; null = all.", None)
    ops_source: str = doc("Where the supported-op list comes from.", "")
    fail_on_fallback: bool = doc("Fail the build when ops fall back to the CPU.", False)
    require_engine: bool = doc("TensorRT: fail unless a real engine can be built here.", False)
    memory_limit_kib: Optional[int] = doc("On-chip memory budget, when known.", None)


@dataclass
class CalibrationConfig:
    method: str = doc("Range estimator.", "minmax", ("minmax", "entropy", "percentile"))
    count: Optional[int] = doc("Number of calibration images (exclusive with fraction).", None)
    fraction: Optional[float] = doc("Fraction of the calibration split in (0, 1] (exclusive with count).", None)
    seed: int = doc("Sampling seed.", 0)
    split: str = doc("Dataset split to calibrate on; never val by default (it leaks into accuracy).", "train")
    stratified: bool = doc("Sample evenly across classes.", False)
    percentile: float = doc("percentile method: the percentile of |x| kept, e.g. 99.99.", 99.99)
    num_bins: int = doc("entropy/percentile: histogram bins.", 2048)
    correction: str = doc("After calibration, correct every int8 conv in the target's own integer arithmetic "
                          "(TensorRT: symmetric activations; TFLite: asymmetric, per-channel or per-tensor weights) "
                          "on the first correction_images calibration images: none, bias (per-channel output mean), "
                          "weights (least-squares re-fit of weights and bias, re-quantized) or finetune (weights and "
                          "biases trained against the float model's outputs, activation scales frozen).", "none",
                          ("none", "bias", "weights", "finetune"))
    correction_images: int = doc("Calibration images for calibration.correction (>= 1).", 64)
    correction_steps: int = doc("calibration.correction=finetune: training steps of 8 images (>= 1).", 400)


@dataclass
class DecoderConfig:
    layout: str = doc("split (boxes normalized in-graph), split_ltrb (raw distances, host decode), split_dfl (raw "
                      "DFL logits, softmax + distances on the host: no softmax on the NPU) or fused.",
                      "split_ltrb", ("split", "split_ltrb", "split_dfl", "fused"))


@dataclass
class AutoPrecisionConfig:
    images: int = doc("Search images: labelled images of calibration.split held back from calibration (never the "
                      "val split).", 200)
    max_drop: Optional[float] = doc("Allowed mAP50-95 drop on the search images, in points; null = "
                                    "validation.max_map_drop - 0.3.", None)
    max_float_layers: int = doc("At most this many layers kept float / FP16 (0 = report only).", 3)
    candidates: int = doc("Most sensitive layers (per-layer error) evaluated one by one.", 8)
    rank_images: int = doc("Calibration images for the per-layer error that ranks the candidates.", 8)


@dataclass
class PrecisionConfig:
    mode: str = doc("int8, fp16, mixed (int8 with float_layers kept float / FP16) or auto (the fewest float "
                    "layers that meet the accuracy budget, searched: precision.auto).", "int8",
                    ("int8", "fp16", "mixed", "auto"))
    float_layers: list[str] = doc("Op/tensor name patterns kept in float (mode=mixed).", factory=list)
    auto: AutoPrecisionConfig = field(default_factory=AutoPrecisionConfig)


@dataclass
class ValidationConfig:
    split: str = doc("Split evaluated.", "val")
    max_images: Optional[int] = doc("Evaluate at most this many images (null = all).", None)
    conf: float = doc("Score threshold before NMS.", 0.001)
    iou: float = doc("NMS IoU threshold.", 0.7)
    max_det: int = doc("Detections kept per image.", 300)
    max_map_drop: float = doc("Gate: maximum allowed mAP50-95 drop, in points.", 1.5)
    latency_runs: int = doc("Timed inference runs for host latency.", 20)
    report_images: int = doc("Validation images drawn in the HTML report.", 3)
    layer_error_images: int = doc("Calibration images used for the per-layer error table in the report (>= 1).", 4)


@dataclass
class BuildSettings:
    cache_dir: Optional[str] = doc("Step cache; default $EDGEBUILD_CACHE, else the user cache dir.", None)
    plan: bool = doc("Print the plan (steps, keys, cached or why not) and exit.", False)
    isolate: bool = doc("Run heavy steps in a child process (torch and TensorFlow never share one).", True)
    verbose: bool = doc("Show third-party output (TensorFlow, converters) live and tracebacks with errors; "
                        "otherwise it goes to the run's logs/<step>.log.", False)
    explain: Optional[str] = doc("With build.plan: print this step's inputs and what changed, in full "
                                 "(`edgebuild-plan --explain STEP`).", None)
    remote_cache: Optional[str] = doc("Shared step cache: a directory, s3://bucket/prefix or any fsspec URL. Entries "
                                      "are pulled (verified) before building and pushed after.", None)
    remote_cache_push: bool = doc("Push built entries to build.remote_cache (false: read-only, e.g. laptops).", True)


@dataclass
class BuildConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    build: BuildSettings = field(default_factory=BuildSettings)
    recipe: str = doc("Name of the recipe this config came from.", "")


def _node_type(dotted: str):
    """The dataclass at a dotted path ("" = BuildConfig), or None if the path is not a config node."""
    owner = BuildConfig
    for part in dotted.split(".") if dotted else []:
        owner = typing.get_type_hints(owner).get(part) if is_dataclass(owner) else None
    return owner if is_dataclass(owner) else None


def schema_field(dotted: str):
    """The dataclass field declaring a dotted key, or None if the schema has no such key."""
    parent, _, name = dotted.rpartition(".")
    owner = _node_type(parent)
    return next((f for f in fields(owner) if f.name == name), None) if owner else None


def allowed_keys(dotted_parent: str) -> list[str]:
    owner = _node_type(dotted_parent)
    return [f.name for f in fields(owner)] if owner else []


def validate(cfg: DictConfig, recipe: str = "") -> DictConfig:
    """Composed config -> typed, read-only config; EdgebuildError on any problem."""
    try:
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or "?"
        raise EdgebuildError(key, "has no value (??? in the config group).",
                             f"set it in the recipe or on the command line, e.g. {key}=...") from None
    raw.pop("hydra", None)
    raw["recipe"] = recipe or raw.get("recipe", "")
    _check_unknown(raw, "")
    try:
        typed = OmegaConf.merge(OmegaConf.structured(BuildConfig), raw)
    except ValidationError as e:
        key = e.full_key or "?"
        f = schema_field(key)
        expected = getattr(f.type, "__name__", str(f.type)) if f else "the declared type"
        value = OmegaConf.select(OmegaConf.create(raw), key)
        raise EdgebuildError(key, f"{value!r} is not a valid {expected}.",
                             f"set {key} to a {expected}; see `edgebuild --cfg job` for the current value.") from None
    except ConfigKeyError as e:  # pragma: no cover - _check_unknown catches these first
        raise EdgebuildError(e.full_key or "?", "unknown key.", "remove it.") from None
    except OmegaConfBaseException as e:
        raise EdgebuildError(getattr(e, "full_key", "?") or "?", str(e).split("\n")[0] + ".",
                             "fix the value in the recipe or override.") from None
    _check_choices(typed, BuildConfig, "")
    _check_semantics(typed)
    _check_input(typed)
    OmegaConf.set_readonly(typed, True)
    return typed


def _check_unknown(node: dict, prefix: str) -> None:
    for k, v in node.items():
        dotted = f"{prefix}{k}"
        f = schema_field(dotted)
        if k == "_target_":
            raise EdgebuildError(dotted, "recipes may not name Python objects to instantiate (_target_).",
                                 "remove the _target_ entry; edgebuild only builds the steps it ships.")
        if f is None:
            parent = prefix[:-1]
            allowed = ", ".join(allowed_keys(parent))
            raise EdgebuildError(dotted, "unknown key.",
                                 f"use one of the keys of {parent or 'the top level'}: {allowed}.")
        if isinstance(v, dict) and _node_type(dotted) is not None:
            _check_unknown(v, dotted + ".")


def _check_choices(cfg: DictConfig, cls, prefix: str) -> None:
    for f in fields(cls):
        value = cfg[f.name]
        sub = _node_type(prefix + f.name)
        if sub is not None:
            _check_choices(value, sub, prefix + f.name + ".")
        elif f.metadata.get("choices") and value not in f.metadata["choices"]:
            allowed = ", ".join(str(c) for c in f.metadata["choices"])
            raise EdgebuildError(prefix + f.name, f"{value!r} is not allowed.", f"use one of: {allowed}.")


def _check_semantics(cfg: DictConfig) -> None:
    cal = cfg.calibration
    if cal.count is not None and cal.fraction is not None:
        raise EdgebuildError("calibration.count", "count and calibration.fraction are both set; they are exclusive.",
                             "set one and null the other, e.g. `calibration.fraction=null`.")
    if cal.count is not None and cal.count < 1:
        raise EdgebuildError("calibration.count", f"must be at least 1, got {cal.count}.", "use a positive count.")
    if cal.correction_images < 1:
        raise EdgebuildError("calibration.correction_images", f"must be at least 1, got {cal.correction_images}.",
                             "use e.g. calibration.correction_images=64 (calibration.correction=none turns it off).")
    if cal.correction != "none" and cal.count is not None and cal.correction_images > cal.count:
        raise EdgebuildError("calibration.correction_images", f"is {cal.correction_images} but the calibration set "
                             f"has only calibration.count={cal.count} images.",
                             f"use calibration.correction_images={cal.count} or fewer, or raise calibration.count.")
    if cal.correction_steps < 1:
        raise EdgebuildError("calibration.correction_steps", f"must be at least 1, got {cal.correction_steps}.",
                             "use e.g. calibration.correction_steps=400 (calibration.correction=none turns it off).")
    if cal.fraction is not None and not 0 < cal.fraction <= 1:
        raise EdgebuildError("calibration.fraction", f"must be in (0, 1], got {cal.fraction}.",
                             "use e.g. calibration.fraction=0.25.")
    if not 50 < cal.percentile <= 100:
        raise EdgebuildError("calibration.percentile", f"must be in (50, 100], got {cal.percentile}.",
                             "use e.g. 99.99.")
    if cfg.model.imgsz % 32 or cfg.model.imgsz < 32:
        near = max(32, round(cfg.model.imgsz / 32) * 32)
        raise EdgebuildError("model.imgsz", f"{cfg.model.imgsz} is not a multiple of the model stride 32.",
                             f"use {near}.")
    v = cfg.validation
    if not 0 <= v.conf < 1 or not 0 < v.iou <= 1:
        raise EdgebuildError("validation.conf", "conf must be in [0, 1) and validation.iou in (0, 1].",
                             "use e.g. validation.conf=0.001 validation.iou=0.7.")
    if v.layer_error_images < 1:
        raise EdgebuildError("validation.layer_error_images", f"must be at least 1, got {v.layer_error_images}.",
                             "use e.g. validation.layer_error_images=4.")
    if cfg.precision.mode == "mixed" and not cfg.precision.float_layers:
        raise EdgebuildError("precision.float_layers", "precision.mode=mixed needs at least one pattern.",
                             "list the ops/layers to keep float, e.g. precision.float_layers=['>SOFTMAX'].")
    if cfg.precision.mode == "auto":
        _check_auto(cfg.precision)


def _check_auto(p) -> None:
    if p.float_layers:
        raise EdgebuildError("precision.float_layers", "precision=auto chooses the float layers itself; a list was "
                             "given too.", "drop precision.float_layers, or use precision=mixed with your list.")
    for key, low in (("images", 1), ("max_float_layers", 0), ("candidates", 1), ("rank_images", 1)):
        if p.auto[key] < low:
            raise EdgebuildError(f"precision.auto.{key}", f"must be at least {low}, got {p.auto[key]}.",
                                 f"use e.g. precision.auto.{key}={AutoPrecisionConfig.__dataclass_fields__[key].default}.")
    if p.auto.max_drop is not None and p.auto.max_drop < 0:
        raise EdgebuildError("precision.auto.max_drop", f"must be >= 0 points, got {p.auto.max_drop}.",
                             "use e.g. precision.auto.max_drop=0.7, or null for validation.max_map_drop - 0.3.")


def _check_input(cfg: DictConfig) -> None:
    """model.input: 3 means, 3 positive stds, a dtype the target accepts (it then becomes target.input_dtype)."""
    inp, t = cfg.model.input, cfg.target
    for key in ("mean", "std"):
        values = list(inp[key])
        if len(values) != 3:
            raise EdgebuildError(f"model.input.{key}", f"has {len(values)} values {values}; the model takes 3 "
                                 f"channels ({inp.order}), one {key} each, in pixel units (0-255).",
                                 f"give three values in {inp.order} order, e.g. model.input.{key}="
                                 f"{'[123.675,116.28,103.53]' if key == 'mean' else '[58.395,57.12,57.375]'}.")
    bad = [v for v in inp.std if not v > 0]
    if bad:
        raise EdgebuildError("model.input.std", f"is {list(inp.std)}: a std of {bad[0]} divides by zero (or flips "
                             "the sign) when the normalization is folded into the graph.",
                             "use positive values in pixel units, e.g. model.input.std=[255,255,255] for x / 255.")
    if inp.dtype is not None:
        if inp.dtype not in t.input_dtypes:
            raise EdgebuildError("model.input.dtype", f"is {inp.dtype} but target {t.name} takes "
                                 f"{' or '.join(t.input_dtypes)} input (target.input_dtypes).",
                                 f"use model.input.dtype={t.input_dtypes[0]} (or null for the target's default "
                                 f"{t.input_dtype}), or pick a target that takes {inp.dtype}.")
        t.input_dtype = inp.dtype
