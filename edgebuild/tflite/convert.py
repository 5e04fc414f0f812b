"""ONNX -> float SavedModel with onnx2tf used as a library (NHWC input, outputs keyed by their ONNX names).

onnx2tf rewrites its input and downloads a 20-image sample file into the cwd when it is missing; we convert a
private copy inside a private temp dir that already holds our own (seeded, synthetic) sample file.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgebuild.errors import EdgebuildError

SIGNATURE = "serving_default"
_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def sample_images(n: int = 20, size: int = 128, seed: int = 0) -> np.ndarray:
    """Deterministic image-like samples in [0, 1] (smooth gradients + shapes + noise) for onnx2tf's own checks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        base = np.stack([(xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1) + rng.uniform()) % 1 for _ in range(3)], -1)
        cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.05, 0.3)]
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None]
        base = np.where(disk, rng.uniform(0, 1, 3).astype(np.float32), base)
        out[i] = np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1)
    return out


@contextlib.contextmanager
def _workdir():
    old = os.getcwd()
    d = Path(tempfile.mkdtemp(prefix="edgebuild-onnx2tf-"))
    try:
        np.save(d / _SAMPLE, sample_images())
        os.chdir(d)
        yield d
    finally:
        os.chdir(old)
        shutil.rmtree(d, ignore_errors=True)


def _slim(src: Path, dst: Path) -> None:
    """onnx2tf needs constant-folded shapes (YOLO's Split/Reshape chains otherwise convert to empty tensors);
    onnxslim does that (onnx2tf's own onnxsim route is used when onnxslim is missing)."""
    try:
        import onnx
        import onnxslim
    except ImportError:
        shutil.copyfile(src, dst)
        return
    onnx.save(onnxslim.slim(str(src)), str(dst))


def onnx_to_saved_model(onnx_path: Path, out_dir: Path) -> dict:
    """Convert `onnx_path` to a float SavedModel in `out_dir` with one signature whose outputs are keyed by the
    ONNX output names. Returns {"input": name, "input_shape": NHWC list, "outputs": [names]}."""
    import onnx
    import onnx2tf
    import tensorflow as tf
    import tf_keras

    onnx_path, out_dir = Path(onnx_path).resolve(), Path(out_dir).resolve()
    onnx_model = onnx.load(str(onnx_path))
    in_names = [i.name for i in onnx_model.graph.input]
    out_names = [o.name for o in onnx_model.graph.output]
    if len(in_names) != 1:
        raise EdgebuildError(str(onnx_path), f"has {len(in_names)} inputs; edgebuild converts single-input models.",
                             "export the model with one image input.")
    del onnx_model
    with _workdir() as wd:
        private = wd / "model.onnx"
        _slim(onnx_path, private)
        try:  # output_signaturedefs: onnx2tf renames the ONNX exporter's '/model.10/...' names to 'wa/model.10/...';
            # without it a variable it keeps (YOLO11's C2PSA depthwise `pe` conv kernel) has a name TensorFlow
            # refuses as a root scope when the SavedModel is written (Ultralytics' export passes it for the same reason)
            model = onnx2tf.convert(input_onnx_file_path=str(private), output_folder_path=str(wd / "tf"),
                                    disable_model_save=True, non_verbose=True, verbosity="error",
                                    output_signaturedefs=True)
        except Exception as e:  # onnx2tf raises bare exceptions for unsupported graphs
            raise EdgebuildError(str(onnx_path), f"onnx2tf could not convert the model ({type(e).__name__}: {e}).",
                                 "check the export opset (model.opset) and that every op is supported by onnx2tf.") \
                from None
    if len(model.outputs) != len(out_names):
        raise EdgebuildError(str(onnx_path), f"onnx2tf produced {len(model.outputs)} outputs, the ONNX has "
                             f"{len(out_names)}.", "report this model; the output mapping would be ambiguous.")
    spec = model.inputs[0]
    keys = [n.replace(":", "__").lstrip("/") for n in out_names]

    def serve(x):
        y = model([x])
        y = y if isinstance(y, (list, tuple)) else [y]
        return {k: t for k, t in zip(keys, y)}

    archive = tf_keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE, fn=serve,
                         input_signature=[tf.TensorSpec(spec.shape, spec.dtype, in_names[0])])
    archive.write_out(str(out_dir))
    return {"input": in_names[0], "input_shape": [int(d) for d in spec.shape], "outputs": keys,
            "onnx_outputs": out_names}


def check_against_onnx(onnx_path: Path, saved_model: Path, image_nhwc: np.ndarray, info: dict,
                       atol: float = 1e-3) -> dict:
    """Run the ONNX (onnxruntime) and the SavedModel on one image; each signature output must match the ONNX
    output of the same name. Returns {name: max abs error}."""
    import onnxruntime as ort
    import tensorflow as tf

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = dict(zip(info["onnx_outputs"], sess.run(None, {info["input"]: image_nhwc.transpose(0, 3, 1, 2)})))
    fn = tf.saved_model.load(str(saved_model)).signatures[SIGNATURE]
    got = {k: v.numpy() for k, v in fn(tf.constant(image_nhwc)).items()}
    errors = {}
    for onnx_name, key in zip(info["onnx_outputs"], info["outputs"]):
        a, b = ref[onnx_name], got[key]
        if a.shape != b.shape and a.ndim == 4 and b.shape == a.transpose(0, 2, 3, 1).shape:
            a = a.transpose(0, 2, 3, 1)  # e.g. protos: onnx2tf keeps 4D outputs NHWC
        if a.shape != b.shape:
            raise EdgebuildError(str(saved_model), f"output {key!r} has shape {list(b.shape)} after onnx2tf, "
                                 f"ONNX has {list(a.shape)}.", "report this model; onnx2tf changed an output layout.")
        errors[key] = float(np.abs(a - b).max())
        scale = max(1.0, float(np.abs(a).max()))
        if errors[key] > atol * scale:
            raise EdgebuildError(str(saved_model), f"output {key!r} differs from onnxruntime by {errors[key]:.4g} "
                                 "on the check image.", "report this model; onnx2tf mis-converted part of the graph.")
    return errors
