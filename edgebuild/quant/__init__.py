"""Backend-neutral quantization: what TFLite and TensorRT share, parameterized by the target's integer scheme.

  scheme       the integer arithmetic of a target (activations symmetric or not, weights per channel or per tensor)
  calibrators  range estimators (minmax, entropy, percentile), streaming
  qdq          QDQ ONNX writer (TensorRT's artifact, and the simulation other backends are corrected in)
  correction   per-conv bias / weight correction, sequential by depth
  finetune     network-level fine-tuning of the int8 convs against the float model
  simulate     correction for a non-ONNX target: QDQ simulation of its own scales, corrected weights back out
  layer_error  per-tensor SQNR of the int8 model against the float model

A new backend needs a scheme and a writer. Heavy imports stay inside the modules; this file is imported at planning.
"""
from __future__ import annotations

from edgebuild.errors import EdgebuildError


def require_torch(cfg) -> None:
    """Step precheck: correction=finetune needs torch and onnx2torch (the [tensorrt] extra, also in [all])."""
    import importlib.util

    if cfg.calibration.correction != "finetune":
        return
    missing = [m for m in ("torch", "onnx2torch") if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgebuildError("calibration.correction", f"finetune runs the model in torch, but {', '.join(missing)} "
                             "is not installed.", "pip install 'edgebuild[tensorrt]' (or [all]), or use "
                             "calibration.correction=weights.")
