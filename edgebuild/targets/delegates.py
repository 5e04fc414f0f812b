"""What runs the model on each target's board: the delegate library, its options and which bundle file it takes.

Library paths are those of NXP's Yocto BSP images (i.MX Machine Learning User's Guide: `--external_delegate_path`).
The deploy step writes this into the bundle's meta.json ("deploy": {"delegate": ...}) and README.md.
"""
from __future__ import annotations

DELEGATES: dict[str, dict] = {
    "vx": {"board": "i.MX 8M Plus", "library": "/usr/lib/libvx_delegate.so", "options": {}, "model": "model.tflite",
           "note": "VeriSilicon VX delegate: the first inference compiles the graph for the NPU (seconds); later ones "
                   "are fast. Per-tensor INT8 weights (target imx8mp) are what this NPU runs fast."},
    "ethos-u": {"board": "i.MX 93", "library": "/usr/lib/libethosu_delegate.so", "options": {},
                "model": "model_vela.tflite",
                "note": "Arm Ethos-U65 delegate: runs the vela-compiled model_vela.tflite (its ethos-u custom op); "
                        "model.tflite is the same network for the CPU interpreter."},
    "neutron": {"board": "i.MX 95", "library": "/usr/lib/libneutron_delegate.so", "options": {},
                "model": "model_neutron.tflite",
                "note": "eIQ Neutron delegate: runs model_neutron.tflite, the neutron-converter output (present when "
                        "the converter ran during the build; otherwise convert model.tflite with eIQ's "
                        "neutron-converter first). XNNPACK is disabled when a delegate is given, as NXP advises."},
    "tensorrt": {"board": "Jetson", "library": None, "options": {}, "model": "model.engine",
                 "note": "TensorRT: build model.engine on the Jetson with ./build_engine.sh (trtexec), then run it with "
                         "--model model.engine; model_qdq.onnx runs anywhere on onnxruntime."},
}


def delegate_for(name: str) -> dict | None:
    """The delegate entry of target.delegate, or None for the CPU interpreter (xnnpack, reference kernels)."""
    entry = DELEGATES.get(name)
    return {"name": name, **entry} if entry else None
