"""TensorRT (Jetson) backend.

- `qdq`          float ONNX -> explicit-quantization QDQ ONNX (placement, streaming calibration, onnxruntime QDQ writer)
- `calib_cache`  TensorRT's text calibration cache (write, parse, retarget the version header)
- `engine_build` what this machine can do (tensorrt importable? GPU?), trtexec argument list, real engine build
- `calibrator`   IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator serving the cache (imports tensorrt: only import
                 it where tensorrt exists)

Nothing here imports tensorrt at module import time except `calibrator`.
"""
