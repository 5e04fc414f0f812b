"""TFLite backend: ONNX -> float SavedModel (convert) -> full-integer / fp16 / mixed TFLite (quantize, ranges, mixed)
with embedded metadata (metadata). Heavy imports (tensorflow, onnx2tf) happen inside the functions."""
