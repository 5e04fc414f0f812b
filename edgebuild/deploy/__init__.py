"""Run a deploy bundle on the board with numpy, a TFLite interpreter and OpenCV — no torch, TensorFlow, Hydra or onnx.

    from edgebuild.deploy import load
    model = load("deploy")                                   # the bundle directory (run dir or extracted .tar.gz)
    result = model.predict("image.jpg")                      # boxes in original pixels, names, scores (+ masks)
    model = load("deploy", delegate="/usr/lib/libvx_delegate.so")   # on the NPU

CLI: `python -m edgebuild.deploy infer BUNDLE IMAGE... [--delegate PATH] [--conf 0.25] [--save out.jpg] [--json]`
and `python -m edgebuild.deploy bench BUNDLE`. Preprocessing, decode, NMS and masks are the same modules validation
uses (edgebuild.data.preprocess, edgebuild.postprocess); every bundle carries a copy of them (docs/deploy.md).
Importing this package imports nothing (the names below load on first use), so `python -m edgebuild.deploy` can
set numpy's thread environment before numpy loads.
"""
__all__ = ["Model", "Result", "load"]


def __getattr__(name: str):
    if name in __all__:
        from edgebuild.deploy import model

        return getattr(model, name)
    raise AttributeError(f"module 'edgebuild.deploy' has no attribute {name!r}")
