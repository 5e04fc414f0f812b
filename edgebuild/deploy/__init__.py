"""Run a deploy bundle on the board with numpy, a TFLite interpreter and OpenCV — no torch, TensorFlow, Hydra or onnx.

    from edgebuild.deploy import load
    model = load("deploy")                                   # the bundle directory (run dir or extracted .tar.gz)
    result = model.predict("image.jpg")                      # boxes in original pixels, names, scores (+ masks)
    model = load("deploy", delegate="/usr/lib/libvx_delegate.so")   # on the NPU

CLI: `python -m edgebuild.deploy infer BUNDLE IMAGE... [--delegate PATH] [--conf 0.25] [--save out.jpg] [--json]`
and `python -m edgebuild.deploy bench BUNDLE`. Preprocessing, decode, NMS and masks are the same modules validation
uses (edgebuild.data.preprocess, edgebuild.postprocess); every bundle carries a copy of them (docs/deploy.md).
"""
from edgebuild.deploy.model import Model, Result, load

__all__ = ["Model", "Result", "load"]
